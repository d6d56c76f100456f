"""Progress lines while a run waits (harness.progress): pure timing, and a child pytest's terminal."""

from __future__ import annotations

import io
import re
import sys
import time

import pytest

from harness import progress
from tests.integration.helpers import run_inner


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(progress, "_TERMINAL", None)
    monkeypatch.setattr(sys, "__stderr__", out)
    yield out
    progress.configure(progress.DEFAULT_INTERVAL)


def test_a_long_wait_says_what_it_waits_for_and_how_long(stderr: io.StringIO) -> None:
    progress.configure(0.1)
    with progress.heartbeat("m1: reboot", lambda: "console: login:"):
        time.sleep(0.35)
    lines = stderr.getvalue().splitlines()
    assert len(lines) >= 3, lines
    assert re.fullmatch(r"railyard: m1: reboot \.\.\. 0 s; console: login:", lines[0])
    assert lines[-1].startswith("railyard: m1: reboot: done in ")


def test_a_short_wait_and_progress_off_say_nothing(stderr: io.StringIO) -> None:
    progress.configure(5.0)
    with progress.heartbeat("m1: quick"):
        time.sleep(0.05)
    progress.configure(0)
    with progress.heartbeat("m1: off"):
        time.sleep(0.05)
    assert stderr.getvalue() == ""


def test_the_last_console_line_is_clean() -> None:
    assert progress.last_line("a\n\x1b[0;32m  OK  \x1b[0m] Reached target\n\n") == "OK  ] Reached target"


def test_under_pytest_and_xdist_the_lines_reach_the_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_wait="""
        import time
        from harness.machine_steps import step

        def test_waits():
            with step("m1", "wait for a reboot"):
                time.sleep(1.0)
        """
    )
    for workers, who in ((["-n", "1"], "railyard gw0"), ([], "railyard")):
        result = run_inner(pytester, "--progress", "0.3", *workers)
        result.assert_outcomes(passed=1)
        assert f"{who}: m1: wait for a reboot ... 0 s" in result.stderr.str(), workers
        assert f"{who}: m1: wait for a reboot: done in 1 s" in result.stderr.str(), workers
