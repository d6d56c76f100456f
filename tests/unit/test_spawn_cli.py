"""`railyard spawn`: what it refuses before anything starts, and the pytest run it becomes (no machine boots)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.spawn import SESSION, SpawnSettings, pytest_command


def spawn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "spawn", *args],
        cwd=cwd, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--count", "0"], "--count 0: spawn at least one machine"),
        (["--ignition", "missing.ign"], "--ignition missing.ign: no such file"),
        (["--butane", "a.bu", "--ignition", "b.ign"], "give --ignition or --butane, not both"),
    ],
)
def test_bad_input_is_one_error_before_anything_starts(tmp_path: Path, args: list[str], says: str) -> None:
    done = spawn(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert says in done.stderr
    assert not (tmp_path / "_railyard").exists()


def test_an_invalid_config_stops_spawn_before_a_machine_boots(tmp_path: Path) -> None:
    (tmp_path / "bad.ign").write_text('{"ignition": {"version": "9.9.9"}}')
    done = spawn("--ignition", "bad.ign", cwd=tmp_path)
    assert done.returncode == 1
    assert "ConfigError: $.ignition.version '9.9.9' is not a 3.x spec version" in done.stdout
    assert not list(tmp_path.rglob("console.txt"))


def test_spawn_is_the_plugin_running_its_session_test() -> None:
    command = pytest_command(SpawnSettings(keep=True), ["--platform", "qemu"])
    assert command[1:3] == ["-m", "pytest"]
    assert command[-1] == str(SESSION)
    assert "--keep-on-failure" in command, "kept machines must outlive the run"
    assert "-s" in command, "the SSH session needs the terminal"
    assert SpawnSettings.from_env(SpawnSettings(count=3, ssh=True).to_env()) == SpawnSettings(
        count=3, ssh=True
    )
