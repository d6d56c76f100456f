"""A/B /usr updates served by Omaha, on every channel: update, rollback, automatic fallback.

Every channel's image is version N; the server offers N+1 (and N+2) of the same channel. No test step
touches the boot order itself: the updater and the boot loader do. What the agent refuses and survives
(bad payloads, a power cut mid-install) is in test_update_faults.py.
"""

import pytest

from harness.omaha_protocol import (
    ERROR_ROLLBACK,
    EVENT_UPDATE_COMPLETE,
    RESULT_ERROR,
)
from harness.update_fixtures import REPORT_TIMEOUT, update_and_reboot

pytestmark = [
    pytest.mark.channels("alpha", "beta", "stable", "lts"),
    pytest.mark.requires("host-services"),  # the guest downloads from the tests' Omaha server
    pytest.mark.distros("railyard"),  # the payloads published are the default image's own /usr
]


def test_update_then_rollback(update_machine, omaha):
    m = update_machine
    n = m.os.version()
    assert m.os.booted_slot() == "USR-A"

    update_and_reboot(m, omaha)

    assert m.os.booted_slot() == "USR-B"
    status = m.os.slot_status()
    assert status["slot_b_state"] == "good", status  # blessed after a complete boot, the default now
    assert status["default"] == "USR-B", status

    m.os.rollback()
    m.reboot()

    assert m.os.booted_slot() == "USR-A"
    assert m.os.version() == n


@pytest.mark.flags("no_console_check")  # the failed trial boot prints its failure on purpose
def test_unbootable_update_falls_back_by_itself(update_machine, omaha):
    m = update_machine
    n = m.os.version()
    published = omaha.publish_unbootable(m.channel)
    m.os.update()
    start = len(omaha.events)

    # The trial boot of USR-B fails and the machine restarts by itself; the boot counter is spent, so the
    # next boot takes USR-A. The first boot id seen again is the fallback's.
    m.reboot(timeout=m.timeouts.reboot * 3)

    assert m.os.booted_slot() == "USR-A"
    assert m.os.version() == n
    rollback = omaha.wait_for_machine_event(
        m, EVENT_UPDATE_COMPLETE, RESULT_ERROR, timeout=REPORT_TIMEOUT, after=start
    )
    assert rollback.error_code == ERROR_ROLLBACK
    assert rollback.previous_version == published.version
    status = m.os.slot_status()
    assert status["last_trial"] == "failed", status
    assert status["slot_b_state"] == "bad", status
