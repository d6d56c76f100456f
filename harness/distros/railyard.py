"""The default image: slot mechanics in `railyard-slot`, updates by its Omaha agent (`railyard-update`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.distros.base import Distro
from harness.distros.guest import STATUS_NEED_REBOOT, GuestOS, describe_failure, parse_key_values
from harness.errors import UpdateError

if TYPE_CHECKING:
    from harness.machine import GuestMachine

log = logging.getLogger(__name__)

RAILYARD_UPDATE_CONF = "/etc/railyard/update.conf"
# Scheduled checks this far apart never happen during a test: the test asks for each check.
TEST_CHECK_INTERVAL = 86400.0


def update_config(server: str, group: str, interval: float | None = None) -> str:
    """The default image's /etc/railyard/update.conf: where to check, which channel, how often. The agent
    never reboots by itself (REBOOT_STRATEGY=off): a test reboots when it means to."""
    lines = [f"SERVER={server}", f"GROUP={group}", "REBOOT_STRATEGY=off"]
    if interval is not None:
        lines.append(f"INTERVAL={int(interval)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RailyardDistro(Distro):
    def update_config(self, server: str, group: str) -> str:
        return update_config(server, group, TEST_CHECK_INTERVAL)

    def updates_off_config(self) -> str:
        return "SERVER=disabled\n"

    def guest(self, machine: GuestMachine) -> GuestOS:
        return RailyardOS(machine)


RAILYARD = RailyardDistro(
    name="railyard",
    ignition_fw_cfg="opt/com.coreos/config",
    butane_variant="fcos",
    update_conf=RAILYARD_UPDATE_CONF,
    container_cli="podman",
)


class RailyardOS(GuestOS):
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

    def reload_update_config(self) -> None:
        """Make the agent read update.conf again (SIGHUP), once it is ready for signals: a SIGHUP that
        arrives before the agent blocks it ends the agent."""
        self._wait_for_agent()
        self.m.succeed("sudo systemctl kill --kill-who=main -s HUP railyard-update-agent.service")

    def report_boot(self) -> None:
        """Settle the last boot now. The agent reports it by itself after every boot, but the server is the
        harness's, reached through the SSH session a reboot ends: its first tries find nobody and it waits
        5, then 10, then 20 s before the next. A SIGHUP makes it try again at once."""
        self.reload_update_config()

    def rollback(self) -> None:
        """Boot the other slot from the next boot on (the agent then leaves the version it left alone)."""
        self.m.succeed("sudo railyard-update rollback")

    def mark_good(self) -> None:
        """Make the booted slot the default (it is no longer on trial)."""
        self.m.succeed("sudo railyard-slot mark-good")

    def slot_state(self, slot: str) -> str:
        """`railyard-slot status`'s `slot_a_state`/`slot_b_state`."""
        return self.slot_status()[f"slot_{slot[-1].lower()}_state"]

    def next_slot(self) -> str:
        return self.slot_status()["next"]

    def boot_order(self) -> dict[str, str]:
        return self.slot_status()
