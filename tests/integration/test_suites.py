"""The project's own suites, run through the plugin as a user runs them: real TCG boots, every channel."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from images.build import CHANNEL_VERSIONS
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

    # The run's reports say the same, with what each test ran against.
    report = json.loads((out / "reports" / "report.json").read_text())
    assert (report["result"], report["platform"]) == ("PASS", "qemu")
    assert len(report["tests"]) == expected
    assert {t["result"] for t in report["tests"]} == {"PASS"}
    assert set(report["version"].split(",")) == set(CHANNEL_VERSIONS.values())
    junit = ET.parse(out / "reports" / "junit.xml").getroot()
    for case in junit.iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert properties["platform"] == "qemu", case.get("name")
        assert properties["channel"] in ("alpha", "beta", "stable", "lts"), case.get("name")
        # How each machine came up (a test whose machine fails its first boot on purpose has none).
        if case.get("classname", "").endswith(("test_basic", "test_update")):
            assert any(name.startswith("start ") for name in properties), case.get("name")
