"""`railyard list [--json]`: every test of the suites with its markers resolved, as `kola list --json` lists
kola's tests. The tests are collected by pytest itself (in this process, nothing boots), so what is listed is
what `pytest` would run with the same arguments: platform, channels, `--tag`, `--shard`, `-k`, `-m`."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import denylist
from harness.errors import ConfigError
from harness.targets import Requirements, Target, requirements_from_marks

CLUSTER_FIXTURES = frozenset({"cluster", "module_cluster"})
SHARED_FIXTURES = frozenset({"module_machine", "module_cluster"})


def _sorted(values: set[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def describe(item: pytest.Item) -> dict[str, Any]:
    """One collected test (one parametrization) as a dict of plain values."""
    req: Requirements = requirements_from_marks(item.iter_markers())
    params = getattr(getattr(item, "callspec", None), "params", {})
    target = next((v for v in params.values() if isinstance(v, Target)), None)
    fixtures = set(getattr(item, "fixturenames", ()))
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    summary = doc.strip().splitlines()[0] if doc.strip() else ""
    kola = denylist.KOLA_NAME.findall(summary)
    skips = [m.kwargs.get("reason", m.args[0] if m.args else "") for m in item.iter_markers("skip")]
    machine = req.machine
    return {
        "id": item.nodeid,
        "name": item.nodeid.split("[")[0],
        "description": summary,
        "kola": kola[0] if kola else None,
        "channel": target.channel if target else None,
        "platforms": _sorted(req.platforms),
        "exclude_platforms": sorted(req.exclude_platforms),
        "distros": _sorted(req.distros),
        "channels": req.channels,
        "min_version": req.min_version,
        "cluster_size": req.cluster_size if fixtures & CLUSTER_FIXTURES else None,
        "shares_machine": bool(fixtures & SHARED_FIXTURES),
        "boots": bool(target),
        "capabilities": sorted(req.capabilities),
        "flags": sorted(req.flags),
        "tags": sorted(req.tags),
        "timeout": req.timeout,
        "machine": {
            "disks_mib": list(machine.disks_mib),
            "nics": machine.nics,
            "memory_mib": machine.memory_mib,
            "firmware": machine.firmware,
            "kernel_args": list(machine.kernel_args),
        },
        "skip": skips[0] if skips else None,
    }


class _Collector:
    def __init__(self) -> None:
        self.tests: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            try:
                self.tests.append(describe(item))
            except ConfigError as exc:
                self.errors.append(f"{item.nodeid}: {exc}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(f"{report.nodeid or 'collection'}: {report.longreprtext.strip()}")


def collect(args: Sequence[str]) -> list[dict[str, Any]]:
    """The tests `pytest ARGS` would run, described; a ConfigError when pytest cannot collect them."""
    collector = _Collector()
    said = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="railyard-list-") as out, contextlib.redirect_stdout(said):
        code = pytest.main(
            ["--collect-only", "-q", "-p", "no:cacheprovider", "--output-dir", out, *args],
            plugins=[collector],
        )
    if code == pytest.ExitCode.USAGE_ERROR:
        raise ConfigError(said.getvalue().strip() or "pytest refused the arguments")
    if collector.errors or code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        detail = "\n".join(collector.errors) or f"pytest exited with {int(code)}"
        raise ConfigError(f"the tests could not be collected:\n{detail}")
    return collector.tests


def by_function(tests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per test function (as kola lists a test once): its parametrizations' ids and channels."""
    merged: dict[str, dict[str, Any]] = {}
    for test in tests:
        entry = merged.get(test["name"])
        if entry is None:
            entry = {k: v for k, v in test.items() if k not in ("id", "channel", "skip")}
            entry["ids"] = []
            entry["run_channels"] = []
            entry["skips"] = {}
            merged[test["name"]] = entry
        entry["ids"].append(test["id"])
        if test["channel"] and test["channel"] not in entry["run_channels"]:
            entry["run_channels"].append(test["channel"])
        if test["skip"]:
            entry["skips"][test["id"]] = test["skip"]
    return list(merged.values())


def table(tests: Sequence[dict[str, Any]]) -> str:
    """A person's view: one line per test function."""
    lines = []
    for t in tests:
        where = []
        if t["run_channels"]:
            where.append("channels " + ",".join(t["run_channels"]))
        if t["platforms"]:
            where.append("only " + ",".join(t["platforms"]))
        if t["exclude_platforms"]:
            where.append("not " + ",".join(t["exclude_platforms"]))
        if t["distros"]:
            where.append("distros " + ",".join(t["distros"]))
        if t["cluster_size"]:
            where.append(f"cluster {t['cluster_size']}")
        if t["shares_machine"]:
            where.append("shared machine")
        if t["tags"]:
            where.append("tags " + ",".join(t["tags"]))
        if t["skips"]:
            where.append(f"skipped x{len(t['skips'])}")
        kola = f"  [{t['kola']}]" if t["kola"] else ""
        lines.append(f"{t['name']}{kola}\n    {'; '.join(where) or 'no machine'}")
    return "\n".join(lines)


def run(args: Sequence[str], as_json: bool) -> str:
    tests = by_function(collect(args))
    if as_json:
        return json.dumps(tests, indent=2)
    return table(tests) + f"\n{len(tests)} test functions"


def default_paths() -> list[str]:
    """`suites/` of the current directory, where the suites of a project live."""
    return ["suites"] if Path("suites").is_dir() else []
