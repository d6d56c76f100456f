"""report.html, checked the way a person looks at it: rendered by headless Chromium, then asserted on what
the page shows (the matrix, the results, the links to artifacts that are there, the boot timelines drawn)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import reports
from harness.html_report import cell_of, column_of, row_of
from harness.reports import FAIL, PASS, SKIP, RunReport, TestRecord

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="120">'
    '<rect x="10" y="10" width="300" height="20" fill="#3a6"/><text x="10" y="60">kernel</text></svg>'
)


def record(name: str, result: str, channel: str = "stable", **kw: object) -> TestRecord:
    props = {"platform": "qemu", "channel": channel}
    return TestRecord(name, result, 12.5, properties=props, **kw)  # type: ignore[arg-type]


def sample(tmp_path: Path) -> tuple[RunReport, Path]:
    run = tmp_path / "run"
    machine = run / "suites.test_net.py-qemu-stable" / "test_net.py-1"
    machine.mkdir(parents=True)
    (machine / "console.txt").write_text("[    0.000000] Linux version 6.1\n")
    (machine / "journal.txt").write_text("-- journal --\n")
    (machine / "timeline.svg").write_text(SVG)
    rel = "../suites.test_net.py-qemu-stable/test_net.py-1"
    artifacts = {f"{k} test_net.py-1": f"{rel}/{f}" for k, f in (("console", "console.txt"),
                 ("journal", "journal.txt"), ("timeline", "timeline.svg"))}  # fmt: skip
    report = RunReport(
        [
            record("suites/test_basic.py::test_ok[qemu-stable]", PASS),
            record("suites/test_basic.py::test_ok[qemu-alpha]", PASS, channel="alpha"),
            record(
                "suites/test_net.py::test_dns[qemu-stable]",
                FAIL,
                output="AssertionError: no answer",
                artifacts=artifacts,
            ),
            record(
                "suites/test_net.py::test_flaky[qemu-stable]", PASS, reruns=1, rerun_outputs=["first: boom"]
            ),
            record(
                "suites/test_net.py::test_known[qemu-alpha]",
                FAIL,
                channel="alpha",
                warn_only="warn-only: T-3",
            ),
            record(
                "suites/test_x.py::test_cloud[qemu-stable]", SKIP, skip_reason="runs only on platforms aws"
            ),
        ],
        "qemu",
        "2.0.0,4.0.0",
    )
    reports.write(report, run / "reports")
    return report, run / "reports"


def test_rows_are_tests_and_columns_are_platform_and_channel() -> None:
    t = record("suites/a.py::test_x[qemu-stable-3]", PASS)
    assert (row_of(t), column_of(t)) == ("suites/a.py::test_x[3]", "qemu/stable")
    assert cell_of(record("x", PASS, reruns=2)).label == "FLAKY"
    assert cell_of(record("x", FAIL, warn_only="w")).label == "WARN"
    assert cell_of(record("x", FAIL, infrastructure=True)).label == "INFRA"


CHECK_PAGE = """<!DOCTYPE html><html><body><pre id="facts"></pre>
<iframe id="report" src="report.html" width="1200" height="900" onload="look()"></iframe>
<script>
function look() {
  const doc = document.getElementById("report").contentDocument;
  const text = (el) => el ? el.textContent.trim() : null;
  const facts = {
    title: doc.title,
    result: text(doc.querySelector("#result .badge")),
    columns: [...doc.querySelectorAll("#matrix thead th")].map(text),
    rows: [...doc.querySelectorAll("#matrix tbody tr")].map(tr => [...tr.children].map(text)),
    cells: Object.fromEntries([...doc.querySelectorAll("#matrix td.result")].map(
      td => [td.dataset.test, [td.className, getComputedStyle(td).backgroundColor]])),
    artifacts: [...doc.querySelectorAll("a.artifact")].map(a => [a.textContent, a.href]),
    timelines: [...doc.querySelectorAll("img.timeline")].map(img => [img.alt, img.naturalWidth, img.complete]),
    outputs: [...doc.querySelectorAll("pre.output")].map(text),
    anchorsResolve: [...doc.querySelectorAll("#matrix a")].every(a => doc.getElementById(a.hash.slice(1))),
  };
  document.getElementById("facts").textContent = JSON.stringify(facts);
}
</script></body></html>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (bootstrap.sh installs it)")
def test_the_page_renders_what_a_person_needs(tmp_path: Path) -> None:
    _, folder = sample(tmp_path)
    (folder / "check.html").write_text(CHECK_PAGE)
    done = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
            "--virtual-time-budget=5000", "--dump-dom", (folder / "check.html").as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r'<pre id="facts">(.*?)</pre>', done.stdout, re.DOTALL)
    assert match, done.stdout[-3000:]
    facts = json.loads(html.unescape(match.group(1)))

    assert facts["title"] == "Railyard report: FAIL"
    assert facts["result"] == "FAIL"
    assert facts["columns"] == ["test", "qemu/alpha", "qemu/stable"]
    rows = {r[0]: r[1:] for r in facts["rows"]}
    assert rows["suites/test_basic.py::test_ok"] == ["PASS 12 s", "PASS 12 s"]
    assert rows["suites/test_net.py::test_dns"] == ["", "FAIL 12 s"]
    assert rows["suites/test_net.py::test_flaky"][1] == "FLAKY 12 s"
    assert rows["suites/test_net.py::test_known"][0] == "WARN 12 s"
    cells = facts["cells"]
    assert cells["suites/test_net.py::test_dns[qemu-stable]"][0] == "result fail"
    colours = {c[1] for c in cells.values()}
    assert len(colours) >= 4, "pass, fail, flaky, warn and skip are told apart by colour"
    assert facts["anchorsResolve"] is True
    artifacts = dict(facts["artifacts"])
    assert set(artifacts) == {"console", "journal"}
    for href in artifacts.values():
        assert Path(href.removeprefix("file://")).is_file(), href
    assert facts["timelines"] == [["boot timeline of test_net.py-1", 400, True]]
    assert facts["outputs"] == ["AssertionError: no answer"]


def test_merged_reports_link_to_each_runs_artifacts(tmp_path: Path) -> None:
    _, folder = sample(tmp_path)
    merged = tmp_path / "merged"
    reports.merge([folder.parent], merged)
    page = (merged / "report.html").read_text()
    hrefs = re.findall(r'href="([^"#]+)"', page)
    assert hrefs
    for href in hrefs:
        assert (merged / href).is_file(), href
