"""A boot whose console shows it cannot succeed (Ignition failing, an emergency shell, a panic) ends the wait for
SSH at once, with the console's evidence, instead of waiting out the boot timeout."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.acceleration import Acceleration, Timeouts
from harness.distros import get_distro
from harness.errors import BootError, WaitTimeout
from harness.machine import GuestMachine
from platforms.base import FirstBootConfig, Machine, MachineSpec, SSHEndpoint

IGNITION_FAILED = (
    "[   21.5] ignition[512]: CRITICAL : Ignition failed: failed to create files: sha512 mismatch"
)
EMERGENCY = "[   22.0] systemd[1]: Started emergency.service - Emergency Shell."


class SilentVM(Machine):
    """A machine whose SSH port accepts connections but never sends a banner, and whose console we write."""

    live_console = True

    def __init__(self, workdir: Path, port: int) -> None:
        spec = MachineSpec(
            name="m1", image=workdir / "i", ignition=FirstBootConfig("{}", "3.3.0"), ignition_fw_cfg="x",
            workdir=workdir,
        )  # fmt: skip
        super().__init__(spec)
        self.port = port
        self.console_path.write_text("[    0.0] Linux version 6.1\n")

    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        return SSHEndpoint("127.0.0.1", self.port, "core")

    def is_running(self) -> bool:
        return True

    def reset(self) -> None: ...

    def poweroff(self, timeout: float) -> None: ...

    def kill(self) -> None: ...

    def print(self, text: str) -> None:
        with self.console_path.open("a") as f:
            f.write(text + "\n")


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # connections complete in the backlog; nobody ever answers them
        yield server.getsockname()[1]


@pytest.fixture
def guest(tmp_path: Path, silent_port: int) -> GuestMachine:
    timeouts = Timeouts.for_acceleration(Acceleration("kvm", "test"))
    vm = SilentVM(tmp_path, silent_port)
    return GuestMachine(vm, pkey=None, timeouts=timeouts, distro=get_distro("railyard"), channel="stable")  # type: ignore[arg-type]


def later(seconds: float, vm: SilentVM, *lines: str) -> threading.Timer:
    """Print `lines` on `vm`'s console after `seconds`."""

    def show() -> None:
        for line in lines:
            vm.print(line)

    timer = threading.Timer(seconds, show)
    timer.start()
    return timer


RESTART = "[   23.0] reboot: Restarting system"
SHELL_PROMPT = 'You are in emergency mode. After logging in, type "journalctl -xb" to view system logs,'


def boot_failure(guest: GuestMachine, *printed: tuple[float, tuple[str, ...]]) -> str:
    """The BootError message of a wait for SSH while the console prints each `(after_seconds, lines)`."""
    assert isinstance(guest.vm, SilentVM)
    timers = [later(seconds, guest.vm, *lines) for seconds, lines in printed]
    try:
        with pytest.raises(BootError) as failure:
            guest.wait_for_ssh(timeout=120)  # a miss would wait the whole two minutes, then raise WaitTimeout
    finally:
        for timer in timers:
            timer.cancel()
    return str(failure.value)


@pytest.mark.parametrize(
    ("line", "end"),
    [
        (IGNITION_FAILED, RESTART),
        (EMERGENCY, SHELL_PROMPT),
        (
            "[   3.1] Kernel panic - not syncing: VFS",
            "[   3.2] ---[ end Kernel panic - not syncing: VFS ]---",
        ),
    ],
)
def test_a_fatal_console_line_ends_the_wait_with_its_evidence(
    guest: GuestMachine, line: str, end: str
) -> None:
    message = boot_failure(guest, (0.5, ("[   20.0] ignition[512]: files: op(1): [started]", line, end)))
    assert line.split("] ", 1)[1] in message
    assert "files: op(1): [started]" in message, "the console lines before the failure are the evidence"


def test_what_an_earlier_boot_printed_does_not_end_the_wait(guest: GuestMachine) -> None:
    assert isinstance(guest.vm, SilentVM)
    guest.vm.print(EMERGENCY)  # printed before this wait began (a boot the harness already dealt with)
    with pytest.raises(WaitTimeout):
        guest.wait_for_ssh(timeout=1.5)


def test_a_machine_without_a_live_console_waits_for_its_timeout(
    guest: GuestMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SilentVM, "live_console", False)  # a cloud's console arrives late and whole
    assert isinstance(guest.vm, SilentVM)
    timer = later(0.2, guest.vm, IGNITION_FAILED)
    try:
        with pytest.raises(WaitTimeout):
            guest.wait_for_ssh(timeout=1.5)
    finally:
        timer.cancel()


def test_the_watch_leaves_healthy_first_boot_lines_alone(guest: GuestMachine) -> None:
    assert isinstance(guest.vm, SilentVM)
    for line in (
        "[   20.0] ignition[512]: Ignition finished successfully",
        "[   21.0] systemd[1]: emergency.target - Emergency Mode was skipped",
        "[   22.0] ignition[512]: warning at $.storage: unused key",
    ):
        guest.vm.print(line)
    with pytest.raises(WaitTimeout):
        guest.wait_for_ssh(timeout=1.0)


def test_the_evidence_is_free_of_terminal_colours(guest: GuestMachine) -> None:
    coloured = "[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39memergency.service\x1b[0m - Emergency Shell."
    message = boot_failure(guest, (0.3, (coloured, SHELL_PROMPT)))
    assert "Started emergency.service - Emergency Shell." in message
    assert "\x1b" not in message


def test_the_evidence_runs_to_the_end_of_the_failed_boot(guest: GuestMachine) -> None:
    # systemd prints its [FAILED] line on the console at once; what Ignition logged comes through the
    # journal, later. The evidence must hold Ignition's reason, printed after the first fatal line.
    failed_unit = "[FAILED] Failed to start ignition-files.service - Ignition (files)."
    reason = '[   21.4] ignition[512]: files failed: user "railyard-nobody" not found'
    shutdown = "[   22.9] systemd-shutdown[1]: Syncing filesystems"
    message = boot_failure(
        guest,
        (0.3, ("[   20.0] ignition[512]: files: op(1): [started]", failed_unit)),
        (1.5, (reason, IGNITION_FAILED, shutdown, RESTART)),
    )
    assert failed_unit in message
    assert reason.split("] ", 1)[1] in message
    assert "CRITICAL : Ignition failed" in message
    assert "reboot: Restarting system" in message


def test_a_failed_boot_that_never_ends_is_reported_after_the_grace(
    guest: GuestMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.fatal_console import FatalConsoleWatch

    monkeypatch.setattr(FatalConsoleWatch, "END_GRACE", 1.0)
    message = boot_failure(guest, (0.2, (IGNITION_FAILED,)))  # and then nothing more
    assert "CRITICAL : Ignition failed" in message
