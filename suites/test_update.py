"""A/B /usr updates served by Omaha, on every channel: update, then rollback.

Every channel's image is version N; the server offers N+1 (and N+2) of the same channel. No test step
touches the boot order itself: the updater and the boot loader do. What the agent and the boot loader refuse
and survive (an unbootable update, bad payloads, a power cut mid-install) is in test_update_faults.py.

On Flatcar (`--distro=flatcar`) the same test offers the `--update-payload` given to update_engine, under
Flatcar's app id, on the channels of the run (`--channel`): the images are the ones fetched.
"""

import pytest

from harness.update_fixtures import update_and_reboot

pytestmark = [
    pytest.mark.channels("alpha", "beta", "stable", "lts"),
    pytest.mark.requires("host-services"),  # the guest downloads from the tests' Omaha server
    # Every A/B OS updates, reboots into the other slot and rolls back.
    pytest.mark.distros("railyard", "flatcar"),
]


def test_update_then_rollback(update_machine, omaha):
    """kola: cl.update.payload"""
    m = update_machine
    n = m.os.version()
    assert m.os.booted_slot() == "USR-A"

    update_and_reboot(m, omaha)

    assert m.os.booted_slot() == "USR-B"
    assert m.os.slot_state("USR-B") == "good", m.os.boot_order()  # blessed after a complete boot
    assert m.os.next_slot() == "USR-B", m.os.boot_order()

    m.os.rollback()
    m.reboot()

    assert m.os.booted_slot() == "USR-A"
    assert m.os.version() == n
