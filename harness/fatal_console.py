"""Ends a wait for a booting machine as soon as its console shows the boot failed for good (a panic, an
emergency shell, Ignition failing), with the console's evidence."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from harness.consolecheck import describe, fatal_boot_lines, strip_terminal_codes
from harness.errors import BootError

if TYPE_CHECKING:
    from harness.machine import GuestMachine


END_OF_BOOT = re.compile(
    r"reboot: (Restarting system|Power down)|Rebooting in \d+ seconds|end Kernel panic"
    r"|You are in emergency mode|Give root password|Press Enter for maintenance"
    r"|Cannot open access to console"
)
"""What a failed boot prints last: the restart or power-off that rd.emergency=reboot and panic= ask for (the
kernel's line, after every process and the journal's forwarding have ended), the end of a panic, an
emergency shell asking for its user (not its unit's start: the journal may still be behind then)."""


class FatalConsoleWatch:
    """Reads what a booting machine prints from the moment the wait began, and raises BootError with the
    evidence once the console shows the boot cannot succeed (a panic, an emergency shell, Ignition
    failing): such a machine never answers SSH, and waiting out the boot timeout under TCG costs minutes.

    The first fatal line is not the end of the evidence: systemd prints its `[FAILED]` lines on the console
    itself, while what Ignition logged reaches the console through the journal, later. So the watch raises
    when the failed boot has ended (it restarts, powers off, ends its panic or waits in an emergency shell),
    when the machine stops, or `END_GRACE` seconds after the first fatal line, whichever comes first."""

    CONTEXT_LINES = 15
    """Lines before the first fatal line."""
    AFTER_LINES = 60
    """Lines after it, at most, up to the end of the failed boot."""
    END_GRACE = 30.0

    def __init__(self, machine: GuestMachine) -> None:
        self.machine = machine
        self.offset = len(machine.console_text())
        self._fatal_since: float | None = None

    def check(self) -> None:
        """Raise BootError when the console printed a fatal line since the watch began and the failed boot
        has printed what it will (see the class)."""
        text = strip_terminal_codes(self.machine.console_text()[self.offset :])
        fatal = fatal_boot_lines(text, "console")
        if not fatal:
            return
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        first = next(i for i, line in enumerate(lines) if fatal[0].line in line)
        end = next((i for i in range(first, len(lines)) if END_OF_BOOT.search(lines[i])), None)
        now = time.monotonic()
        if self._fatal_since is None:
            self._fatal_since = now
        ended = end is not None or not self.machine.vm.is_running()
        if not ended and now - self._fatal_since < self.END_GRACE:
            return
        last = min(end if end is not None else len(lines) - 1, first + self.AFTER_LINES)
        context = "\n".join(lines[max(0, first - self.CONTEXT_LINES) : last + 1])
        raise BootError(
            f"{self.machine.name}: the boot failed for good, its console shows:\n{describe(fatal)}\n"
            f"--- console around the first of those lines, to the end of that boot ---\n{context}"
        )
