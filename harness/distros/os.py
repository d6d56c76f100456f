"""Per-distro helpers on a running machine, so one suite runs on Flatcar and on the default image."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.machine import GuestMachine

SLOTS = ("USR-A", "USR-B")


class OSHelpers:
    """What every distro answers the same way. Subclasses say how."""

    def __init__(self, machine: GuestMachine) -> None:
        self.m = machine

    def os_release(self) -> dict[str, str]:
        text = self.m.succeed("cat /etc/os-release")
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = " ".join(shlex.split(value)) if value else ""
        return fields

    def version(self) -> str:
        return self.os_release().get("VERSION_ID", "")

    def booted_slot(self) -> str:
        """`USR-A` or `USR-B`: the partition /usr was mounted from."""
        device = self.m.succeed("findmnt -n -o SOURCE /usr").strip()
        return self._slot_of(device)

    def _slot_of(self, device: str) -> str:
        for slot in SLOTS:
            target = self.m.execute(f"readlink -f /dev/disk/by-partlabel/{slot}").stdout.strip()
            if target and target == self.m.succeed(f"readlink -f {shlex.quote(device)}").strip():
                return slot
        raise AssertionError(
            f"/usr on {self.m.name} is mounted from {device}, which is neither USR-A nor USR-B"
        )


class RailyardOS(OSHelpers):
    """The default image: slot mechanics live in the guest's `railyard-slot` tool."""

    def booted_slot(self) -> str:
        return self.m.succeed("railyard-slot booted").strip()

    def slot_status(self) -> dict[str, str]:
        out = self.m.succeed("sudo railyard-slot status")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class FlatcarOS(OSHelpers):
    """Flatcar Container Linux: `rootdev -s /usr` names the USR partition that is booted."""

    def booted_slot(self) -> str:
        device = self.m.succeed("rootdev -s /usr").strip()
        return self._slot_of(device)


def os_helpers(machine: GuestMachine) -> OSHelpers:
    if machine.distro.name == "railyard":
        return RailyardOS(machine)
    if machine.distro.name == "flatcar":
        return FlatcarOS(machine)
    return OSHelpers(machine)
