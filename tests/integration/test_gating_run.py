"""A gating run as the nightly job makes it, on real machines: suites with `--rerun 1 --denylist FILE -n 2`
write report.json, TAP, JUnit and report.html, and a deliberately flaky test shows as flaky in all four."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from tests.integration.helpers import SUITES, failure_report, leftover_disks, qemu_processes_under, run_inner

FLAKY = """
from pathlib import Path


def test_deliberately_flaky(machine):
    '''Fails on its first attempt (a host-side marker says which attempt this is), passes on the rerun.'''
    marker = Path(__file__).with_name("attempted")
    first = not marker.exists()
    marker.write_text("yes")
    assert machine.succeed("echo up") == "up\\n"
    assert not first, "the first attempt fails on purpose"


def test_denylisted(machine):
    raise AssertionError("never runs: the denylist skips it")
"""


def test_a_gating_run_reports_a_flaky_test_as_flaky_everywhere(pytester):
    pytester.makepyfile(test_gate=FLAKY)
    deny = pytester.path / "deny.yaml"
    deny.write_text("- pattern: test_denylisted\n  tracker: https://tracker.example/42\n")
    result = run_inner(
        pytester, "--platform=qemu", "-n", "2", "--channel", "stable", "--rerun", "1", "--denylist", str(deny),
        str(SUITES / "test_basic.py"), str(pytester.path / "test_gate.py"),
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, failure_report(result)
    assert outcomes.get("rerun") == 1, outcomes
    assert result.ret == 0
    out = pytester.path / "out"
    folder = out / "reports"

    report = json.loads((folder / "report.json").read_text())
    tests = {t["name"].split("::")[-1].split("[")[0]: t for t in report["tests"]}
    flaky = tests["test_deliberately_flaky"]
    assert (flaky["result"], flaky["flaky"], flaky["reruns"]) == ("PASS", True, 1)
    assert "the first attempt fails on purpose" in flaky["rerun_outputs"][0]
    assert tests["test_denylisted"]["skip_reason"] == "denylisted: https://tracker.example/42"
    assert report["summary"]["flaky"] == 1
    assert all(
        t["result"] == "PASS" for n, t in tests.items() if n.startswith("test_") and n != "test_denylisted"
    )

    tap = (folder / "report.tap").read_text()
    line = next(ln for ln in tap.splitlines() if "test_deliberately_flaky" in ln)
    assert re.match(r"ok \d+ - ", line), line
    assert "  flaky: true" in tap

    junit = ET.parse(folder / "junit.xml").getroot()
    [case] = [c for c in junit.iter("testcase") if c.get("name", "").startswith("test_deliberately_flaky")]
    assert "the first attempt fails on purpose" in case.find("flakyFailure").findtext("stackTrace")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["railyard flaky"] == "passed on attempt 2 after 1 failed"
    assert (props["platform"], props["channel"]) == ("qemu", "stable")

    page = (folder / "report.html").read_text()
    assert re.search(
        r'data-test="[^"]*test_deliberately_flaky[^"]*"><a href="#[^"]+"><span class="badge">FLAKY', page
    )
    # The failed attempt's machine kept its artifacts, and the reports point at them.
    consoles = [href for key, href in flaky["artifacts"].items() if key.startswith("console ")]
    assert consoles, flaky["artifacts"]
    assert all((folder / href).is_file() for href in consoles)
    assert consoles[0] in page
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []
