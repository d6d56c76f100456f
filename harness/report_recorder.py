"""Turns pytest's reports into the run's report (harness.reports) on the process that sees every test: the
xdist controller, or the only process. Registered by the plugin; writes `<output>/reports/` as the session
ends and sets the run's exit code (harness.reports.RunReport.exit_code)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness import reports
from harness.html_report import ARTIFACT_KINDS
from harness.reports import FAIL, PASS, SKIP, TestRecord

log = logging.getLogger(__name__)

PROPERTY_DENYLIST = "railyard denylist"
PROPERTY_IMAGE_VERSION = "image version"
PROPERTY_FLAKY = "railyard flaky"
"""Set on a test that passed on a rerun (JUnit has no result for it: the property says so)."""


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
        return text.removeprefix("Skipped: ")
    return str(longrepr or "")


def apply(record: TestRecord, report: pytest.TestReport) -> None:
    """Fold one of a test's reports (setup, call, teardown, of any attempt) into its record."""
    record.duration_s += report.duration
    properties = {str(k): str(v) for k, v in report.user_properties}
    record.properties.update(properties)
    if str(report.outcome) == "rerun":  # pytest-rerunfailures: this attempt failed and the test runs again
        attempt = int(getattr(report, "rerun", len(record.rerun_attempts)) or 0)
        if attempt not in record.rerun_attempts:
            record.rerun_attempts.add(attempt)
            record.reruns = len(record.rerun_attempts)
            record.rerun_outputs.append(report.longreprtext)
        record.result, record.output = PASS, ""
        return
    warn = properties.get(PROPERTY_DENYLIST)
    if report.when == "setup":
        if report.skipped:
            record.result, record.skip_reason = SKIP, skip_reason(report)
        elif report.failed:
            record.result, record.output = FAIL, report.longreprtext
            record.infrastructure = properties.get(reports.PROPERTY_FAILURE) == reports.INFRASTRUCTURE
            record.warn_only = warn
    elif report.when == "call":
        wasxfail = getattr(report, "wasxfail", None)
        if wasxfail is not None and warn is not None:
            # The denylist runs the test warn-only as a non-strict expected failure.
            record.warn_only = warn
            record.result = FAIL if report.skipped else PASS
            record.output = report.longreprtext if report.skipped else ""
        elif wasxfail is not None:
            record.result = SKIP if report.skipped else PASS
            record.skip_reason = f"expected failure: {wasxfail}" if report.skipped else None
        elif report.failed:
            record.result, record.output = FAIL, report.longreprtext
        elif report.skipped:
            record.result, record.skip_reason = SKIP, skip_reason(report)
        else:
            record.result = PASS
    elif report.failed:  # teardown
        record.output = (record.output + "\n" if record.result == FAIL else "") + report.longreprtext
        record.result = FAIL
        record.warn_only = None  # a teardown error is the harness's, not the known failure's


def _point_junit_at(config: pytest.Config, path: Path) -> None:
    """Make pytest's JUnit writer name where its file now is, in the line it prints at the end."""
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "LogXML" and hasattr(plugin, "logfile"):
            plugin.logfile = str(path)


class ReportRecorder:
    """Writes the run's reports when a test ran or was skipped and the run has an output folder (it booted
    something, or `--output-dir` was given): a run that boots nothing leaves `_railyard/` alone. pytest's JUnit file is written where the user
    asked (`--junitxml`) and copied next to the others; unasked, it is staged in the temp folder and moved there."""

    def __init__(
        self, output_dir: Path, platform: str, explicit: bool, junit: Path, junit_staged: bool
    ) -> None:
        self.output_dir = output_dir
        self.directory = output_dir / reports.REPORTS_DIR
        self.platform = platform
        self.explicit = explicit
        self.junit = junit
        self.junit_staged = junit_staged
        self.records: dict[str, TestRecord] = {}
        self.report: reports.RunReport | None = None

    def artifacts(self, properties: dict[str, str]) -> dict[str, str]:
        """The artifact properties whose files are there, relative to the reports folder."""
        found = {}
        for key, value in properties.items():
            if key.partition(" ")[0] in ARTIFACT_KINDS and Path(value).is_file():
                found[key] = os.path.relpath(value, self.directory)
        return found

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = self.records.setdefault(report.nodeid, TestRecord(report.nodeid))
        apply(record, report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        tests = list(self.records.values())
        for test in tests:
            test.artifacts = self.artifacts(test.properties)
        version = reports.joined(t.properties.get(PROPERTY_IMAGE_VERSION, "") for t in tests)
        report = reports.RunReport(tests=tests, platform=self.platform, version=version)
        if not tests or not (self.explicit or self.output_dir.is_dir()):
            if self.junit_staged:
                self.junit.unlink(missing_ok=True)
            return
        try:
            reports.write(report, self.directory)
            if self.junit.is_file():
                reports.fold_reruns(self.junit, tests)
                target = self.directory / reports.JUNIT_XML
                if self.junit_staged:
                    shutil.move(self.junit, target)
                    _point_junit_at(session.config, target)
                else:
                    shutil.copyfile(self.junit, target)
        except OSError as exc:
            log.warning("could not write the run's reports to %s: %s", self.directory, exc)
            return
        self.report = report
        code = self.report.exit_code(int(exitstatus))
        if code != int(exitstatus):
            session.exitstatus = code

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report is None:
            return
        tr = terminalreporter
        flaky = [t for t in self.report.tests if t.flaky]
        warned = [t for t in self.report.tests if t.result == FAIL and t.warn_only is not None]
        infra = [t for t in self.report.tests if t.counts_as_failure and t.infrastructure]
        if flaky or warned or infra:
            tr.section("railyard")
        for t in flaky:
            tr.write_line(f"FLAKY {t.name}: passed after {t.reruns} failed attempt(s)")
        for t in warned:
            tr.write_line(f"WARN-ONLY FAILED {t.name} ({t.warn_only})")
        for t in infra:
            tr.write_line(f"INFRASTRUCTURE {t.name}: a platform or image error before the test ran")
        tr.write_line(f"railyard reports: {self.directory} (report.json, report.tap, report.html, junit.xml)")
