"""What the update agent and the boot loader refuse and survive: an update that does not boot (the machine
falls back by itself), payloads that must not be installed, and a power cut while the agent writes the other
slot. Neither depends on the channel (every channel's agent and boot loader are the same
program), so these run on the run's channels (`--channel`), by default the image's own: once, where
test_update.py runs update and rollback on every channel.

Refused payloads run on Flatcar too (the `--update-payload` offered with a wrong SHA-256 or size). The power
cut and the unbootable update need what only the default image's payloads can be: written by an installer
that can be watched, and signed by the harness.
"""

import pytest

from harness.errors import UpdateError
from harness.omaha_protocol import ERROR_ROLLBACK, EVENT_UPDATE_COMPLETE, RESULT_ERROR, RESULT_SUCCESS
from harness.update_fixtures import REPORT_TIMEOUT, events_of, update_and_reboot

pytestmark = [
    pytest.mark.requires("host-services"),  # the guest downloads from the tests' Omaha server
]
DEFAULT_IMAGE_ONLY = "the payloads are the default image's own /usr, built and signed by the harness"


@pytest.mark.distros("railyard", reason=f"{DEFAULT_IMAGE_ONLY}; the cut waits for its installer's writer")
def test_power_cut_during_install_then_two_updates(update_machine, omaha):
    m = update_machine
    n = m.os.version()
    omaha.publish_next(m.channel)
    m.os.start_update()
    # Cut the power while railyard-slot writes the payload to USR-B: its zstd decompresses the downloaded
    # file straight into the slot (the agent's own hashing has no zstd running).
    m.succeed(
        "timeout 900 sh -c 'until pgrep -x zstd >/dev/null; do sleep 0.1; done'",
        timeout=960.0,
    )
    m.hard_reset(timeout=m.timeouts.reboot * 3)  # firmware takes longer after a reset than after a reboot

    assert m.os.booted_slot() == "USR-A"
    assert m.os.version() == n
    status = m.os.slot_status()
    assert status["next"] == "USR-A", status
    assert status["slot_b_state"] == "none", status  # no boot entry for a half-written slot

    # The update runs again from the start and succeeds: A -> B with N+1, then B -> A with N+2.
    update_and_reboot(m, omaha, steps=1)
    assert m.os.booted_slot() == "USR-B"
    update_and_reboot(m, omaha, steps=2)
    assert m.os.booted_slot() == "USR-A"
    assert m.os.slot_status()["slot_a_state"] == "good"


@pytest.mark.distros("railyard", "flatcar")
def test_bad_payloads_are_refused(update_machine, omaha):
    # One boot for all of them: a refusal writes nothing, so each one starts where the last one left off.
    m = update_machine
    n = m.os.version()
    order_before = m.os.boot_order()
    for kind in omaha.bad_payload_kinds:
        start = len(omaha.events)
        omaha.publish_bad(m.channel, kind)
        code = omaha.refusal_code(kind)

        with pytest.raises(UpdateError):
            m.os.update()

        status = m.os.update_status()
        if "LAST_ERROR_CODE" in status:  # the default image's agent says it; update_engine's status does not
            assert status["LAST_ERROR_CODE"] == str(code), (kind, status)
        refused = omaha.wait_for_machine_event(
            m, EVENT_UPDATE_COMPLETE, RESULT_ERROR, timeout=60, after=start
        )
        assert (refused.error_code or 0) & 0xFFFF == code, (kind, refused)
        assert (EVENT_UPDATE_COMPLETE, RESULT_SUCCESS, None) not in events_of(omaha, m, start), kind
        assert m.os.boot_order() == order_before, kind  # nothing written to the boot order

    m.reboot()
    assert m.os.booted_slot() == "USR-A"
    assert m.os.version() == n
    assert m.os.slot_state("USR-B") == "none"


@pytest.mark.distros("railyard", reason=f"{DEFAULT_IMAGE_ONLY}: one that installs and cannot boot")
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
    m.os.report_boot()
    rollback = omaha.wait_for_machine_event(
        m, EVENT_UPDATE_COMPLETE, RESULT_ERROR, timeout=REPORT_TIMEOUT, after=start
    )
    assert rollback.error_code == ERROR_ROLLBACK
    assert rollback.previous_version == published.version
    status = m.os.slot_status()
    assert status["last_trial"] == "failed", status
    assert status["slot_b_state"] == "bad", status
