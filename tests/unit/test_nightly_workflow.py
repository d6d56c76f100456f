"""The nightly workflow a user copies: valid for GitHub Actions, and the run it describes is one the plugin
accepts (every option exists, the denylist parses, the shards cover the suites)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def test_the_workflow_is_valid_for_github_actions() -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--builtin-schema",
            "vendor.github-workflows",
            str(WORKFLOW),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _pytest_args(matrix: dict[str, str]) -> list[str]:
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["suites"]["steps"]
    [script] = [s["run"] for s in steps if "pytest" in s.get("run", "")]
    command = re.search(r"\.venv/bin/pytest (.*?)\n\s*code=", script, re.DOTALL)
    assert command, script
    text = command.group(1).replace("\\\n", " ")
    text = re.sub(r"\$\{\{ matrix\.(\w+) \}\}", lambda m: matrix[m.group(1)], text)
    return [a for a in shlex.split(text) if not a.startswith("--output-dir") and a != "_railyard/nightly"]


def _collected(args: list[str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_the_matrix_runs_every_channel_and_its_shards_cover_the_suites() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    matrix = workflow["jobs"]["suites"]["strategy"]["matrix"]
    assert matrix["channel"] == ["alpha", "beta", "stable", "lts"]
    shards = [str(s) for s in matrix["shard"]]
    assert workflow["jobs"]["report"]["needs"] == "suites"
    assert "railyard report merge --gate" in str(workflow["jobs"]["report"]["steps"])

    args = _pytest_args({"channel": "stable", "shard": shards[0]})
    assert "--rerun" in args
    assert "--denylist" in args
    parts = [_collected(_pytest_args({"channel": "stable", "shard": s})) for s in shards]
    at = args.index("--shard")
    whole = _collected(args[:at] + args[at + 2 :])
    assert set().union(*parts) == whole
    assert sum(len(p) for p in parts) == len(whole)
