"""A restart that never leaves the firmware is recovered once (power cycle, else reset); other silences are left alone."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from harness.acceleration import Acceleration, Timeouts
from harness.distros import get_distro
from harness.machine import RESTART_LINE, GuestMachine, PowerCycled, RestartGuard
from harness.restarts import ssh_ready_hint
from harness.retry import poll
from platforms.base import CAP_HARD_RESET, CAP_POWER_CYCLE, FirstBootConfig, Machine, MachineSpec, SSHEndpoint


class FakeVM(Machine):
    def __init__(self, workdir: Path) -> None:
        super().__init__(MachineSpec(name="m", image=workdir / "i", ignition=FirstBootConfig("{}", "3.3.0"), ignition_fw_cfg="x",
                                     workdir=workdir))  # fmt: skip
        self.capabilities = frozenset({CAP_HARD_RESET})
        self.resets = 0
        self.cycles = 0
        self.port = 1
        self.console_path.write_text("")

    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        return SSHEndpoint("127.0.0.1", self.port, "core")

    def is_running(self) -> bool:
        return True

    def reset(self) -> None:
        self.resets += 1

    def power_cycle(self) -> None:
        self.cycles += 1
        self.port += 1

    def poweroff(self, timeout: float) -> None: ...

    def kill(self) -> None: ...

    def diagnose(self) -> str:
        return "run state running; RIP=000000000000fff0"

    def print(self, text: str) -> None:
        with self.console_path.open("a") as f:
            f.write(text)


@pytest.fixture
def guest(tmp_path):
    timeouts = dataclasses.replace(Timeouts.for_acceleration(Acceleration("kvm", "test")), restart=0.3)
    vm = FakeVM(tmp_path)
    # No SSH here: the guard reads the console and asks the hypervisor only.
    return GuestMachine(vm, pkey=None, timeouts=timeouts, distro=get_distro("railyard"), channel="stable")


def watch(guard: RestartGuard, seconds: float) -> None:
    """Call the guard as a banner wait does, for a while: it must keep saying the machine is alive."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert guard.alive()
        time.sleep(0.05)


def test_a_console_stuck_on_the_restart_line_gets_one_reset(guest):
    guest.vm.print(
        f"[  157.9] systemd-shutdown[1]: Failed to finalize file systems, ignoring.\n[  158.0] {RESTART_LINE}\n"
    )
    guard = RestartGuard(guest)
    poll(lambda: guest.vm.resets or (guard.alive() and None), timeout=5, interval=0.05, what="the reset")
    assert guest.vm.resets == 1
    [note] = guest.notes
    assert "no firmware output" in note
    assert "RIP=000000000000fff0" in note
    watch(guard, 1.0)  # stuck again: left to the reboot's own timeout
    assert guest.vm.resets == 1


def test_where_the_platform_can_the_stuck_machine_is_power_cycled_once(guest):
    guest.vm.capabilities = frozenset({CAP_HARD_RESET, CAP_POWER_CYCLE})
    guest.vm.print(f"[  158.0] {RESTART_LINE}\n")
    guard = RestartGuard(guest)
    # The banner wait is interrupted: SSH is forwarded from a new port after a power cycle.
    with pytest.raises(PowerCycled, match="power-cycled it"):
        watch(guard, 5.0)
    assert (guest.vm.cycles, guest.vm.resets, guest.vm.ssh_endpoint.port) == (1, 0, 2)
    [note] = guest.notes
    assert "no firmware output" in note
    assert "RIP=000000000000fff0" in note
    watch(guard, 1.0)  # stuck again: left to the reboot's own timeout
    assert guest.vm.cycles == 1


def test_firmware_output_after_the_restart_line_is_a_normal_reboot(guest):
    guest.vm.print(f"[  158.0] {RESTART_LINE}\n")
    guard = RestartGuard(guest)
    assert guard.alive()
    guest.vm.print('BdsDxe: loading Boot0001 "UEFI Misc Device"\n')
    watch(guard, 1.0)  # a long silence while the kernel boots with `quiet` is no stall
    assert guest.vm.resets == 0
    assert guest.notes == []


def test_a_machine_without_hard_reset_is_left_to_the_timeout(guest):
    guest.vm.capabilities = frozenset()
    guest.vm.print(f"[  158.0] {RESTART_LINE}\n")
    watch(RestartGuard(guest), 1.0)
    assert guest.vm.resets == 0


def test_after_a_reset_of_the_harness_a_console_that_prints_nothing_is_the_same_stall(guest):
    guest.vm.print("railyard login: ")
    guard = RestartGuard(guest, silent_at=len(guest.console_text()))
    poll(lambda: guest.vm.resets or (guard.alive() and None), timeout=5, interval=0.05, what="the reset")
    [note] = guest.notes
    assert "after the harness reset the machine" in note


def test_after_a_reset_any_firmware_output_means_the_machine_runs(guest):
    guest.vm.print("railyard login: ")
    guard = RestartGuard(guest, silent_at=len(guest.console_text()))
    assert guard.alive()
    guest.vm.print('BdsDxe: loading Boot0001 "UEFI Misc Device"\n')
    watch(guard, 1.0)  # then silent: the kernel boots quietly
    assert guest.vm.resets == 0
    assert guest.notes == []


def test_a_reboot_waits_for_the_restart_line_on_a_live_console(guest, monkeypatch):
    # Until the old boot prints its restart line its sshd may still take a login that then hangs.
    monkeypatch.setattr(FakeVM, "live_console", True)
    guest.timeouts = dataclasses.replace(guest.timeouts, restart=30.0)
    guest.vm.print("railyard login: ")
    mark = len(guest.console_text())
    shown = []

    def printer() -> None:
        time.sleep(0.5)
        shown.append(time.monotonic())
        guest.vm.print(f"[   38.8] {RESTART_LINE}\n")

    thread = threading.Thread(target=printer)
    thread.start()
    guest._await_shutdown(mark, timeout=30)
    done = time.monotonic()
    thread.join()
    assert shown
    assert 0 <= done - shown[0] < 0.5


def test_a_restart_line_of_an_earlier_boot_does_not_count(guest, monkeypatch):
    monkeypatch.setattr(FakeVM, "live_console", True)
    guest.vm.print(f"[   38.8] {RESTART_LINE}\nrailyard login: ")
    start = time.monotonic()
    guest.timeouts = dataclasses.replace(guest.timeouts, restart=30.0)
    guest._await_shutdown(len(guest.console_text()), timeout=0.6)  # gives up after half of it
    assert 0.25 <= time.monotonic() - start < 2


def test_no_wait_without_a_live_console(guest):
    start = time.monotonic()
    guest._await_shutdown(0, timeout=60)
    assert time.monotonic() - start < 0.1


@pytest.mark.parametrize(
    "line",
    [
        "railyard: ready for SSH\n",  # the default image, once sshd listens and a link has an address
        "\nRailyard 2.0.0 railyard ttyS0\n\nrailyard login: ",  # any distro's serial getty, later
    ],
)
def test_the_console_hints_that_ssh_is_about_to_answer(guest, monkeypatch, line):
    monkeypatch.setattr(FakeVM, "live_console", True)
    guest.vm.print(f"railyard: ready for SSH\n[   38.8] {RESTART_LINE}\n")  # the boot before: does not count
    hint = ssh_ready_hint(guest)
    assert hint is not None
    assert not hint()
    guest.vm.print("[    9.1] systemd-fstab-generator[99]: ...\n")
    assert not hint()
    guest.vm.print(line)
    assert hint()


def test_a_hint_written_in_two_pieces_is_found_and_stays_shown(guest, monkeypatch):
    # The console is read a piece at a time (only what it gained since the last look): a line the guest
    # wrote between two looks still counts.
    monkeypatch.setattr(FakeVM, "live_console", True)
    guest.vm.print("x" * 1000 + "\n")
    hint = ssh_ready_hint(guest)
    assert hint is not None
    guest.vm.print("railyard: rea")
    assert not hint()
    guest.vm.print("dy for SSH\n")
    assert hint()
    guest.vm.print("[   12.0] more of the boot\n")
    assert hint()


def test_no_hint_without_a_live_console(guest):
    assert ssh_ready_hint(guest) is None
