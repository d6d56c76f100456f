"""What a suite asks of a running machine's OS, the same call on every distro (`machine.os`).

The update calls are the same on every distro: `version()`, `booted_slot()`, `update(timeout=)` (check
now, wait until the update is applied and a reboot is needed), `start_update()` (check now, do not wait),
`update_status()`, `rollback()` (boot the other slot from the next boot on), `mark_good()`,
`report_boot()` (make the updater report how the boot went), and the boot order: `slot_state(slot)`
(good, trial, bad or none), `next_slot()` and `boot_order()` (a snapshot to compare).
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from harness.errors import UpdateError

if TYPE_CHECKING:
    from harness.machine import GuestMachine

log = logging.getLogger(__name__)

SLOTS = ("USR-A", "USR-B")
SLOT_STATES = ("good", "trial", "bad", "none")
"""A slot's state: booted to the end (good), to be tried (trial), failed its trial (bad), never installed."""

STATUS_IDLE = "UPDATE_STATUS_IDLE"
STATUS_NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
STATUS_DISABLED = "UPDATE_STATUS_DISABLED"
STATUS_REPORTING_ERROR = "UPDATE_STATUS_REPORTING_ERROR_EVENT"
# States of a cycle that is under way (update_engine's names, which the default image's agent shares).
BUSY_STATES = frozenset(
    {
        "UPDATE_STATUS_CHECKING_FOR_UPDATE",
        "UPDATE_STATUS_UPDATE_AVAILABLE",
        "UPDATE_STATUS_DOWNLOADING",
        "UPDATE_STATUS_VERIFYING",
        "UPDATE_STATUS_FINALIZING",
        STATUS_REPORTING_ERROR,
    }
)
POLL_INTERVAL = 2.0


def parse_key_values(text: str) -> dict[str, str]:
    """`KEY=value` lines (shell quoting removed); other lines are skipped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or " " in key or key.startswith("#"):
            continue
        try:
            fields[key] = " ".join(shlex.split(value)) if value.strip() else ""
        except ValueError:
            fields[key] = value.strip()
    return fields


def describe_failure(status: Mapping[str, str]) -> str:
    """What went wrong in an update cycle, from a status (the agent's LAST_ERROR when it gives one)."""
    error = status.get("LAST_ERROR", "").strip()
    code = status.get("LAST_ERROR_CODE", "").strip()
    op = status.get("CURRENT_OP", "unknown")
    if error:
        return f"{error} (error code {code or '?'}; status {op})"
    return f"the update agent ended in {op} without an error message"


class GuestOS:
    """What every distro answers the same way. Subclasses say how."""

    def __init__(self, machine: GuestMachine) -> None:
        self.m = machine

    def os_release(self) -> dict[str, str]:
        return parse_key_values(self.m.succeed("cat /etc/os-release"))

    def version(self) -> str:
        """VERSION_ID of the running OS (of the booted /usr)."""
        return self.os_release().get("VERSION_ID", "")

    def booted_slot(self) -> str:
        """`USR-A` or `USR-B`: the partition /usr was mounted from."""
        device = self.m.succeed("findmnt -n -o SOURCE /usr").strip()
        return self._slot_of(device)

    def _slot_of(self, device: str) -> str:
        resolved = self.m.succeed(f"readlink -f {shlex.quote(device)}").strip()
        for slot in SLOTS:
            target = self.m.execute(f"readlink -f /dev/disk/by-partlabel/{slot}").stdout.strip()
            if target and target == resolved:
                return slot
        raise AssertionError(
            f"/usr on {self.m.name} is mounted from {device}, which is neither USR-A nor USR-B"
        )

    # -- updates (distros with A/B updates override these) ------------------------------------------

    def slot_status(self) -> dict[str, str]:
        raise self._unsupported("read the slot status")

    def _unsupported(self, what: str) -> UpdateError:
        return UpdateError(f"{self.m.distro.name} has no A/B update support in Railyard: cannot {what}")

    def update_status(self) -> dict[str, str]:
        raise self._unsupported("read the update status")

    def start_update(self) -> None:
        raise self._unsupported("check for an update")

    def reload_update_config(self) -> None:
        """Make the updater read its configuration file again (after the harness rewrote it)."""
        raise self._unsupported("reload the updater's configuration")

    def update(self, timeout: float | None = None) -> dict[str, str]:
        raise self._unsupported("update")

    def rollback(self) -> None:
        raise self._unsupported("roll back")

    def mark_good(self) -> None:
        raise self._unsupported("mark the booted slot good")

    def report_boot(self) -> None:
        """Make the updater report how the last boot went (its first check after a boot: the new version,
        or a rollback). Here nothing: an updater that reports by itself after every boot needs at most a nudge
        to try again now (its first tries after a boot can find nobody: the harness's server is reached through
        the SSH session a reboot ends), which a distro adds where its updater takes one."""

    def slot_state(self, slot: str) -> str:
        """One of SLOT_STATES for `slot` (USR-A or USR-B)."""
        raise self._unsupported("read the slots' states")

    def next_slot(self) -> str:
        """The slot the next boot takes."""
        raise self._unsupported("read the boot order")

    def boot_order(self) -> dict[str, str]:
        """What decides the next boots, as text to compare before and after something that must not
        change it."""
        raise self._unsupported("read the boot order")

    def _default_update_timeout(self) -> float:
        # Download, hash, signature check and a /usr write: several times a plain command under TCG.
        return self.m.timeouts.command * 6

    def _await_applied(self, timeout: float, started: float | None = None) -> dict[str, str]:
        """Poll `update_status()` until the update is applied; UpdateError once the cycle ends otherwise.

        `started`: the guest's clock when the check was asked for (cycles that ended before it are old).
        """
        deadline = time.monotonic() + timeout
        seen_busy = False
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            status = self.update_status()
            op = status.get("CURRENT_OP", "")
            if op == STATUS_NEED_REBOOT:
                return status
            if op in BUSY_STATES:
                seen_busy = True
            elif op in (STATUS_IDLE, STATUS_DISABLED) and (
                seen_busy or self._cycle_ended_since(status, started)
            ):
                raise UpdateError(f"{self.m.name}: the update failed: {describe_failure(status)}")
            time.sleep(POLL_INTERVAL)
        raise UpdateError(
            f"{self.m.name}: no update applied within {timeout:.0f} s; last status: {status or 'none'}"
        )

    @staticmethod
    def _cycle_ended_since(status: Mapping[str, str], started: float | None) -> bool:
        if started is None:
            return False
        try:
            return float(status.get("LAST_CYCLE_END") or 0) >= started
        except ValueError:
            return False
