"""The project's own suites, run through the plugin as a user runs them: real TCG boots, every channel."""

from __future__ import annotations

from tests.integration.helpers import (
    SUITES,
    collected,
    failure_report,
    leftover_disks,
    qemu_processes_under,
    run_inner,
)

# The whole of suites/ under TCG with two workers, the update suite's four channels included.
SUITES_TIMEOUT = 75 * 60.0


def test_every_suite_passes_on_qemu_with_two_workers(pytester):
    expected = collected(pytester, "--platform=qemu", str(SUITES))
    assert expected >= 60  # every area for one channel, and the update suite for all four channels

    result = run_inner(pytester, "--platform=qemu", "-n", "2", str(SUITES), timeout=SUITES_TIMEOUT)

    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, failure_report(result)
    assert outcomes.get("errors", 0) == 0, failure_report(result)
    assert outcomes.get("passed", 0) == expected, outcomes
    for channel in ("alpha", "beta", "stable", "lts"):
        result.stdout.fnmatch_lines([f"*PASSED*test_update.py::test_update_then_rollback?qemu-{channel}?*"])
    out = pytester.path / "out"
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []
