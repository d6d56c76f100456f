"""Each call of the machine API is logged as a timed step, nested under the call that made it."""

from __future__ import annotations

import logging

import pytest

from harness.errors import CommandError
from harness.machine import GuestMachine, step
from harness.ssh import CommandResult


def test_steps_nest_and_say_how_long_they_took(caplog):
    caplog.set_level(logging.INFO, logger="harness.machine")
    with step("m1", "reboot"):
        with step("m1", "succeed 'true'"):
            pass
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("  m1: succeed 'true' (")
    assert lines[0].endswith(" s)")
    assert lines[1].startswith("m1: reboot (")


def test_a_failed_step_says_so_and_the_depth_recovers(caplog):
    caplog.set_level(logging.INFO, logger="harness.machine")
    with pytest.raises(ValueError, match="no"), step("m1", "wait for SSH"):
        raise ValueError("no")
    with step("m1", "after"):
        pass
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("m1: wait for SSH failed after ")
    assert lines[0].endswith("ValueError")
    assert lines[1].startswith("m1: after (")


def test_every_public_method_documents_itself():
    public = [n for n, v in vars(GuestMachine).items() if callable(v) and not n.startswith("_")]
    undocumented = [n for n in public if not (getattr(GuestMachine, n).__doc__ or "").strip()]
    assert undocumented == []
    waits = [n for n in public if n.startswith(("wait", "reboot", "settle", "succeed", "execute", "fail"))]
    for name in waits:
        assert "timeout" in (getattr(GuestMachine, name).__doc__ or "").lower(), name


class ScriptedGuest(GuestMachine):
    """A guest whose commands return what a script says (no SSH)."""

    def __init__(self, results):
        self.results = list(results)
        self.timeouts = None

    @property
    def name(self):
        return "m1"

    def _run(self, command, timeout, stdin=None):
        return self.results.pop(0)


def test_succeed_logs_the_command_and_raises_with_its_output(caplog):
    caplog.set_level(logging.INFO, logger="harness.machine")
    guest = ScriptedGuest([CommandResult("echo ok", 0, "ok\n", ""), CommandResult("false", 3, "out", "err")])
    assert guest.succeed("echo ok") == "ok\n"
    with pytest.raises(CommandError) as failure:
        guest.succeed("false")
    assert failure.value.status == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("m1: succeed 'echo ok' (")
    assert lines[1].startswith("m1: succeed 'false' failed after ")
    assert lines[1].endswith("CommandError")
