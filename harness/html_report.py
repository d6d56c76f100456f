"""`report.html`: one static page of a run's (or merged runs') report, written next to report.json.

A matrix of tests (rows) by platform/channel (columns) with each result and duration, then a section per test
that did not simply pass: its output, its properties, links to each machine's console, journal and Ignition
config, and each machine's boot timeline (the guest's own `systemd-analyze plot`, kept as `timeline.svg`
with a failed test's artifacts). No script, no external resource: the page renders from the file alone, and
its links are relative, so the folder can be moved or uploaded as a whole.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.reports import FAIL, PASS, SKIP, RunReport, TestRecord

HTML_REPORT = "report.html"

ARTIFACT_KINDS = ("console", "journal", "ignition", "timeline")


@dataclass(frozen=True)
class Cell:
    label: str
    css: str


def cell_of(test: TestRecord) -> Cell:
    if test.result == SKIP:
        return Cell("SKIP", "skip")
    if test.result == PASS:
        if test.flaky:
            return Cell("FLAKY", "flaky")
        if test.warn_only is not None:
            return Cell("XPASS", "pass")
        return Cell("PASS", "pass")
    if test.warn_only is not None:
        return Cell("WARN", "warn")
    if test.infrastructure:
        return Cell("INFRA", "infra")
    return Cell("FAIL", "fail")


def column_of(test: TestRecord) -> str:
    platform = test.properties.get("platform")
    channel = test.properties.get("channel")
    if platform and channel:
        return f"{platform}/{channel}"
    return platform or "-"


def row_of(test: TestRecord) -> str:
    """The test's name without the platform and channel of its parameters (`test_x[qemu-stable-2]` is
    `test_x[2]` in the column `qemu/stable`)."""
    base, bracket, params = test.name.partition("[")
    if not bracket:
        return base
    parts = params.rstrip("]").split("@")[0].split("-")
    drop = {test.properties.get("platform"), test.properties.get("channel")}
    kept = [p for p in parts if p not in drop]
    return f"{base}[{'-'.join(kept)}]" if kept else base


def anchor(test: TestRecord) -> str:
    return "t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", test.name).strip("-")


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table.matrix { border-collapse: collapse; }
table.matrix th, table.matrix td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
table.matrix td.result { text-align: center; white-space: nowrap; }
td.pass { background: #d7f5d7; } td.fail { background: #f8c9c9; } td.skip { background: #eee; color: #666; }
td.flaky { background: #fbe7a6; } td.warn { background: #f9d9b0; } td.infra { background: #d9d2f5; }
span.badge { font-weight: bold; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; max-height: 30em; }
.summary span { margin-right: 1.2em; }
img.timeline { max-width: 100%; border: 1px solid #ccc; }
"""


def render(report: RunReport, artifact_href: dict[str, dict[str, str]] | None = None) -> str:
    """The page. `artifact_href` maps a test's name to its artifacts ("console test_x.py-1" -> href); by
    default each record's own `artifacts`."""
    hrefs = artifact_href if artifact_href is not None else {t.name: t.artifacts for t in report.tests}
    columns = sorted({column_of(t) for t in report.tests})
    rows: dict[str, dict[str, TestRecord]] = {}
    for test in report.tests:
        rows.setdefault(row_of(test), {})[column_of(test)] = test
    counts = report.summary()
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Railyard report: {html.escape(report.result)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f'<h1 id="result">Railyard: <span class="badge">{html.escape(report.result)}</span></h1>',
        f"<p>platform {html.escape(report.platform or '-')}, image version {html.escape(report.version or '-')}</p>",
        '<p class="summary">'
        + "".join(
            f'<span id="count-{k}">{html.escape(k.replace("_", " "))}: {n}</span>' for k, n in counts.items()
        )
        + "</p>",
        '<table class="matrix" id="matrix"><thead><tr><th>test</th>'
        + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        + "</tr></thead><tbody>",
    ]
    for row in sorted(rows):
        cells = []
        for column in columns:
            found = rows[row].get(column)
            if found is None:
                cells.append("<td></td>")
                continue
            cell = cell_of(found)
            label = f'<span class="badge">{cell.label}</span> {_seconds(found.duration_s)}'
            if cell.css != "pass" or found.artifacts:
                label = f'<a href="#{anchor(found)}">{label}</a>'
            title = html.escape(found.skip_reason or found.warn_only or "", quote=True)
            name = html.escape(found.name, quote=True)
            cells.append(f'<td class="result {cell.css}" title="{title}" data-test="{name}">{label}</td>')
        out.append(f"<tr><th>{html.escape(row)}</th>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    out += _details(report.tests, hrefs)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _details(tests: Sequence[TestRecord], hrefs: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for test in tests:
        if test.result == PASS and not test.flaky and test.warn_only is None and not hrefs.get(test.name):
            continue
        if test.result == SKIP:
            out.append(
                f'<h2 id="{anchor(test)}">{html.escape(test.name)}: SKIP</h2>'
                f"<p>{html.escape(test.skip_reason or '')}</p>"
            )
            continue
        cell = cell_of(test)
        out.append(f'<h2 id="{anchor(test)}">{html.escape(test.name)}: {cell.label}</h2>')
        facts = [f"{_seconds(test.duration_s)}"]
        if test.reruns:
            facts.append(f"{test.reruns} failed attempt(s) before this result")
        if test.warn_only:
            facts.append(html.escape(test.warn_only))
        if test.infrastructure:
            facts.append("a platform or image error before the test ran")
        out.append(f"<p>{'; '.join(facts)}</p>")
        links = hrefs.get(test.name, {})
        machines = sorted({key.partition(" ")[2] for key in links})
        for machine in machines:
            parts = []
            for kind in ARTIFACT_KINDS:
                href = links.get(f"{kind} {machine}")
                if href and kind != "timeline":
                    parts.append(f'<a class="artifact" href="{html.escape(href, quote=True)}">{kind}</a>')
            out.append(f"<h3>{html.escape(machine)}</h3><p>{' '.join(parts)}</p>")
            timeline = links.get(f"timeline {machine}")
            if timeline:
                out.append(
                    f'<p><img class="timeline" alt="boot timeline of {html.escape(machine, quote=True)}" '
                    f'src="{html.escape(timeline, quote=True)}"></p>'
                )
        if test.output and test.result == FAIL:
            out.append(f'<pre class="output">{html.escape(test.output[-20000:])}</pre>')
        for n, earlier in enumerate(test.rerun_outputs, start=1):
            out.append(f'<p>attempt {n} failed:</p><pre class="rerun">{html.escape(earlier[-8000:])}</pre>')
        props = {k: v for k, v in test.properties.items() if not k.startswith(ARTIFACT_KINDS)}
        if props:
            out.append(
                '<table class="properties">'
                + "".join(
                    f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in props.items()
                )
                + "</table>"
            )
    return out
