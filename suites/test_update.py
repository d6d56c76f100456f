"""A/B /usr updates served by Omaha, on every channel: update, then rollback.

Every channel's image is version N; the server offers N+1 (and N+2) of the same channel. No test step
touches the boot order itself: the updater and the boot loader do. What the agent and the boot loader refuse
and survive (an unbootable update, bad payloads, a power cut mid-install) is in test_update_faults.py.
"""

import pytest

from harness.update_fixtures import update_and_reboot

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
