"""Per-distro helpers on a running machine, so one suite runs on Flatcar and on the default image.

The update calls are the same on every distro: `version()`, `booted_slot()`, `update(timeout=)` (check
now, wait until the update is applied and a reboot is needed), `start_update()` (check now, do not wait),
`update_status()`, `rollback()` (boot the other slot from the next boot on) and `mark_good()`.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from harness.errors import UpdateError

if TYPE_CHECKING:
    from harness.machine import GuestMachine

log = logging.getLogger(__name__)

SLOTS = ("USR-A", "USR-B")

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
# Scheduled checks this far apart never happen during a test: the test asks for each check.
TEST_CHECK_INTERVAL = 86400.0
RAILYARD_UPDATE_CONF = "/etc/railyard/update.conf"
FLATCAR_UPDATE_CONF = "/etc/flatcar/update.conf"
# Flatcar's update_engine has no "disabled": point it at a closed loopback port, so checks fail at once.
FLATCAR_NO_SERVER = "http://127.0.0.1:9/v1/update/"


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


def update_config(server: str, group: str, interval: float | None = None) -> str:
    """The default image's /etc/railyard/update.conf: where to check, which channel, how often."""
    lines = [f"SERVER={server}", f"GROUP={group}"]
    if interval is not None:
        lines.append(f"INTERVAL={int(interval)}")
    return "\n".join(lines) + "\n"


def flatcar_update_config(server: str, group: str) -> str:
    """Flatcar's /etc/flatcar/update.conf; REBOOT_STRATEGY=off so the test, not locksmithd, reboots."""
    return f"GROUP={group}\nSERVER={server}\nREBOOT_STRATEGY=off\n"


def describe_failure(status: Mapping[str, str]) -> str:
    """What went wrong in an update cycle, from a status (the agent's LAST_ERROR when it gives one)."""
    error = status.get("LAST_ERROR", "").strip()
    code = status.get("LAST_ERROR_CODE", "").strip()
    op = status.get("CURRENT_OP", "unknown")
    if error:
        return f"{error} (error code {code or '?'}; status {op})"
    return f"the update agent ended in {op} without an error message"


def update_ignition(distro: str, server: str, group: str, ignition_version: str = "3.3.0") -> dict[str, Any]:
    """Ignition that points a machine's updater at `server` for `group` (its channel)."""
    if distro == "flatcar":
        path, text = FLATCAR_UPDATE_CONF, flatcar_update_config(server, group)
    else:
        path, text = RAILYARD_UPDATE_CONF, update_config(server, group, TEST_CHECK_INTERVAL)
    return _file_ignition(path, text, ignition_version)


def updates_off_ignition(distro: str, ignition_version: str = "3.3.0") -> dict[str, Any]:
    """Ignition that keeps a machine from checking for updates (the harness's default)."""
    if distro == "flatcar":
        path, text = FLATCAR_UPDATE_CONF, f"SERVER={FLATCAR_NO_SERVER}\nREBOOT_STRATEGY=off\n"
    else:
        path, text = RAILYARD_UPDATE_CONF, "SERVER=disabled\n"
    return _file_ignition(path, text, ignition_version)


def _file_ignition(path: str, text: str, ignition_version: str) -> dict[str, Any]:
    return {
        "ignition": {"version": ignition_version},
        "storage": {
            "files": [
                {
                    "path": path,
                    "mode": 0o644,
                    "overwrite": True,
                    "contents": {"source": "data:," + quote(text)},
                }
            ]
        },
    }


class OSHelpers:
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

    def _unsupported(self, what: str) -> UpdateError:
        return UpdateError(f"{self.m.distro.name} has no A/B update support in Railyard: cannot {what}")

    def update_status(self) -> dict[str, str]:
        raise self._unsupported("read the update status")

    def start_update(self) -> None:
        raise self._unsupported("check for an update")

    def update(self, timeout: float | None = None) -> dict[str, str]:
        raise self._unsupported("update")

    def rollback(self) -> None:
        raise self._unsupported("roll back")

    def mark_good(self) -> None:
        raise self._unsupported("mark the booted slot good")

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


class RailyardOS(OSHelpers):
    """The default image: slot mechanics live in `railyard-slot`, updates in `railyard-update`."""

    def booted_slot(self) -> str:
        return self.m.succeed("railyard-slot booted").strip()

    def slot_status(self) -> dict[str, str]:
        """`railyard-slot status`: booted/next/default slot, each slot's version, entry and state."""
        return parse_key_values(self.m.succeed("sudo railyard-slot status"))

    def update_status(self) -> dict[str, str]:
        """The agent's status (CURRENT_OP, NEW_VERSION, PROGRESS, LAST_ERROR, ...)."""
        return parse_key_values(self.m.succeed("railyard-update status"))

    def _guest_time(self) -> float | None:
        """The guest's clock (the agent's status carries its times), or None if it cannot be read."""
        try:
            return float(self.m.execute("date +%s.%N").stdout.strip())
        except ValueError:
            return None

    def _wait_for_agent(self) -> None:
        self.m.wait_until_succeeds(
            "systemctl is-active --quiet railyard-update-agent.service && test -s /run/railyard/update-agent.pid",
            timeout=self.m.timeouts.settle,
        )

    def start_update(self) -> None:
        """Ask the agent to check for an update now; returns at once (poll `update_status()`)."""
        self._wait_for_agent()
        self.m.succeed("sudo railyard-update check-now")

    def update(self, timeout: float | None = None) -> dict[str, str]:
        """Check now and wait until the update is applied (UPDATED_NEED_REBOOT); returns the status.

        Raises UpdateError with the agent's LAST_ERROR when the cycle ends any other way.
        """
        timeout = timeout if timeout is not None else self._default_update_timeout()
        self._wait_for_agent()
        started = self._guest_time()
        result = self.m.execute(
            f"sudo railyard-update check-now --wait --timeout {int(timeout)}", timeout=timeout + 60.0
        )
        status = parse_key_values(result.stdout) or self.update_status()
        if status.get("CURRENT_OP") == STATUS_NEED_REBOOT:
            return status
        if result.status == 0 or status.get("LAST_ERROR"):
            raise UpdateError(f"{self.m.name}: the update failed: {describe_failure(status)}")
        # check-now gave up without a finished cycle: keep watching the status until the timeout.
        log.info("%s: %s", self.m.name, result.stderr.strip())
        return self._await_applied(timeout, started)

    def rollback(self) -> None:
        """Boot the other slot from the next boot on (the agent then leaves the version it left alone)."""
        self.m.succeed("sudo railyard-update rollback")

    def mark_good(self) -> None:
        """Make the booted slot the default (it is no longer on trial)."""
        self.m.succeed("sudo railyard-slot mark-good")


class FlatcarOS(OSHelpers):
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

    def rollback(self) -> None:
        """Give the other USR partition the highest GPT priority (Flatcar's manual rollback)."""
        self.m.succeed(f"sudo cgpt prioritize {shlex.quote(self._other_usr())}")

    def mark_good(self) -> None:
        """Mark the booted USR partition successful (update_engine does this ~2 min after a boot)."""
        booted = self.m.succeed("rootdev -s /usr").strip()
        self.m.succeed(f"sudo cgpt add -S1 -T0 {shlex.quote(booted)}")


def os_helpers(machine: GuestMachine) -> OSHelpers:
    if machine.distro.name == "railyard":
        return RailyardOS(machine)
    if machine.distro.name == "flatcar":
        return FlatcarOS(machine)
    return OSHelpers(machine)
