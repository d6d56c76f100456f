"""The reports a run writes into `<output>/reports/`: kola's `report.json`, a TAP file, JUnit XML; merging the
reports of several runs (shards, matrix jobs) into one; the run's exit code for release gating.

report.json has kola's shape (`tests[]` with name, result PASS/FAIL/SKIP, duration in nanoseconds and output;
the run's result, platform and version), so tooling that reads kola's reports reads Railyard's; each test
carries more besides, which that tooling ignores: `flaky` and `reruns` (it failed, was rerun and passed),
`warn_only` (the denylist's reason; a failure that does not fail the run), `infrastructure` (a platform or image
error before the test's body ran), `skip_reason`, and `properties` (the JUnit properties: platform, channel,
distro, image version, machines, where their console and journal are).

TAP is written from the same records (not by pytest-tap), so that a test that passed on a rerun, a warn-only
failure and the tests of merged shards read the same in every format. Pure logic except the file writes.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
REPORT_JSON = "report.json"
REPORT_TAP = "report.tap"
JUNIT_XML = "junit.xml"
REPORTS_DIR = "reports"

# Exit codes beyond pytest's own (0 passed, 1 tests failed, 2 interrupted, 3 internal error, 4 usage error,
# 5 no tests collected): chosen above pytest's range so a gate can tell them apart.
EXIT_INFRASTRUCTURE = 10
"""No test failed, but a platform or image error stopped at least one test before its body ran: rerun the job."""
EXIT_WARN_ONLY = 11
"""Everything passed except tests the denylist runs warn-only: the release is not blocked, someone should look."""

PROPERTY_FAILURE = "railyard failure"
"""A test's property saying what kind of failure it had (`infrastructure`)."""
INFRASTRUCTURE = "infrastructure"


@dataclass
class TestRecord:
    """What a run says of one test (one parametrization), over all its attempts."""

    __test__ = False  # not a test class, whatever its name says

    name: str
    result: str = PASS
    duration_s: float = 0.0
    output: str = ""
    reruns: int = 0
    rerun_outputs: list[str] = field(default_factory=list)
    warn_only: str | None = None
    infrastructure: bool = False
    skip_reason: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    """Each machine's kept artifacts ("console <machine>" -> path relative to the reports folder)."""
    rerun_attempts: set[int] = field(default_factory=set, repr=False)
    """Which attempts ended in a rerun (a failed attempt reports its call and teardown both as `rerun`)."""

    @property
    def flaky(self) -> bool:
        return self.result == PASS and self.reruns > 0

    @property
    def counts_as_failure(self) -> bool:
        """A failure that fails the run (warn-only failures do not)."""
        return self.result == FAIL and self.warn_only is None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subtests": [],
            "result": self.result,
            "duration": round(self.duration_s * 1e9),
            "output": self.output,
            "flaky": self.flaky,
            "reruns": self.reruns,
            "rerun_outputs": self.rerun_outputs,
            "warn_only": self.warn_only,
            "infrastructure": self.infrastructure,
            "skip_reason": self.skip_reason,
            "properties": self.properties,
            "artifacts": self.artifacts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TestRecord:
        return cls(
            name=str(data["name"]),
            result=str(data["result"]),
            duration_s=float(data.get("duration", 0)) / 1e9,
            output=str(data.get("output", "")),
            reruns=int(data.get("reruns", 0)),
            rerun_outputs=[str(o) for o in data.get("rerun_outputs", [])],
            warn_only=data.get("warn_only"),
            infrastructure=bool(data.get("infrastructure", False)),
            skip_reason=data.get("skip_reason"),
            properties={str(k): str(v) for k, v in (data.get("properties") or {}).items()},
            artifacts={str(k): str(v) for k, v in (data.get("artifacts") or {}).items()},
        )


@dataclass
class RunReport:
    tests: list[TestRecord]
    platform: str
    version: str

    @property
    def result(self) -> str:
        return FAIL if any(t.counts_as_failure for t in self.tests) else PASS

    def exit_code(self, pytest_code: int) -> int:
        """pytest's exit code, made finer for gating: EXIT_INFRASTRUCTURE when the only failures were the
        infrastructure's, EXIT_WARN_ONLY when the only failures were warn-only. A run pytest ended for another
        reason (interrupted, usage error) keeps pytest's code."""
        if pytest_code not in (0, 1):
            return pytest_code
        failed = [t for t in self.tests if t.counts_as_failure]
        if failed:
            return EXIT_INFRASTRUCTURE if all(t.infrastructure for t in failed) else 1
        if any(t.result == FAIL for t in self.tests):
            return EXIT_WARN_ONLY
        return pytest_code

    def to_json(self) -> dict[str, Any]:
        return {
            "tests": [t.to_json() for t in self.tests],
            "result": self.result,
            "platform": self.platform,
            "version": self.version,
            "summary": self.summary(),
        }

    def summary(self) -> dict[str, int]:
        counts = {
            "passed": 0,
            "failed": 0,
            "skipped": 0,
            "flaky": 0,
            "warn_only_failed": 0,
            "infrastructure": 0,
        }
        for t in self.tests:
            if t.result == SKIP:
                counts["skipped"] += 1
            elif t.result == PASS:
                counts["passed"] += 1
                counts["flaky"] += t.flaky
            elif t.warn_only is not None:
                counts["warn_only_failed"] += 1
            else:
                counts["failed"] += 1
                counts["infrastructure"] += t.infrastructure
        return counts

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunReport:
        return cls(
            tests=[TestRecord.from_json(t) for t in data.get("tests") or []],
            platform=str(data.get("platform", "")),
            version=str(data.get("version", "")),
        )


def joined(values: Iterable[str]) -> str:
    """Distinct non-empty values in first-seen order, comma-separated (kola's `version` is one string)."""
    return ",".join(dict.fromkeys(v for v in values if v))


# -- TAP ------------------------------------------------------------------------------------------------


def _yaml_block(fields: Mapping[str, Any]) -> list[str]:
    lines = ["  ---"]
    for key, value in fields.items():
        if isinstance(value, str) and "\n" in value:
            lines.append(f"  {key}: |")
            lines += [f"    {line}" for line in value.rstrip("\n").splitlines()]
        else:
            lines.append(f"  {key}: {json.dumps(value)}")
    lines.append("  ...")
    return lines


def to_tap(report: RunReport) -> str:
    """TAP version 13: one line per test, a SKIP or TODO directive where it applies, and a YAML block with
    what a plain ok/not ok cannot say (flaky, reruns, warn-only, infrastructure, the failure's output)."""
    lines = ["TAP version 13", f"1..{len(report.tests)}"]
    for n, t in enumerate(report.tests, start=1):
        desc = t.name.replace("#", "\\#")
        fields: dict[str, Any] = {}
        if t.result == SKIP:
            lines.append(f"ok {n} - {desc} # SKIP {t.skip_reason or ''}".rstrip())
            continue
        if t.result == PASS:
            line = f"ok {n} - {desc}"
            if t.warn_only is not None:
                fields["warn_only"] = t.warn_only
            if t.flaky:
                fields.update(flaky=True, reruns=t.reruns, first_failure=t.rerun_outputs[0][-4000:])
        else:
            line = f"not ok {n} - {desc}"
            if t.warn_only is not None:
                line += f" # TODO {t.warn_only}"
            if t.infrastructure:
                fields["infrastructure"] = True
            if t.reruns:
                fields["reruns"] = t.reruns
            fields["output"] = t.output[-4000:]
        fields["duration_ms"] = round(t.duration_s * 1000)
        lines.append(line)
        lines += _yaml_block(fields)
    return "\n".join(lines) + "\n"


# -- writing and merging --------------------------------------------------------------------------------


def write(report: RunReport, directory: Path) -> list[Path]:
    """report.json, report.tap and report.html into `directory`; the files written."""
    from harness.html_report import HTML_REPORT, render

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        (REPORT_JSON, json.dumps(report.to_json(), indent=2) + "\n"),
        (REPORT_TAP, to_tap(report)),
        (HTML_REPORT, render(report)),
    ):
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(directory / name)
        written.append(directory / name)
    return written


def reports_dir(path: Path) -> Path:
    """The folder holding a run's report.json: the run's output folder or its `reports/`."""
    for candidate in (path / REPORTS_DIR, path):
        if (candidate / REPORT_JSON).is_file():
            return candidate
    raise ConfigError(f"{path}: no {REPORT_JSON} here or in {path / REPORTS_DIR}")


def read(directory: Path) -> RunReport:
    path = reports_dir(directory) / REPORT_JSON
    try:
        return RunReport.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a report Railyard can read: {exc}") from exc


def merge_reports(reports: Sequence[RunReport]) -> RunReport:
    """One report of several runs (shards of one run, or the jobs of a matrix). A test that appears in more
    than one keeps every appearance: two runs of the same test are two results, not one."""
    return RunReport(
        tests=[t for r in reports for t in r.tests],
        platform=joined(r.platform for r in reports),
        version=joined(v for r in reports for v in r.version.split(",")),
    )


def fold_reruns(path: Path, tests: Sequence[TestRecord]) -> int:
    """Fold the failed attempts of rerun tests in a JUnit file into their final test case, as Maven Surefire
    writes reruns (and Jenkins and GitLab read them): pytest writes a test case per attempt, and an attempt
    pytest-rerunfailures reruns has no result in it, so it would read as a pass. The final test case gets a
    `<flakyFailure>` (it passed) or `<rerunFailure>` (it failed) per failed attempt, with that attempt's
    output. Returns how many test cases were folded."""
    from _pytest.junitxml import mangle_test_address

    rerun = {}
    for test in tests:
        if test.reruns:
            names = mangle_test_address(test.name)
            rerun[(".".join(names[:-1]), names[-1])] = test
    if not rerun:
        return 0
    tree = ET.parse(path)
    folded = 0
    for suite in tree.getroot().iter("testsuite"):
        groups: dict[tuple[str, str], list[ET.Element]] = {}
        for case in suite.findall("testcase"):
            groups.setdefault((case.get("classname", ""), case.get("name", "")), []).append(case)
        removed = 0
        for key, cases in groups.items():
            found = rerun.get(key)
            if found is None or len(cases) < 2:
                continue
            final = cases[-1]
            tag = "flakyFailure" if found.result == PASS else "rerunFailure"
            for earlier in cases[:-1]:
                suite.remove(earlier)
                removed += 1
            for n, output in enumerate(found.rerun_outputs, start=1):
                element = ET.SubElement(final, tag, message=f"attempt {n} failed", type="rerun")
                ET.SubElement(element, "stackTrace").text = output
        folded += removed  # pytest counted no result for them: the suite's totals stay
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return folded


def merge_junit(files: Sequence[Path], output: Path) -> None:
    """The test suites of several JUnit files under one <testsuites>, with its totals."""
    merged = ET.Element("testsuites")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = 0.0
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise ConfigError(f"{path}: not a JUnit XML file: {exc}") from exc
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            merged.append(suite)
            for key in totals:
                totals[key] += int(suite.get(key, "0"))
            seconds += float(suite.get("time", "0"))
    for key, value in totals.items():
        merged.set(key, str(value))
    merged.set("time", f"{seconds:.3f}")
    ET.ElementTree(merged).write(output, encoding="utf-8", xml_declaration=True)


def merge(directories: Sequence[Path], output: Path) -> RunReport:
    """Merge the reports of `directories` into `output` (report.json, report.tap, report.html, junit.xml)."""
    if not directories:
        raise ConfigError("nothing to merge: name the output folders of the runs")
    folders = [reports_dir(d) for d in directories]
    runs = [read(f) for f in folders]
    for folder, run in zip(folders, runs, strict=True):
        for test in run.tests:  # artifact links, from the merged report's folder
            test.artifacts = {
                key: os.path.relpath((folder / href).resolve(), output.resolve())
                for key, href in test.artifacts.items()
            }
    report = merge_reports(runs)
    write(report, output)
    junits = [f / JUNIT_XML for f in folders if (f / JUNIT_XML).is_file()]
    if junits:
        merge_junit(junits, output / JUNIT_XML)
    return report
