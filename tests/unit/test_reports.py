"""The run's reports (report.json in kola's shape, TAP, JUnit), reruns, merging and exit codes: pure logic, and
the plugin on tests that boot nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import reports
from harness.reports import FAIL, PASS, SKIP, RunReport, TestRecord
from tests.integration.helpers import run_inner


def test_report_json_has_kolas_shape() -> None:
    report = RunReport(
        [TestRecord("t1", PASS, 1.5), TestRecord("t2", SKIP, skip_reason="why")], "qemu", "2.0.0"
    )
    data = report.to_json()
    assert (data["result"], data["platform"], data["version"]) == ("PASS", "qemu", "2.0.0")
    first = data["tests"][0]
    assert {k: first[k] for k in ("name", "subtests", "result", "duration", "output")} == {
        "name": "t1",
        "subtests": [],
        "result": "PASS",
        "duration": 1_500_000_000,  # nanoseconds, as Go's time.Duration
        "output": "",
    }
    assert RunReport.from_json(json.loads(json.dumps(data))).to_json() == data


@pytest.mark.parametrize(
    ("tests", "pytest_code", "code"),
    [
        ([TestRecord("a", PASS)], 0, 0),
        ([TestRecord("a", PASS, reruns=1)], 0, 0),
        ([TestRecord("a", FAIL), TestRecord("b", FAIL, infrastructure=True)], 1, 1),
        ([TestRecord("a", PASS), TestRecord("b", FAIL, infrastructure=True)], 1, reports.EXIT_INFRASTRUCTURE),
        (
            [TestRecord("a", PASS), TestRecord("b", FAIL, warn_only="warn-only: T-1")],
            0,
            reports.EXIT_WARN_ONLY,
        ),
        ([TestRecord("a", FAIL), TestRecord("b", FAIL, warn_only="w")], 1, 1),
        ([TestRecord("a", FAIL)], 2, 2),  # interrupted stays interrupted
    ],
)
def test_exit_codes_tell_test_failures_from_infrastructure_and_warn_only(
    tests: list[TestRecord], pytest_code: int, code: int
) -> None:
    assert RunReport(tests, "qemu", "").exit_code(pytest_code) == code


def test_tap_says_what_ok_cannot() -> None:
    report = RunReport(
        [
            TestRecord("suites/a.py::test_ok", PASS, 2.0),
            TestRecord("suites/a.py::test_flaky", PASS, reruns=1, rerun_outputs=["AssertionError: first"]),
            TestRecord("suites/a.py::test_bad", FAIL, output="boom\nline 2"),
            TestRecord("suites/a.py::test_known", FAIL, warn_only="warn-only: T-9", output="x"),
            TestRecord("suites/a.py::test_skip", SKIP, skip_reason="not on aws"),
        ],
        "qemu",
        "1",
    )
    tap = reports.to_tap(report).splitlines()
    assert tap[:3] == ["TAP version 13", "1..5", "ok 1 - suites/a.py::test_ok"]
    assert "ok 2 - suites/a.py::test_flaky" in tap
    assert "  flaky: true" in tap
    assert '  first_failure: "AssertionError: first"' in tap
    assert "not ok 3 - suites/a.py::test_bad" in tap
    assert "    line 2" in tap
    assert "not ok 4 - suites/a.py::test_known # TODO warn-only: T-9" in tap
    assert tap[-1] == "ok 5 - suites/a.py::test_skip # SKIP not on aws"


FLAKY_RUN = """
import pathlib
import pytest
from harness.errors import PlatformError

def test_passes():
    pass

def test_flaky(tmp_path_factory):
    marker = pathlib.Path(__file__).with_name("flaky.attempted")
    if not marker.exists():
        marker.write_text("1")
        assert False, "fails the first time"

def test_fails():
    assert 1 == 2

def test_known_failure():
    assert False, "known"

def test_skips():
    pytest.skip("not here")

@pytest.fixture
def broken_platform():
    raise PlatformError("the hypervisor went away")

def test_on_a_broken_platform(broken_platform):
    pass
"""


def run_with_reports(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    pytester.makepyfile(test_gate_run=FLAKY_RUN)
    deny = pytester.path / "deny.yaml"
    deny.write_text("- pattern: test_known_failure\n  tracker: T-5\n  warn: true\n")
    result = run_inner(pytester, "--denylist", str(deny), *args)
    return result, pytester.path / "out" / "reports"


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_run_writes_its_reports_and_a_flaky_test_shows_as_flaky_in_each(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    result, folder = run_with_reports(pytester, "--rerun", "1", *workers)
    assert result.ret == 1, result.stdout.str()
    data = json.loads((folder / "report.json").read_text())
    tests = {t["name"].split("::")[-1]: t for t in data["tests"]}
    assert data["result"] == "FAIL"
    assert {n: t["result"] for n, t in tests.items()} == {
        "test_passes": "PASS",
        "test_flaky": "PASS",
        "test_fails": "FAIL",
        "test_known_failure": "FAIL",
        "test_skips": "SKIP",
        "test_on_a_broken_platform": "FAIL",
    }
    assert (tests["test_flaky"]["flaky"], tests["test_flaky"]["reruns"]) == (True, 1)
    assert "fails the first time" in tests["test_flaky"]["rerun_outputs"][0]
    assert tests["test_passes"]["flaky"] is False
    assert tests["test_fails"]["reruns"] == 1, "a test that keeps failing was rerun once"
    assert "assert 1 == 2" in tests["test_fails"]["output"]
    assert tests["test_known_failure"]["warn_only"] == "warn-only: T-5"
    assert tests["test_skips"]["skip_reason"] == "not here"
    assert tests["test_on_a_broken_platform"]["infrastructure"] is True
    assert data["summary"]["flaky"] == 1

    tap = (folder / "report.tap").read_text()
    assert "  flaky: true" in tap
    assert "# TODO warn-only: T-5" in tap

    junit = ET.parse(folder / "junit.xml").getroot()
    names = [c.get("name") for c in junit.iter("testcase")]
    assert len(names) == len(set(names)) == 6, "one test case per test: the failed attempts are folded in"
    assert sum(int(s.get("tests", "0")) for s in junit.iter("testsuite")) == 6
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    flaky_props = {p.get("name"): p.get("value") for p in cases["test_flaky"].iter("property")}
    assert flaky_props["railyard flaky"] == "passed on attempt 2 after 1 failed"
    [attempt] = cases["test_flaky"].findall("flakyFailure")
    assert "fails the first time" in attempt.findtext("stackTrace")
    assert cases["test_fails"].find("failure") is not None
    assert len(cases["test_fails"].findall("rerunFailure")) == 1
    broken = {p.get("name"): p.get("value") for p in cases["test_on_a_broken_platform"].iter("property")}
    assert broken["railyard failure"] == "infrastructure"

    out = result.stdout.str()
    assert "FLAKY test_gate_run.py::test_flaky: passed after 1 failed attempt(s)" in out
    assert "WARN-ONLY FAILED test_gate_run.py::test_known_failure" in out
    assert f"railyard reports: {folder}" in out


def test_without_real_failures_the_exit_code_says_infrastructure_or_warn_only(
    pytester: pytest.Pytester,
) -> None:
    result, _ = run_with_reports(pytester, "-k", "not test_fails and not test_flaky")
    assert result.ret == reports.EXIT_INFRASTRUCTURE
    result, _ = run_with_reports(pytester, "-k", "test_known_failure or test_passes")
    assert result.ret == reports.EXIT_WARN_ONLY


def test_shards_merged_equal_the_whole_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        test_many="import pytest\n\n@pytest.mark.parametrize('n', range(7))\ndef test_n(n):\n    assert n != 5\n"
    )
    names = []
    folders = []
    for i in (1, 2):
        out = tmp_path / f"shard{i}"
        pytester.runpytest_subprocess("-p", "no:cacheprovider", "--output-dir", str(out), "--shard", f"{i}/2")
        folders.append(out)
        names.append({t["name"] for t in json.loads((out / "reports" / "report.json").read_text())["tests"]})
    whole = tmp_path / "whole"
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--output-dir", str(whole))
    expected = {t["name"] for t in json.loads((whole / "reports" / "report.json").read_text())["tests"]}
    assert names[0]
    assert names[1]
    assert not names[0] & names[1]

    merged = tmp_path / "merged"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", "merge", "--output", str(merged), *map(str, folders)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads((merged / "report.json").read_text())
    assert {t["name"] for t in data["tests"]} == expected
    assert data["result"] == "FAIL"
    junit = ET.parse(merged / "junit.xml").getroot()
    assert junit.get("tests") == "7"
    assert junit.get("failures") == "1"
    assert (merged / "report.tap").read_text().count("\nok ") + 1 == 7
    assert "7 tests: 6 passed, 1 failed" in done.stdout


def test_merging_nothing_or_a_folder_without_a_report_is_one_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "report",
            "merge",
            "--output",
            str(tmp_path / "m"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert f"{tmp_path}: no report.json here or in {tmp_path}/reports" in done.stderr
