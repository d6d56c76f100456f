"""`railyard spawn` used the way a person uses it: in a terminal (tmux), an interactive SSH session into the
machine, a command typed there, `exit`, and nothing left; Ctrl-C ends a waiting spawn the same way; `--keep`
leaves the machine running until `railyard gc` deletes it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.helpers import leftover_disks, qemu_processes_under

RAILYARD = str(Path(sys.executable).with_name("railyard"))
BOOT_WAIT = 600.0  # a cold TCG boot when no checkpoint fits, on a loaded host

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Terminal:
    """A tmux session running one command; what a person would see and type."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.name = f"railyard-{uuid.uuid4().hex[:8]}"
        # The shell stays after the command, to show how it ended.
        script = f'{command}; echo "spawn exited $?"; sleep 3600'
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", "220", "-y", "60", "-c", str(cwd), script],
            check=True,
        )

    def screen(self) -> str:
        done = subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-S", "-2000", "-t", self.name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout

    def type(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if condition(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{text}")
            time.sleep(0.5)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False, capture_output=True)


@pytest.fixture
def terminal(tmp_path: Path):
    made: list[Terminal] = []

    def start(args: str) -> Terminal:
        t = Terminal(f"{shlex.quote(RAILYARD)} spawn {args} -- --output-dir {tmp_path / 'out'}", tmp_path)
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()
    # Whatever a failed assertion left running (a kept machine before its gc), the product's gc removes.
    subprocess.run(
        [RAILYARD, "gc", "--platform", "qemu", "--output-root", str(tmp_path)],
        capture_output=True,
        check=False,
    )


def test_ssh_into_a_spawned_machine_type_a_command_and_exit(terminal, tmp_path: Path) -> None:
    t = terminal("--ssh")
    t.wait_for(
        lambda s: "is up: ssh -i" in s and s.rstrip().endswith("$"), "the guest's shell prompt", BOOT_WAIT
    )
    t.type("echo hello-$((6*7)) from $(hostname)", "Enter")
    t.wait_for(lambda s: "hello-42 from" in s, "the command's output")
    t.type("exit", "Enter")
    text = t.wait_for(lambda s: "spawn exited" in s, "spawn to end")
    assert "spawn exited 0" in text, text
    assert "railyard spawn: the SSH session ended (0)" in text
    out = tmp_path / "out"
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []


def test_ctrl_c_ends_a_waiting_spawn_and_destroys_its_machines(terminal, tmp_path: Path) -> None:
    t = terminal("--count 2")
    text = t.wait_for(lambda s: "Ctrl-C destroys" in s, "the machines to be up", BOOT_WAIT)
    assert text.count("is up: ssh -i") == 2, text
    assert len(qemu_processes_under(tmp_path / "out")) == 2
    t.type("C-c")
    t.wait_for(lambda s: "spawn exited" in s, "spawn to end")
    out = tmp_path / "out"
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []


def test_keep_leaves_the_machine_running_until_gc(terminal, tmp_path: Path) -> None:
    t = terminal("--keep --command 'cat /etc/os-release'")
    text = t.wait_for(lambda s: "spawn exited" in s, "spawn to end", BOOT_WAIT)
    assert "spawn exited 0" in text, text
    assert "kept 1 machine(s) running" in text
    out = tmp_path / "out"
    assert len(qemu_processes_under(out)) == 1, "the kept machine runs on"
    gc = text.split("to delete them once you are done: ", 1)[1].splitlines()[0].strip()
    assert gc.startswith("railyard gc --platform qemu --output-root ")
    done = subprocess.run([RAILYARD, *shlex.split(gc)[1:]], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []
