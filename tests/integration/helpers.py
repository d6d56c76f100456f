"""Running the plugin in a child pytest, as a user would, and checking what it left behind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

INNER_TIMEOUT = 1800.0
SUITES = Path(__file__).resolve().parents[2] / "suites"
COLLECTED = re.compile(r"^(\d+) tests? collected", re.MULTILINE)


def run_inner(pytester: pytest.Pytester, *args: str, timeout: float = INNER_TIMEOUT) -> pytest.RunResult:
    """Run pytest in a subprocess with the Railyard plugin, artifacts under `<tmp>/out`."""
    out = pytester.path / "out"
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--output-dir", str(out), "-v", "-rA", *args, timeout=timeout
    )


SECTION = re.compile(r"^=+ (.+?) =+$", re.MULTILINE)


def failure_report(result: pytest.RunResult, limit: int = 12000) -> str:
    """What an inner run said about its failures: the FAILURES and ERRORS sections (tracebacks, captured
    logs, the harness's reports), the short summary and the counts, each cut to `limit` characters."""
    text = result.stdout.str()
    heads = list(SECTION.finditer(text))
    parts = []
    for i, head in enumerate(heads):
        if head.group(1) in ("FAILURES", "ERRORS") or head.group(1).startswith("short test summary"):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            parts.append(text[head.start() : end][:limit])
    if heads and parts:
        parts.append(heads[-1].group(0))  # the outcome counts
    return "\n".join(parts) or text[-limit:]


def qemu_processes_under(path: Path) -> list[str]:
    """QEMU processes whose command line names `path` (machines of one inner run)."""
    ps = subprocess.run(["pgrep", "-a", "-f", "qemu-system"], capture_output=True, text=True, check=False)
    return [line for line in ps.stdout.splitlines() if str(path) in line]


def leftover_disks(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.suffix in (".qcow2", ".fd") or p.name.endswith(".sock")]


def collected(pytester: pytest.Pytester, *args: str) -> int:
    """How many tests a run with `args` would run."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", *args)
    assert result.ret == 0, result.stdout.str()
    match = COLLECTED.search(result.stdout.str())
    assert match, result.stdout.str()
    return int(match.group(1))
