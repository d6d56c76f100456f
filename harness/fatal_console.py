"""Ends a wait for a booting machine as soon as its console shows the boot failed for good (a panic, an
emergency shell, Ignition failing), with the console's evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.consolecheck import describe, fatal_boot_lines, strip_terminal_codes
from harness.errors import BootError

if TYPE_CHECKING:
    from harness.machine import GuestMachine


class FatalConsoleWatch:
    """Reads what a booting machine prints from the moment the wait began, and raises BootError with the
    evidence as soon as the console shows the boot cannot succeed (a panic, an emergency shell, Ignition
    failing): such a machine never answers SSH, and waiting out the boot timeout under TCG costs minutes."""

    CONTEXT_LINES = 15

    def __init__(self, machine: GuestMachine) -> None:
        self.machine = machine
        self.offset = len(machine.console_text())

    def check(self) -> None:
        """Raise BootError when the console printed a fatal line since the watch began."""
        text = strip_terminal_codes(self.machine.console_text()[self.offset :])
        fatal = fatal_boot_lines(text, "console")
        if not fatal:
            return
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        first = next(i for i, line in enumerate(lines) if fatal[0].line in line)
        context = "\n".join(lines[max(0, first - self.CONTEXT_LINES) : first + 1])
        raise BootError(
            f"{self.machine.name}: the boot failed for good, its console shows:\n{describe(fatal)}\n"
            f"--- console up to the first of those lines ---\n{context}"
        )
