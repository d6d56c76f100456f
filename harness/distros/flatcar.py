"""Flatcar Container Linux: update_engine, `rootdev -s /usr` and cgpt's GPT priority attributes."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.distros.base import Distro
from harness.distros.guest import SLOTS, GuestOS, parse_key_values
from harness.errors import UpdateError

if TYPE_CHECKING:
    from harness.machine import GuestMachine

FLATCAR_UPDATE_CONF = "/etc/flatcar/update.conf"
# Flatcar's update_engine has no "disabled": point it at a closed loopback port, so checks fail at once.
FLATCAR_NO_SERVER = "http://127.0.0.1:9/v1/update/"


def flatcar_update_config(server: str, group: str) -> str:
    """Flatcar's /etc/flatcar/update.conf; REBOOT_STRATEGY=off so the test, not locksmithd, reboots."""
    return f"GROUP={group}\nSERVER={server}\nREBOOT_STRATEGY=off\n"


@dataclass(frozen=True)
class FlatcarDistro(Distro):
    def update_config(self, server: str, group: str) -> str:
        return flatcar_update_config(server, group)

    def updates_off_config(self) -> str:
        return f"SERVER={FLATCAR_NO_SERVER}\nREBOOT_STRATEGY=off\n"

    def guest(self, machine: GuestMachine) -> GuestOS:
        return FlatcarOS(machine)


FLATCAR = FlatcarDistro(
    name="flatcar",
    ignition_fw_cfg="opt/org.flatcar-linux/config",
    butane_variant="flatcar",
    update_conf=FLATCAR_UPDATE_CONF,
    given_payloads=True,
    container_cli="docker",
)


class FlatcarOS(GuestOS):
    """Flatcar Container Linux: update_engine, `rootdev -s /usr` and cgpt's GPT priority attributes."""

    USR_TYPE = "flatcar-usr"

    def booted_slot(self) -> str:
        device = self.m.succeed("rootdev -s /usr").strip()
        return self._slot_of(device)

    def update_status(self) -> dict[str, str]:
        return parse_key_values(self.m.succeed("update_engine_client -status 2>/dev/null"))

    def start_update(self) -> None:
        self.m.succeed("sudo update_engine_client -check_for_update")

    def update(self, timeout: float | None = None) -> dict[str, str]:
        """Check now and poll `update_engine_client -status` until UPDATED_NEED_REBOOT."""
        timeout = timeout if timeout is not None else self._default_update_timeout()
        started = time.monotonic()
        self.start_update()
        try:
            return self._await_applied(timeout)
        except UpdateError as exc:
            waited = int(time.monotonic() - started) + 30
            journal = self.m.execute(
                f"journalctl --no-pager -u update-engine --since=-{waited}s | tail -n 25"
            ).stdout
            raise UpdateError(f"{exc}\n--- update-engine journal ---\n{journal.rstrip()}") from exc

    def _other_usr(self) -> str:
        booted = self.m.succeed("rootdev -s /usr").strip()
        for candidate in self.m.succeed(f"cgpt find -t {self.USR_TYPE}").split():
            if candidate != booted:
                return candidate
        raise UpdateError(f"{self.m.name}: no second {self.USR_TYPE} partition besides {booted}")

    def reload_update_config(self) -> None:
        self.m.succeed("sudo systemctl restart update-engine.service")

    def rollback(self) -> None:
        """Give the other USR partition the highest GPT priority (Flatcar's manual rollback)."""
        self.m.succeed(f"sudo cgpt prioritize {shlex.quote(self._other_usr())}")

    def mark_good(self) -> None:
        """Mark the booted USR partition successful, as `flatcar-setgoodroot` does (update_engine runs that
        before its first check after a boot)."""
        booted = self.m.succeed("rootdev -s /usr").strip()
        self.m.succeed(f"sudo cgpt add -S1 -T0 {shlex.quote(booted)}")

    def report_boot(self) -> None:
        """Check now: update_engine marks the booted partition good, then its first check after a boot says
        how the boot went (the new version with its previous one, or a rollback)."""
        self.start_update()

    def gpt_attributes(self, slot: str) -> GptAttributes:
        """The GPT priority, tries and successful flag of a USR partition (`cgpt show -i N -P/-T/-S`)."""
        label = shlex.quote(f"/dev/disk/by-partlabel/{slot}")
        script = (
            f"part=$(readlink -f {label}) && n=$(cat /sys/class/block/${{part##*/}}/partition) && "
            'disk=/dev/$(lsblk -ndo PKNAME "$part") && '
            'echo "$(sudo cgpt show -i "$n" -P "$disk") $(sudo cgpt show -i "$n" -T "$disk") '
            '$(sudo cgpt show -i "$n" -S "$disk")"'
        )
        fields = self.m.succeed(script).split()
        try:
            priority, tries, successful = (int(f) for f in fields)
        except ValueError:
            raise UpdateError(
                f"{self.m.name}: cgpt gave no priority, tries and successful for {slot}: {fields}"
            ) from None
        return GptAttributes(priority, tries, successful)

    def slot_state(self, slot: str) -> str:
        """good: booted successfully; trial: tries left; none: priority 0 (never made bootable); bad: the
        rest (its tries spent without a successful boot)."""
        return self.gpt_attributes(slot).state

    def next_slot(self) -> str:
        """The bootable slot of the highest priority, as Flatcar's GRUB chooses (successful or tries left)."""
        ranked = []
        for slot in SLOTS:
            attrs = self.gpt_attributes(slot)
            if attrs.priority > 0 and (attrs.successful or attrs.tries > 0):
                ranked.append((attrs.priority, slot))
        if not ranked:
            raise UpdateError(f"{self.m.name}: neither USR partition is bootable")
        return max(ranked, key=lambda item: (item[0], item[1] == "USR-A"))[1]

    def boot_order(self) -> dict[str, str]:
        return {slot: str(self.gpt_attributes(slot)) for slot in SLOTS}


@dataclass(frozen=True)
class GptAttributes:
    """The ChromeOS-style GPT attributes of a USR partition, which Flatcar's GRUB boots by."""

    priority: int
    tries: int
    successful: int

    @property
    def state(self) -> str:
        if self.successful:
            return "good"
        if self.priority == 0:
            return "none"
        return "trial" if self.tries > 0 else "bad"

    def __str__(self) -> str:
        return f"priority={self.priority} tries={self.tries} successful={self.successful}"
