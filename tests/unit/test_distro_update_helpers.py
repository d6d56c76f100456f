"""The distro update helpers, on a pretend machine that answers commands from a script."""

from dataclasses import dataclass, field

import pytest

from harness.distros import get_distro
from harness.distros.flatcar import FlatcarOS, flatcar_update_config
from harness.distros.guest import describe_failure, parse_key_values
from harness.distros.railyard import RailyardOS, update_config
from harness.errors import UpdateError
from harness.ssh import CommandResult


@dataclass
class FakeTimeouts:
    command: float = 5.0
    settle: float = 5.0


@dataclass
class FakeMachine:
    """Answers each command from `answers` (first matching prefix wins) and records it."""

    distro_name: str = "railyard"
    answers: dict[str, list[CommandResult]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    name: str = "fake-1"
    timeouts: FakeTimeouts = field(default_factory=FakeTimeouts)

    @property
    def distro(self):
        return get_distro(self.distro_name)

    def execute(self, command, timeout=None, stdin=None):
        self.commands.append(command)
        for prefix, results in self.answers.items():
            if command.startswith(prefix):
                return results.pop(0) if len(results) > 1 else results[0]
        return CommandResult(command, 0, "", "")

    def succeed(self, command, timeout=None, stdin=None):
        result = self.execute(command, timeout)
        if result.status != 0:
            raise AssertionError(f"{command} failed")
        return result.stdout

    def wait_until_succeeds(self, command, timeout=None):
        return self.succeed(command, timeout)


def guest_os(machine):
    return machine.distro.guest(machine)


def ok(stdout=""):
    return CommandResult("", 0, stdout, "")


def status_text(op, error="", code="", end="0"):
    return (
        f"CURRENT_OP={op}\nCURRENT_VERSION=2.0.0\nNEW_VERSION=2.0.1\nLAST_ERROR={error}\n"
        f"LAST_ERROR_CODE={code}\nLAST_CYCLE_START=1\nLAST_CYCLE_END={end}\n"
    )


def test_parse_key_values_strips_quotes_and_skips_other_lines():
    text = 'NAME="Railyard"\nVERSION_ID=2.0.0\n# comment\nnot a pair\nPRETTY_NAME="Railyard 2.0.0 (stable)"\nEMPTY=\n'
    assert parse_key_values(text) == {
        "NAME": "Railyard",
        "VERSION_ID": "2.0.0",
        "PRETTY_NAME": "Railyard 2.0.0 (stable)",
        "EMPTY": "",
    }


def test_update_configs():
    assert update_config("http://127.0.0.1:9/v1/update/", "lts", 86400.0) == (
        "SERVER=http://127.0.0.1:9/v1/update/\nGROUP=lts\nREBOOT_STRATEGY=off\nINTERVAL=86400\n"
    )
    assert "REBOOT_STRATEGY=off" in flatcar_update_config("disabled", "stable")


def test_describe_failure_prefers_the_agents_message():
    assert "hash mismatch (error code 10" in describe_failure(
        {"LAST_ERROR": "hash mismatch", "LAST_ERROR_CODE": "10"}
    )
    assert "UPDATE_STATUS_IDLE" in describe_failure({"CURRENT_OP": "UPDATE_STATUS_IDLE"})


def test_each_distro_names_its_guest_helpers():
    assert isinstance(guest_os(FakeMachine("railyard")), RailyardOS)
    assert isinstance(guest_os(FakeMachine("flatcar")), FlatcarOS)
    with pytest.raises(UpdateError, match="fcos has no A/B update support"):
        guest_os(FakeMachine("fcos")).update()


def test_railyard_update_returns_the_status_once_a_reboot_is_needed():
    m = FakeMachine(
        answers={
            "sudo railyard-update check-now --wait": [ok(status_text("UPDATE_STATUS_UPDATED_NEED_REBOOT"))]
        }
    )
    status = RailyardOS(m).update(timeout=30)
    assert status["NEW_VERSION"] == "2.0.1"
    assert any(c.startswith("sudo railyard-update check-now --wait --timeout 30") for c in m.commands)


def test_railyard_update_raises_with_the_agents_last_error():
    failed = CommandResult(
        "", 1, status_text("UPDATE_STATUS_IDLE", "the payload signature does not verify", "12"), ""
    )
    m = FakeMachine(answers={"sudo railyard-update check-now --wait": [failed]})
    with pytest.raises(UpdateError, match=r"signature does not verify.*error code 12"):
        RailyardOS(m).update(timeout=30)


def test_railyard_update_with_no_offer_is_an_error():
    m = FakeMachine(
        answers={"sudo railyard-update check-now --wait": [ok(status_text("UPDATE_STATUS_IDLE"))]}
    )
    with pytest.raises(UpdateError, match="without an error"):
        RailyardOS(m).update(timeout=30)


def test_railyard_update_keeps_polling_when_check_now_gives_up_first(monkeypatch):
    monkeypatch.setattr("harness.distros.guest.POLL_INTERVAL", 0.0)
    m = FakeMachine(
        answers={
            "date +%s.%N": [ok("100.5\n")],
            "sudo railyard-update check-now --wait": [CommandResult("", 1, "", "no update cycle finished")],
            "railyard-update status": [
                ok(status_text("UPDATE_STATUS_DOWNLOADING")),
                ok(status_text("UPDATE_STATUS_FINALIZING")),
                ok(status_text("UPDATE_STATUS_UPDATED_NEED_REBOOT")),
            ],
        }
    )
    assert RailyardOS(m).update(timeout=30)["CURRENT_OP"] == "UPDATE_STATUS_UPDATED_NEED_REBOOT"


def test_await_applied_fails_once_a_busy_cycle_went_idle(monkeypatch):
    monkeypatch.setattr("harness.distros.guest.POLL_INTERVAL", 0.0)
    m = FakeMachine(
        answers={
            "railyard-update status": [
                ok(status_text("UPDATE_STATUS_DOWNLOADING")),
                ok(status_text("UPDATE_STATUS_IDLE", "downloading broke off", "9")),
            ]
        }
    )
    with pytest.raises(UpdateError, match="downloading broke off"):
        RailyardOS(m)._await_applied(30)


def test_railyard_rollback_and_mark_good_use_the_guest_tools():
    m = FakeMachine()
    RailyardOS(m).rollback()
    RailyardOS(m).mark_good()
    assert m.commands == ["sudo railyard-update rollback", "sudo railyard-slot mark-good"]


def test_railyard_report_boot_wakes_the_agent_once_it_takes_signals():
    m = FakeMachine()
    RailyardOS(m).report_boot()
    assert m.commands == [
        "systemctl is-active --quiet railyard-update-agent.service && test -s /run/railyard/update-agent.pid",
        "sudo systemctl kill --kill-who=main -s HUP railyard-update-agent.service",
    ]


def test_flatcar_rollback_prioritizes_the_other_usr_partition():
    m = FakeMachine(
        "flatcar",
        answers={
            "rootdev -s /usr": [ok("/dev/vda3\n")],
            "cgpt find -t flatcar-usr": [ok("/dev/vda3\n/dev/vda4\n")],
        },
    )
    FlatcarOS(m).rollback()
    assert m.commands[-1] == "sudo cgpt prioritize /dev/vda4"
    FlatcarOS(m).mark_good()
    assert m.commands[-1] == "sudo cgpt add -S1 -T0 /dev/vda3"


def test_flatcar_update_polls_update_engine_and_shows_its_journal_on_failure(monkeypatch):
    monkeypatch.setattr("harness.distros.guest.POLL_INTERVAL", 0.0)
    m = FakeMachine(
        "flatcar",
        answers={
            "update_engine_client -status": [
                ok("CURRENT_OP=UPDATE_STATUS_CHECKING_FOR_UPDATE\n"),
                ok("CURRENT_OP=UPDATE_STATUS_IDLE\n"),
            ],
            "journalctl": [ok("update_engine: Omaha request network transfer failed\n")],
        },
    )
    with pytest.raises(UpdateError, match="network transfer failed"):
        FlatcarOS(m).update(timeout=30)
    assert "sudo update_engine_client -check_for_update" in m.commands
