"""The suites that pass on QEMU pass on libvirt too, run as a user runs them: `pytest --platform=libvirt suites/`.

One channel only: the update suite runs for all four channels on QEMU (tests/integration/test_suites.py), and
what differs on libvirt (domain XML, storage volumes, fw_cfg, console, power) is the same for every channel.
It costs about 20 minutes of TCG boots on two cores, more than the project's CI run can add to the QEMU suites:
it runs when asked, `RAILYARD_LIBVIRT_SUITES=1 .venv/bin/pytest tests/libvirt/test_suites_libvirt.py`.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.helpers import SUITES, collected, failure_report, run_inner
from tests.libvirt.conftest import railyard_domains

CHANNEL = "stable"
SUITES_TIMEOUT = 45 * 60.0


@pytest.mark.skipif(
    os.environ.get("RAILYARD_LIBVIRT_SUITES") != "1",
    reason="the suites on libvirt take ~20 min of TCG boots: set RAILYARD_LIBVIRT_SUITES=1 to run them",
)
def test_suites_pass_on_libvirt(pytester, hypervisors):
    args = ["--platform=libvirt", f"--libvirt-uri={hypervisors.system}", f"--channel={CHANNEL}", str(SUITES)]
    expected = collected(pytester, *args)
    assert expected >= 15  # basic, ignition, reboot, cluster, and the update suite for one channel
    before = {name for name, _ in railyard_domains(hypervisors.system)}

    result = run_inner(pytester, "-n", "2", *args, timeout=SUITES_TIMEOUT)

    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, failure_report(result)
    assert outcomes.get("errors", 0) == 0, failure_report(result)
    assert outcomes.get("passed", 0) == expected, outcomes
    result.stdout.fnmatch_lines([f"*PASSED*test_update.py::test_update_then_rollback?libvirt-{CHANNEL}?*"])
    left = {name for name, _ in railyard_domains(hypervisors.system)} - before
    assert left == set(), f"domains left on {hypervisors.system}: {sorted(left)}"
