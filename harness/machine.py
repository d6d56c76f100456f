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
from harness.errors import BootError, CommandError, RailyardError, SessionLost, WaitTimeout
from harness.fatal_console import FatalConsoleWatch
from harness.forward import RemoteForward
from harness.machine_steps import step
from harness.restarts import (
    RESTART_LINE,
    SHUTDOWN_POLL,
    PowerCycled,
    RestartGuard,
    ssh_ready_hint,
    wait_for_new_boot,
    wait_for_restart_line,
    wait_while_up,
)
from harness.retry import poll
from harness.ssh import CommandResult, SSHConnection, wait_for_banner_socket
from harness.ssh_jump import BannerStream

if TYPE_CHECKING:
    from harness.distros.base import Distro
    from harness.distros.guest import GuestOS
    from harness.warm import StartRecord
    from platforms.base import Machine

log = logging.getLogger(__name__)


def _quoted(command: str, limit: int = 120) -> str:
    text = command if len(command) <= limit else command[: limit - 3] + "..."
    return repr(text)


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
        ready_line: bool = False,
    ) -> None:
        self.vm = vm
        self.ready_line = ready_line
        """Whether every boot of this machine says on its console when SSH is up (its image has the feature
        images.metadata.FEATURE_SSH_READY_LINE): where its console is live, the waits for SSH then probe slowly
        until the line shows."""
        self.distro = distro
        self.channel = channel
        self.timeouts = timeouts
        self._pkey = pkey
        self._ssh: SSHConnection | None = None
        self._boot_gate: BootGate = boot_gate or nullcontext
        self.boot_ids: list[str] = []
        self._os: GuestOS | None = None
        self.notes: list[str] = []
        """What the harness did to this machine that a test's report should say (e.g. a recovery)."""
        self._forwards: list[RemoteForward] = []
        self.start: StartRecord | None = None
        """How the machine came up (cold, or restored from a checkpoint) and how long it took."""
        self._boot_console_mark = 0  # the console's length when the current boot answered SSH

    def __repr__(self) -> str:
        return f"<GuestMachine {self.name} on {self.vm.ssh_endpoint.host}:{self.vm.ssh_endpoint.port}>"

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def private_address(self) -> str | None:
        """Where the other machines of its private network (`cluster(n)`) reach this one: the static
        address of its private NIC on QEMU and libvirt (None when booted without one), the address in the
        run's subnet on a cloud."""
        return self.vm.private_address

    @property
    def os(self) -> GuestOS:
        """The distro's helpers: booted slot, version, update, rollback (the same calls on every distro)."""
        if self._os is None:
            self._os = self.distro.guest(self)
        return self._os

    # -- connection and boot -------------------------------------------------------------------------

    def wait_for_ssh(self, timeout: float | None = None, *, booting: bool = False) -> None:
        """Wait until the guest's sshd answers and a session opens, and record the boot id.

        `booting`: the guest has only begun to boot (a cold boot, a restore from before Ignition), so it
        cannot answer at once; where its image shows a ready line on every boot, no attempt is made before
        that line (see `wait_for_banner_socket`). Default timeout: `timeouts.boot` (scaled by acceleration).
        Raises WaitTimeout when SSH does not answer in time, BootError when the machine stops running
        meanwhile.
        """
        with step(self.name, "wait for SSH"):
            self._wait_for_ssh(timeout, booting)

    def _wait_for_ssh(self, timeout: float | None, booting: bool) -> None:
        timeout = timeout if timeout is not None else self.timeouts.boot
        deadline = time.monotonic() + timeout
        ep = self.vm.ssh_endpoint
        watch = FatalConsoleWatch(self) if self.vm.live_console else None

        def alive() -> bool:
            if watch is not None:
                watch.check()
            return self.vm.is_running()

        _, banner_socket = wait_for_banner_socket(
            ep.host, ep.port, timeout, alive=alive, via=ep.via, hint=ssh_ready_hint(self),
            trusted_hint=self.ready_line, at_once=not booting,
        )  # fmt: skip
        first: list[BannerStream] = [banner_socket]  # the first login reuses the banner's connection

        def connect() -> SSHConnection:
            conn = SSHConnection(ep, self._pkey, connect_timeout=30.0, forwards=self._forwards)
            conn.connect(first.pop() if first else None)
            return conn

        self._ssh = poll(
            connect, timeout=max(deadline - time.monotonic(), 30.0), what=f"SSH login to {self.name}"
        )
        self.boot_ids.append(self.boot_id())
        self._boot_console_mark = len(self.console_text())
        log.info("%s: SSH up (boot %s)", self.name, self.boot_ids[-1][:8])

    def _connection(self, sock: BannerStream | None = None) -> SSHConnection:
        """The SSH connection, logged in anew (over `sock` when given) when there is none."""
        if self._ssh is None or not self._ssh.is_active:
            if self._ssh is not None:
                self._ssh.close()
            self._ssh = SSHConnection(
                self.vm.ssh_endpoint, self._pkey, connect_timeout=30.0, forwards=self._forwards
            )
            self._ssh.connect(sock)
        elif sock is not None:
            sock.close()
        return self._ssh

    def forward_host_service(self, host_port: int, guest_port: int | None = None) -> int:
        """Make a service on the host's 127.0.0.1:`host_port` reachable in the guest at its own
        127.0.0.1:`guest_port` (default: the same number), through the harness's SSH connection, now and
        after every reboot; return the guest's port. Works on every platform the harness reaches by SSH.

        While the harness is not connected (early in a boot) the guest gets "connection refused" and must
        retry. No timeout of its own; raises SSHError when the guest's sshd refuses the forward.
        """
        forward = RemoteForward(guest_port=guest_port or host_port, host_port=host_port)
        with step(self.name, f"forward {forward}"):
            # Connect first: a new connection asks for the forwards it is given, so this one is added after.
            self._connection().add_forward(forward)
            if forward not in self._forwards:
                self._forwards.append(forward)
        return forward.guest_port

    def close(self) -> None:
        """Close the SSH connection (the next command opens a new one). Never raises."""
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None

    def boot_id(self) -> str:
        """The kernel's id of the current boot (`/proc/sys/kernel/random/boot_id`). Raises like `succeed`."""
        return self.succeed("cat /proc/sys/kernel/random/boot_id").strip()

    # -- commands -------------------------------------------------------------------------------------

    def execute(
        self, command: str, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        """Run a shell command as the default user; return its `CommandResult(status, stdout, stderr)`.

        Default timeout: `timeouts.command`. Never raises for a non-zero exit status; raises SSHError when
        the connection fails and WaitTimeout when the command outlives its timeout.
        """
        with step(self.name, f"execute {_quoted(command)}"):
            return self._run(command, timeout, stdin)

    def succeed(self, command: str, timeout: float | None = None, stdin: bytes | None = None) -> str:
        """Run a command that must exit 0; return its stdout.

        Default timeout: `timeouts.command`. Raises CommandError (with the exit status, stdout and stderr)
        when it exits non-zero, and what `execute` raises.
        """
        with step(self.name, f"succeed {_quoted(command)}"):
            result = self._run(command, timeout, stdin)
            if result.status != 0:
                raise CommandError(command, result.status, result.stdout, result.stderr, self.name)
            return result.stdout

    def _run(self, command: str, timeout: float | None, stdin: bytes | None = None) -> CommandResult:
        timeout = timeout if timeout is not None else self.timeouts.command
        return self._connection().run(command, timeout=timeout, stdin=stdin)

    def fail(self, command: str, timeout: float | None = None) -> str:
        """Run a command that must exit non-zero; return its stderr.

        Default timeout: `timeouts.command`. Raises CommandError when it exits 0, and what `execute` raises.
        """
        with step(self.name, f"fail {_quoted(command)}"):
            result = self._run(command, timeout)
            if result.status == 0:
                raise CommandError(
                    command, 0, result.stdout, result.stderr + "\n(expected to fail)", self.name
                )
            return result.stderr

    def wait_until_succeeds(self, command: str, timeout: float | None = None) -> str:
        """Run a command until it exits 0 (polling, never sleeping on a guess); return its stdout.

        Default timeout: `timeouts.command`, for all attempts together. Raises WaitTimeout naming the last
        failure when it never succeeds.
        """
        timeout = timeout if timeout is not None else self.timeouts.command

        def attempt() -> str | None:
            result = self._run(command, timeout)
            if result.status != 0:
                raise CommandError(command, result.status, result.stdout, result.stderr, self.name)
            return result.stdout

        with step(self.name, f"wait until {_quoted(command)} succeeds"):
            return poll(attempt, timeout=timeout, what=f"`{command}` to succeed on {self.name}")

    def wait_until_fails(self, command: str, timeout: float | None = None) -> str:
        """Run a command until it exits non-zero; return its stderr.

        Default timeout: `timeouts.command`, for all attempts together. Raises WaitTimeout when it keeps
        succeeding.
        """
        timeout = timeout if timeout is not None else self.timeouts.command

        def attempt() -> str | None:
            result = self._run(command, timeout)
            return result.stderr if result.status != 0 else None

        with step(self.name, f"wait until {_quoted(command)} fails"):
            return poll(attempt, timeout=timeout, what=f"`{command}` to fail on {self.name}")

    def wait_for_unit(self, unit: str, timeout: float | None = None) -> None:
        """Wait until a systemd unit is active. Returns nothing.

        Default timeout: `timeouts.settle`. Raises WaitTimeout at once (with `systemctl status`) when the
        unit enters `failed`, and when it is not active in time.
        """
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

        with step(self.name, f"wait for unit {unit}"):
            poll(attempt, timeout=timeout, what=f"unit {unit} to become active on {self.name}")

    def wait_for_links(self, *names: str, timeout: float = 120.0) -> None:
        """Wait until networkd has configured each link (its `networkctl status` says `configured`).

        Each link gets up to `timeout` seconds, in order; raises WaitTimeout with the last output when one
        is still not configured.
        """
        for name in names:
            self.wait_until_succeeds(
                f"networkctl status {shlex.quote(name)} --no-pager | grep -q 'State: .*configured'",
                timeout=timeout,
            )

    def settle(self, timeout: float | None = None) -> str:
        """Wait for `systemctl is-system-running` to leave `starting`; return the state (`running`).

        Default timeout: `timeouts.settle`. Raises BootError with the list of failed units when the system
        ends up `degraded` (or any state but `running`), WaitTimeout when it is still starting.
        """
        timeout = timeout if timeout is not None else self.timeouts.settle

        def attempt() -> str | None:
            state = self._run("systemctl is-system-running", None).stdout.strip()
            return None if state in ("initializing", "starting", "") else state

        with step(self.name, "settle"):
            state = poll(attempt, timeout=timeout, what=f"systemd on {self.name} to finish starting")
        if state != "running":
            failed = self.execute("systemctl list-units --failed --no-legend --plain --no-pager").stdout
            raise BootError(f"{self.name}: system is {state!r} after boot; failed units:\n{failed.strip()}")
        return state

    def sync_clock(self, timeout: float | None = None) -> float:
        """Set the guest's wall clock to the host's (a machine restored from a checkpoint resumes with the
        clock of the moment it was saved); return how far off it was, in seconds (guest minus host).

        Default timeout: `timeouts.command`. Raises CommandError when the guest refuses to set its clock.
        """
        with step(self.name, "set the clock to the host's"):
            # One round trip: the guest prints its clock, then sets it to the host's time of sending (off
            # by the time the command takes to start sudo, a tenth of a second under TCG).
            sent = time.time()
            command = f"date +%s.%N && sudo -n date -u -s @{sent:.3f} >/dev/null"
            result = self._run(command, timeout)
            if result.status != 0:
                raise CommandError(command, result.status, result.stdout, result.stderr, self.name)
            offset = float(result.stdout.split()[0]) - sent
        return offset

    # -- power ---------------------------------------------------------------------------------------

    def reboot(self, timeout: float | None = None) -> None:
        """Reboot from inside the guest (`systemctl reboot`) and wait for a *new* boot id, never sleeping on a
        guess. Returns once SSH answers in the new boot.

        Default timeout: `timeouts.reboot`. Raises WaitTimeout when no new boot answers in time (the test's
        report then says whether the harness recovered a restart stuck in the firmware), BootError when the
        machine stops running.
        """
        with step(self.name, "reboot"):
            old = self.boot_id()
            log.info("%s: rebooting (boot %s)", self.name, old[:8])
            timeout = timeout if timeout is not None else self.timeouts.reboot
            started = time.monotonic()
            mark = len(self.console_text())
            try:
                self._run("sudo systemctl reboot", 30.0)
            except SessionLost as exc:
                # The shutdown may end this session before systemctl's exit status gets out (a guest whose
                # sshd runs per connection and is stopped as the shutdown starts, as on Flatcar). Whether
                # the machine restarts is what the console and the new boot id below tell.
                log.info("%s: the reboot ended the SSH session first (%s)", self.name, exc)
            self._await_shutdown(mark, timeout)
            self._await_new_boot(old, max(timeout - (time.monotonic() - started), 1.0))

    def _await_shutdown(self, mark: int, timeout: float) -> None:
        """Where the console is live, wait for the restart line of this reboot's shutdown (see
        `wait_for_restart_line`)."""
        wait_for_restart_line(self, mark, timeout)

    def hard_reset(self, timeout: float | None = None) -> None:
        """Cut the power and start again at once (a warm reset, no clean shutdown); wait for the new boot.

        Needs the `hard-reset` capability. Default timeout: `timeouts.reboot`. Raises like `reboot`.
        """
        with step(self.name, "hard reset"):
            self._restart_from_host(self.vm.reset, timeout)

    def power_cycle(self, timeout: float | None = None) -> None:
        """Cold boot: the machine's hypervisor process stops and a new one starts on the same disks and
        firmware variables; wait for the new boot.

        Needs the `power-cycle` capability. Default timeout: `timeouts.reboot`. Raises like `reboot`.
        """
        with step(self.name, "power cycle"):
            self._restart_from_host(self.vm.power_cycle, timeout)

    def _restart_from_host(self, restart: Callable[[], None], timeout: float | None) -> None:
        old = self.boot_ids[-1] if self.boot_ids else ""
        self.close()
        silent_at = len(self.console_text())
        restart()
        self._await_new_boot(old, timeout, silent_at=silent_at)

    def wait_for_reboot(self, timeout: float | None = None) -> None:
        """Wait for a reboot the guest starts by itself (e.g. a failed trial boot, an update agent that
        reboots into an update it installs): a new boot id over SSH. Until the current boot goes down, the
        harness's session stays open, and with it the host services forwarded to the guest.

        Default timeout: `timeouts.reboot`, for all of it (pass more when the guest has work to do before
        it reboots). Raises like `reboot`.
        """
        with step(self.name, "wait for a reboot"):
            timeout = timeout if timeout is not None else self.timeouts.reboot
            started = time.monotonic()
            wait_while_up(self, self._boot_console_mark, timeout)
            remaining = max(timeout - (time.monotonic() - started), 1.0)
            self._await_new_boot(self.boot_ids[-1] if self.boot_ids else "", remaining)

    def session_answers(self) -> bool:
        """Whether the current session still runs a command (a short probe; never raises)."""
        if self._ssh is None or not self._ssh.is_active:
            return False
        try:
            return self._ssh.run("true", timeout=20.0).status == 0
        except (RailyardError, OSError, paramiko.SSHException):
            return False

    def _await_new_boot(self, old: str, timeout: float | None, silent_at: int | None = None) -> None:
        timeout = timeout if timeout is not None else self.timeouts.reboot
        self.close()
        current = wait_for_new_boot(
            self, old, timeout, silent_at=silent_at, login=self._connection, gate=self._boot_gate
        )
        self.boot_ids.append(current)
        self._boot_console_mark = len(self.console_text())
        log.info("%s: up again (boot %s)", self.name, current[:8])

    # -- files and logs ------------------------------------------------------------------------------

    def copy_to(self, local: Path | str, remote: str, mode: int | None = None) -> None:
        """Copy a host file into the guest over SFTP, as the default user (`mode`: its permissions).

        No timeout of its own (SFTP's). Raises SSHError when the copy fails.
        """
        with step(self.name, f"copy {local} to {remote}"):
            self._connection().put(Path(local), remote, mode)

    def copy_from(self, remote: str, local: Path | str) -> Path:
        """Copy a guest file to the host over SFTP; return the local path. Raises SSHError on failure."""
        local = Path(local)
        with step(self.name, f"copy {remote} from the guest"):
            self._connection().get(remote, local)
        return local

    def journal(self, args: str = "-b", timeout: float | None = None) -> str:
        """The journal (of this boot by default, `args` as for journalctl), read as root, without a pager.

        Default timeout: `timeouts.command`. Raises like `succeed`.
        """
        return self.succeed(f"sudo journalctl --no-pager -o short-monotonic {args}", timeout=timeout)

    def console_text(self) -> str:
        """Everything the serial console printed so far, across boots (read from the host; never raises)."""
        try:
            return self.vm.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


__all__ = [
    "RESTART_LINE",
    "SHUTDOWN_POLL",
    "BootGate",
    "CommandResult",
    "FatalConsoleWatch",
    "GuestMachine",
    "PowerCycled",
    "RailyardError",
    "RestartGuard",
    "step",
]
