"""`railyard spawn`: boot machines for a person, the way kola spawn does, on any platform.

The machines are booted by the plugin itself: `railyard spawn` runs pytest on one test (session.py in this
folder) that asks `machine_factory` for them, so a spawned machine is provisioned, checked and torn down
exactly as a test's is, and bad input (an Ignition config that does not validate, an unknown option, a
missing image) is the same one error before anything boots. The test prints how to reach each machine
(ssh command, console path), then opens an interactive SSH session to the first (`--ssh`) or waits for
Ctrl-C. On exit, Ctrl-C, SIGTERM or SIGHUP every machine is destroyed, unless `--keep`: then the machines are
released, left running, and the command says how to delete them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import ConfigError

SETTINGS_ENV = "RAILYARD_SPAWN"
SESSION = Path(__file__).with_name("session.py")


@dataclass(frozen=True)
class SpawnSettings:
    count: int = 1
    ignition: str | None = None
    butane: str | None = None
    ssh: bool = False
    keep: bool = False
    command: str | None = None
    """Run this in the first machine instead of an interactive shell (with --ssh)."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> SpawnSettings:
        return cls(**json.loads(text))


def check(settings: SpawnSettings) -> None:
    """What can be told before pytest starts: the counts and that the files are there."""
    if settings.count < 1:
        raise ConfigError(f"--count {settings.count}: spawn at least one machine")
    if settings.ignition and settings.butane:
        raise ConfigError("give --ignition or --butane, not both")
    for option, value in (("--ignition", settings.ignition), ("--butane", settings.butane)):
        if value and not Path(value).is_file():
            raise ConfigError(f"{option} {value}: no such file")


def pytest_command(settings: SpawnSettings, pytest_args: Sequence[str]) -> list[str]:
    """The pytest run that boots the machines: the session test, quiet, its output not captured."""
    # Kept machines: their folders stay, and their QEMU does not die with this process (as --keep-on-failure).
    keep = ["--keep-artifacts", "--keep-on-failure"] if settings.keep else []
    return [
        sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", os.getcwd(), "-s",
        "-p", "no:cacheprovider", "-p", "no:terminal", "-p", "no:junitxml", "-p", "no:railyard-reports",
        *keep, *pytest_args, str(SESSION),
    ]  # fmt: skip


def run(settings: SpawnSettings, pytest_args: Sequence[str]) -> int:
    """Check what can be checked, then become the pytest run (exec: Ctrl-C and the terminal go to it alone,
    and it tears the machines down as it ends)."""
    check(settings)
    absolute = SpawnSettings(
        **{
            **asdict(settings),
            "ignition": str(Path(settings.ignition).resolve()) if settings.ignition else None,
            "butane": str(Path(settings.butane).resolve()) if settings.butane else None,
        }
    )
    command = pytest_command(absolute, pytest_args)
    os.execve(sys.executable, command, {**os.environ, SETTINGS_ENV: absolute.to_env()})
