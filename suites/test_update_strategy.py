"""The update agent's reboot strategy decides when an installed update reboots the machine: never by itself
(`off`), at once (`reboot`), or inside a maintenance window (Flatcar's REBOOT_STRATEGY and locksmith's
reboot window). The behaviour does not differ between channels: one channel runs it."""

import shlex
from datetime import UTC, datetime, timedelta

import pytest

from harness.omaha_protocol import EVENT_UPDATE_COMPLETE, RESULT_SUCCESS_REBOOT

pytestmark = [
    pytest.mark.channels("stable"),
    pytest.mark.requires("host-services"),  # the guest downloads from the tests' Omaha server
    pytest.mark.distros("railyard"),  # the agent and its update.conf are the default image's
]

CONF = "/etc/railyard/update.conf"
REPORT_TIMEOUT = 300.0


def set_strategy(m, **values):
    """Append keys to update.conf (the last of a key wins) and make the agent read it again."""
    lines = "".join(f"{key}={value}\n" for key, value in values.items())
    m.succeed(f"printf %s {shlex.quote(lines)} | sudo tee -a {CONF} >/dev/null")
    m.os.reload_update_config()


def guest_now(m):
    return datetime.fromtimestamp(float(m.succeed("date +%s.%N")), UTC)


def test_off_waits_for_the_admin_and_a_window_reboots_only_once_open(update_machine, omaha):
    """Reboot strategy off, then a maintenance window not yet open, then one that is (kola: none)."""
    m = update_machine
    slot, boot = m.os.booted_slot(), m.boot_id()
    published = omaha.publish_next(m.channel)
    status = m.os.update()  # the harness's update.conf says REBOOT_STRATEGY=off
    assert status["REBOOT_STRATEGY"] == "off"
    assert status["NEXT_REBOOT"] == ""
    m.wait_until_succeeds(
        "sudo journalctl -b -u railyard-update-agent.service | grep -q 'reboot strategy off: not rebooting by itself'"
    )

    # A window that opens in three hours: the agent says when it will reboot, and does not reboot now.
    opens = (guest_now(m) + timedelta(hours=3)).replace(second=0, microsecond=0)
    set_strategy(
        m, REBOOT_STRATEGY="reboot", REBOOT_WINDOW_START=f"{opens:%a %H:%M}", REBOOT_WINDOW_LENGTH="1h"
    )
    m.wait_until_succeeds(
        f"railyard-update status | grep -qx 'NEXT_REBOOT={int(opens.timestamp())}'", timeout=120.0
    )
    assert m.boot_id() == boot
    assert m.os.update_status()["CURRENT_OP"] == "UPDATE_STATUS_UPDATED_NEED_REBOOT"

    # A window that opened ten minutes ago and is open for an hour: the agent reboots into the update.
    opened = guest_now(m) - timedelta(minutes=10)
    set_strategy(m, REBOOT_WINDOW_START=f"{opened:%a %H:%M}", REBOOT_WINDOW_LENGTH="1h")
    m.wait_for_reboot()

    assert m.os.booted_slot() != slot
    assert m.os.version() == published.version


def test_reboot_strategy_reboots_as_soon_as_the_update_is_installed(update_machine, omaha):
    """Reboot strategy reboot, the image's default: install, then restart into the update at once."""
    m = update_machine
    slot, previous = m.os.booted_slot(), m.os.version()
    published = omaha.publish_next(m.channel)
    start = len(omaha.events)
    set_strategy(m, REBOOT_STRATEGY="reboot")
    m.os.start_update()
    # Nothing but the agent reboots the machine: the download, the install and the reboot are all its own.
    m.wait_for_reboot(timeout=m.timeouts.command * 6 + m.timeouts.reboot)

    assert m.os.booted_slot() != slot
    assert m.os.version() == published.version
    # No report_boot() here: the agent reports the new boot by itself, retrying until the server answers.
    done = omaha.wait_for_machine_event(
        m, EVENT_UPDATE_COMPLETE, RESULT_SUCCESS_REBOOT, timeout=REPORT_TIMEOUT, after=start
    )
    assert done.previous_version == previous
    journal = m.succeed("sudo journalctl -b -1 -u railyard-update-agent.service")
    assert "rebooting into the installed update (reboot strategy reboot)" in journal
