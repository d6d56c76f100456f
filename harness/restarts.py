"""Waiting through a machine's restart: the old boot's shutdown (the kernel's restart line on the console), a
new boot id over SSH, and the recovery of a restart stuck in the firmware (RestartGuard)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from harness.errors import BootError, RailyardError, SSHError
from harness.retry import poll
from harness.ssh import wait_for_banner_socket
from harness.ssh_jump import BannerStream
from platforms.base import CAP_HARD_RESET, CAP_POWER_CYCLE

if TYPE_CHECKING:
    from harness.machine import BootGate, GuestMachine

log = logging.getLogger(__name__)

# What Linux prints last before it resets the machine (pr_emerg: shown with `quiet` too).
RESTART_LINE = "reboot: Restarting system"
SHUTDOWN_POLL = 0.2
"""Seconds between looks at the console while a rebooting machine shuts down (a file read on this host)."""
UP_POLL = 1.0
"""Seconds between looks while waiting for a boot to go down by itself."""


SSH_READY_HINT = re.compile(r"\S login: |railyard: ready for SSH")
"""Console text that says a boot is about to answer SSH: a serial getty's login prompt (`railyard login: `,
`localhost login: `), or the line the default image prints once sshd listens and a link has a routable address
(`railyard-ssh-ready.service`; the prompt comes later, as serial getty waits for the boot's last job)."""


class ConsoleSince:
    """The text a console file gains from a point on, read a piece at a time: each look reads only the bytes
    written since the last one (a look every `HINT_POLL` costs next to nothing, however long the console).
    A match may span two pieces: the end of the last piece is searched again with the next."""

    KEEP = 256
    """Characters of the last piece searched again with the next (longer than any pattern looked for)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size
        except FileNotFoundError:
            self.offset = 0
        self.carry = ""

    def search(self, pattern: re.Pattern[str]) -> bool:
        """Whether `pattern` matches what the console gained since the last look (with the end of the piece
        read before it). False when nothing was added."""
        try:
            with self.path.open("rb") as console:
                console.seek(self.offset)
                piece = console.read()
        except FileNotFoundError:
            return False
        if not piece:
            return False
        self.offset += len(piece)
        text = self.carry + piece.decode(errors="replace")
        self.carry = text[-self.KEEP :]
        return pattern.search(text) is not None


def ssh_ready_hint(machine: GuestMachine) -> Callable[[], bool] | None:
    """For `wait_for_banner_socket`: whether the console showed, after now, that the boot is about to answer
    SSH (`SSH_READY_HINT`). None where the console is not a local file that is cheap to read. Once shown,
    the hint stays true."""
    if not machine.vm.live_console:
        return None
    since = ConsoleSince(machine.vm.console_path)
    shown = False

    def hint() -> bool:
        nonlocal shown
        shown = shown or since.search(SSH_READY_HINT)
        return shown

    return hint


def wait_for_restart_line(machine: GuestMachine, mark: int, timeout: float) -> None:
    """Where the console is live, wait for the kernel's restart line (console text after `mark`) before
    looking for the new boot: until then the old boot's sshd may still accept a login, and a session
    opened while the old system goes down hangs until its connection times out. A shutdown that shows
    no restart line within half the reboot's time (or `timeouts.restart`) is left to the new-boot wait."""
    if not machine.vm.live_console:
        return
    machine.close()
    deadline = time.monotonic() + min(timeout / 2, machine.timeouts.restart)
    while machine.vm.is_running() and RESTART_LINE not in machine.console_text()[mark:]:
        if time.monotonic() >= deadline:
            log.warning("%s: no restart line on the console after the reboot request", machine.name)
            return
        time.sleep(SHUTDOWN_POLL)


def wait_while_up(machine: GuestMachine, since: int, timeout: float) -> None:
    """Keep the harness's SSH session, and the host services forwarded over it, open while the machine's
    current boot runs, until that boot goes down by itself: the kernel's restart line on a live console
    after `since`, the session ending (where no console is live: a probe that fails), or the machine
    stopping. A guest that still needs the host before it restarts (an update agent downloading through a
    forward) keeps it. Returns at the latest after `timeout` seconds; what follows waits for the new boot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not machine.vm.is_running():
            return
        if machine.vm.live_console:
            if RESTART_LINE in machine.console_text()[since:]:
                return
        elif not machine.session_answers():
            return
        time.sleep(UP_POLL)
    log.warning("%s: its boot did not go down within %.0f s", machine.name, timeout)


def wait_for_new_boot(
    machine: GuestMachine,
    old: str,
    timeout: float,
    *,
    silent_at: int | None,
    login: Callable[[BannerStream], object],
    gate: BootGate,
) -> str:
    """Wait until `machine` answers SSH in a boot whose id is not `old`, logged in with `login` over the
    connection that carried the banner, and return the new boot id. Admitted by `gate` (see `BootGate`); a
    restart stuck in the firmware is recovered once (see `RestartGuard`, and `silent_at` there).

    Raises WaitTimeout when no new boot answers within `timeout` seconds, BootError when the machine stops
    running.
    """
    deadline = time.monotonic() + timeout
    guard = RestartGuard(machine, silent_at=silent_at)
    hint = ssh_ready_hint(machine)

    def new_boot() -> str | None:
        if not machine.vm.is_running():
            raise BootError(f"{machine.name} stopped running while rebooting")
        ep = machine.vm.ssh_endpoint
        try:
            _, sock = wait_for_banner_socket(
                ep.host, ep.port, max(deadline - time.monotonic(), 1.0), alive=guard.alive, via=ep.via,
                hint=hint, trusted_hint=machine.ready_line, at_once=False,
            )  # fmt: skip
        except PowerCycled:
            return None  # SSH is forwarded from somewhere new: wait again there
        try:
            login(sock)  # the login reuses the banner's connection
            current = machine.boot_id()
        except (SSHError, OSError, paramiko.SSHException):
            machine.close()
            raise
        if current == old:
            machine.close()
            return None
        return current

    with gate():
        return poll(
            new_boot, timeout=timeout, interval=2.0, what=f"{machine.name} to come back with a new boot id"
        )


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
