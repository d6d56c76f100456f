"""The guest API tests use: run commands, wait for conditions, reboot, copy files, read logs.

Every wait has a timeout whose default scales with acceleration; nothing sleeps where it can poll.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko

from harness.acceleration import Timeouts
from harness.errors import BootError, CommandError, RailyardError, SSHError, WaitTimeout
from harness.retry import poll
from harness.ssh import CommandResult, SSHConnection, wait_for_banner
from platforms.base import CAP_HARD_RESET, CAP_POWER_CYCLE

if TYPE_CHECKING:
    from harness.distros.base import Distro
    from harness.distros.os import OSHelpers
    from platforms.base import Machine

log = logging.getLogger(__name__)

# Admits a boot (see harness.admission): where slots are held only while booting, reboots wait for one too.
BootGate = Callable[[], AbstractContextManager[Any]]


class GuestMachine:
    """A booted machine as a test sees it. Commands run as the distro's default user over SSH."""

    __test__ = False

    def __init__(
        self,
        vm: Machine,
        *,
        pkey: paramiko.PKey,
        timeouts: Timeouts,
        distro: Distro,
        channel: str,
        boot_gate: BootGate | None = None,
    ) -> None:
        self.vm = vm
        self.distro = distro
        self.channel = channel
        self.timeouts = timeouts
        self._pkey = pkey
        self._ssh: SSHConnection | None = None
        self._boot_gate: BootGate = boot_gate or nullcontext
        self.boot_ids: list[str] = []
        self._os: OSHelpers | None = None
        self.private_address: str | None = None
        """The address on the cluster's private network, when the machine has one."""
        self.notes: list[str] = []
        """What the harness did to this machine that a test's report should say (e.g. a recovery)."""

    def __repr__(self) -> str:
        return f"<GuestMachine {self.name} on {self.vm.ssh_endpoint.host}:{self.vm.ssh_endpoint.port}>"

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def os(self) -> OSHelpers:
        """Distro helpers: booted slot, version, update, rollback (same calls on every distro)."""
        if self._os is None:
            from harness.distros.os import os_helpers

            self._os = os_helpers(self)
        return self._os

    # -- connection and boot -------------------------------------------------------------------------

    def wait_for_ssh(self, timeout: float | None = None) -> None:
        """Wait until the guest's sshd answers and a session opens; records the boot id."""
        timeout = timeout if timeout is not None else self.timeouts.boot
        deadline = time.monotonic() + timeout
        ep = self.vm.ssh_endpoint
        wait_for_banner(ep.host, ep.port, timeout, alive=self.vm.is_running)

        def connect() -> SSHConnection:
            conn = SSHConnection(ep, self._pkey, connect_timeout=30.0)
            conn.connect()
            return conn

        self._ssh = poll(
            connect, timeout=max(deadline - time.monotonic(), 30.0), what=f"SSH login to {self.name}"
        )
        self.boot_ids.append(self.boot_id())
        log.info("%s: SSH up (boot %s)", self.name, self.boot_ids[-1][:8])

    def _connection(self) -> SSHConnection:
        if self._ssh is None or not self._ssh.is_active:
            if self._ssh is not None:
                self._ssh.close()
            self._ssh = SSHConnection(self.vm.ssh_endpoint, self._pkey, connect_timeout=30.0)
            self._ssh.connect()
        return self._ssh

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None

    def boot_id(self) -> str:
        return self.succeed("cat /proc/sys/kernel/random/boot_id").strip()

    # -- commands -------------------------------------------------------------------------------------

    def execute(
        self, command: str, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        """Run a shell command; never raises for a non-zero exit status."""
        timeout = timeout if timeout is not None else self.timeouts.command
        log.debug("%s$ %s", self.name, command)
        return self._connection().run(command, timeout=timeout, stdin=stdin)

    def succeed(self, command: str, timeout: float | None = None, stdin: bytes | None = None) -> str:
        """Run a command that must exit 0; returns its stdout."""
        result = self.execute(command, timeout=timeout, stdin=stdin)
        if result.status != 0:
            raise CommandError(command, result.status, result.stdout, result.stderr, self.name)
        return result.stdout

    def fail(self, command: str, timeout: float | None = None) -> str:
        """Run a command that must exit non-zero; returns its stderr."""
        result = self.execute(command, timeout=timeout)
        if result.status == 0:
            raise CommandError(command, 0, result.stdout, result.stderr + "\n(expected to fail)", self.name)
        return result.stderr

    def wait_until_succeeds(self, command: str, timeout: float | None = None) -> str:
        """Poll a command until it exits 0; returns its stdout."""
        timeout = timeout if timeout is not None else self.timeouts.command

        def attempt() -> str | None:
            result = self.execute(command, timeout=timeout)
            if result.status != 0:
                raise CommandError(command, result.status, result.stdout, result.stderr, self.name)
            return result.stdout

        return poll(attempt, timeout=timeout, what=f"`{command}` to succeed on {self.name}")

    def wait_until_fails(self, command: str, timeout: float | None = None) -> str:
        timeout = timeout if timeout is not None else self.timeouts.command

        def attempt() -> str | None:
            result = self.execute(command, timeout=timeout)
            return result.stderr if result.status != 0 else None

        return poll(attempt, timeout=timeout, what=f"`{command}` to fail on {self.name}")

    def wait_for_unit(self, unit: str, timeout: float | None = None) -> None:
        """Wait until a systemd unit is active; fail at once if it enters `failed`."""
        timeout = timeout if timeout is not None else self.timeouts.settle
        quoted = shlex.quote(unit)

        def attempt() -> bool | None:
            state = self.execute(f"systemctl is-active {quoted}").stdout.strip()
            if state == "active":
                return True
            if state == "failed":
                status = self.execute(f"systemctl status --no-pager -l {quoted}").stdout
                raise WaitTimeout(f"unit {unit} failed on {self.name}:\n{status}")
            return None

        poll(attempt, timeout=timeout, what=f"unit {unit} to become active on {self.name}")

    def settle(self, timeout: float | None = None) -> str:
        """Wait for `systemctl is-system-running` to leave starting; returns the state.

        A `degraded` system raises with the list of failed units.
        """
        timeout = timeout if timeout is not None else self.timeouts.settle

        def attempt() -> str | None:
            state = self.execute("systemctl is-system-running").stdout.strip()
            return None if state in ("initializing", "starting", "") else state

        state = poll(attempt, timeout=timeout, what=f"systemd on {self.name} to finish starting")
        if state != "running":
            failed = self.execute("systemctl list-units --failed --no-legend --plain --no-pager").stdout
            raise BootError(f"{self.name}: system is {state!r} after boot; failed units:\n{failed.strip()}")
        return state

    # -- power ---------------------------------------------------------------------------------------

    def reboot(self, timeout: float | None = None) -> None:
        """Reboot from inside the guest and wait for a *new* boot id (never sleeps on a guess)."""
        old = self.boot_id()
        log.info("%s: rebooting (boot %s)", self.name, old[:8])
        self.execute("sudo systemctl reboot", timeout=30.0)
        self._await_new_boot(old, timeout)

    def hard_reset(self, timeout: float | None = None) -> None:
        """Cut the power and start again (no clean shutdown)."""
        self._restart_from_host(self.vm.reset, timeout)

    def power_cycle(self, timeout: float | None = None) -> None:
        """Cold boot: the machine's hypervisor process stops and a new one starts on the same disks."""
        self._restart_from_host(self.vm.power_cycle, timeout)

    def _restart_from_host(self, restart: Callable[[], None], timeout: float | None) -> None:
        old = self.boot_ids[-1] if self.boot_ids else ""
        self.close()
        silent_at = len(self.console_text())
        restart()
        self._await_new_boot(old, timeout, silent_at=silent_at)

    def wait_for_reboot(self, timeout: float | None = None) -> None:
        """Wait for a reboot the guest starts by itself (e.g. a failed trial boot)."""
        self._await_new_boot(self.boot_ids[-1] if self.boot_ids else "", timeout)

    def _await_new_boot(self, old: str, timeout: float | None, silent_at: int | None = None) -> None:
        timeout = timeout if timeout is not None else self.timeouts.reboot
        self.close()
        deadline = time.monotonic() + timeout
        guard = RestartGuard(self, silent_at=silent_at)

        def new_boot() -> str | None:
            if not self.vm.is_running():
                raise BootError(f"{self.name} stopped running while rebooting")
            ep = self.vm.ssh_endpoint
            try:
                wait_for_banner(ep.host, ep.port, max(deadline - time.monotonic(), 1.0), alive=guard.alive)
            except PowerCycled:
                return None  # SSH is forwarded from somewhere new: wait again there
            try:
                current = self.boot_id()
            except (SSHError, OSError, paramiko.SSHException):
                self.close()
                raise
            if current == old:
                self.close()
                return None
            return current

        with self._boot_gate():
            current = poll(
                new_boot, timeout=timeout, interval=2.0, what=f"{self.name} to come back with a new boot id"
            )
        self.boot_ids.append(current)
        log.info("%s: up again (boot %s)", self.name, current[:8])

    # -- files and logs ------------------------------------------------------------------------------

    def copy_to(self, local: Path | str, remote: str, mode: int | None = None) -> None:
        self._connection().put(Path(local), remote, mode)

    def copy_from(self, remote: str, local: Path | str) -> Path:
        local = Path(local)
        self._connection().get(remote, local)
        return local

    def journal(self, args: str = "-b", timeout: float | None = None) -> str:
        """The journal (of this boot by default), as root, without a pager."""
        return self.succeed(f"sudo journalctl --no-pager -o short-monotonic {args}", timeout=timeout)

    def console_text(self) -> str:
        """Everything the serial console printed so far, across boots."""
        try:
            return self.vm.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


__all__ = ["CommandResult", "GuestMachine", "RailyardError"]


# What Linux prints last before it resets the machine (pr_emerg: shown with `quiet` too).
RESTART_LINE = "reboot: Restarting system"


class PowerCycled(Exception):
    """Raised out of a banner wait by RestartGuard: the machine was power-cycled, its SSH endpoint changed."""


class RestartGuard:
    """Watches a rebooting machine for a restart that never gets out of the firmware.

    After the kernel prints its restart line, firmware output follows within seconds. Under TCG on these
    hosts a restart now and then stops right there: QEMU runs, the console stays silent for good, and a
    warm reset (QMP `system_reset`) ends the same way. When the console has ended on the restart line for
    `timeouts.restart` seconds, the guard recovers the machine once: a power cycle (a new hypervisor process
    on the same disks: the kernel had finished its shutdown) where the platform can, else a hard reset. It
    logs what the hypervisor saw and leaves a note for the test's report. A second stall is left to the
    reboot's timeout. After a reset or power cycle of the harness's own (`silent_at`: the console's length
    when it was issued), a console that prints nothing at all for as long counts as the same stall.
    """

    def __init__(self, machine: GuestMachine, silent_at: int | None = None) -> None:
        self.machine = machine
        self.silent_at = silent_at
        self.used = False
        self._length = -1
        self._changed = time.monotonic()

    def alive(self) -> bool:
        """For `wait_for_banner`: whether the machine still runs (recovering it first if it is stuck).

        Raises PowerCycled after a power cycle, for the caller to wait on the new SSH endpoint.
        """
        m = self.machine
        if not m.vm.is_running():
            return False
        text = m.console_text()
        now = time.monotonic()
        if len(text) != self._length:
            self._length, self._changed = len(text), now
            if len(text) != self.silent_at:
                return True
        if now - self._changed <= m.timeouts.restart or self.used:
            return True
        if len(text) == self.silent_at:
            after = "the harness reset the machine"
        elif text.rstrip().endswith(RESTART_LINE):
            after = "the kernel restarted the machine"
        else:
            return True
        cycle = CAP_POWER_CYCLE in m.vm.capabilities
        if not cycle and CAP_HARD_RESET not in m.vm.capabilities:
            return True
        action, recover = ("power-cycled it", m.vm.power_cycle) if cycle else ("reset it", m.vm.reset)
        self.used = True
        note = (
            f"{m.name}: no firmware output {now - self._changed:.0f} s after {after} "
            f"({m.vm.diagnose() or 'no hypervisor diagnostics'}); {action}"
        )
        try:
            recover()
        except RailyardError as exc:
            note += f" failed: {exc}"
            cycle = False
        log.warning("%s", note)
        m.notes.append(note)
        if cycle:
            raise PowerCycled(note)
        return m.vm.is_running()
