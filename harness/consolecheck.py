"""Scan consoles and journals for signs of a broken boot: panics, oopses, emergency shells, failed units."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ConsolePattern:
    description: str
    regex: re.Pattern[str]
    # A guest that does not run for a while reports this by itself: under TCG, a host that starves the
    # emulator's threads for seconds (as a loaded or nested host does) makes it so without any fault.
    starvation: bool = False


def _p(description: str, pattern: str, *, starvation: bool = False) -> ConsolePattern:
    return ConsolePattern(description, re.compile(pattern), starvation)


# What a healthy boot never prints. Kept narrow: each pattern names a real failure, not a warning.
PATTERNS: tuple[ConsolePattern, ...] = (
    _p("kernel panic", r"Kernel panic - not syncing"),
    _p("kernel BUG", r"kernel BUG at |BUG: (unable to handle|kernel NULL pointer|scheduling while atomic)"),
    _p("soft lockup", r"BUG: soft lockup", starvation=True),
    _p(
        "RCU stall",
        r"rcu(_\w+)? (self-)?detected stalls?|rcu: INFO: rcu_\w+ (self-)?detected stall",
        starvation=True,
    ),
    _p("hung task", r"hung_task_timeout_secs|blocked for more than \d+ seconds", starvation=True),
    _p("kernel oops", r"\bOops(: |#)"),
    _p("general protection fault", r"general protection fault"),
    _p("kernel warning", r"WARNING: CPU: \d+ PID: \d+"),
    _p("segfault", r"\bsegfault at\b"),
    _p(
        "emergency shell",
        r"(Entering emergency mode|Started .*[Ee]mergency [Ss]hell|You are in emergency mode)",
    ),
    _p("dracut failure", r"dracut(-initqueue)?\[\d+\]: (FATAL|Warning: dracut-initqueue: timeout)"),
    _p(
        "Ignition failure",
        # fetch-offline's "failed to fetch config: resource requires networking" is how Ignition asks for the
        # network (its fetch stage then runs): not a failure.
        r"ignition\[\d+\]: .*(CRITICAL|failed to fetch config(?!: resource requires networking)|Ignition failed)"
        r"|^CRITICAL : Ignition failed"
        r"|Failed to start ignition-\S+\.service",
    ),
    _p("failed unit", r"Failed to start .+"),
    _p("failed dependency", r"Dependency failed for .+"),
    # systemd breaks an ordering cycle by dropping a job, which one depending on load order: a unit that
    # starts at one boot and not at the next.
    _p("systemd ordering cycle", r"Found ordering cycle on "),
    _p("systemd coredump", r"systemd-coredump\[\d+\]: Process \d+ .* dumped core"),
)


@dataclass(frozen=True)
class ConsoleMatch:
    source: str
    description: str
    line: str
    starvation: bool = False

    def __str__(self) -> str:
        return f"{self.source}: {self.description}: {self.line}"


TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
"""Colours, cursor moves and charset switches in what a console printed (systemd's status lines)."""


def strip_terminal_codes(text: str) -> str:
    return TERMINAL_CODES.sub("", text)


def scan(text: str, source: str, *, ignore: Iterable[str] = ()) -> list[ConsoleMatch]:
    """Every line of `text` that matches a failure pattern, unless it matches one of `ignore` (regexes)."""
    ignored = [re.compile(p) for p in ignore]
    matches: list[ConsoleMatch] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or any(i.search(line) for i in ignored):
            continue
        for pattern in PATTERNS:
            if pattern.regex.search(line):
                matches.append(ConsoleMatch(source, pattern.description, line, pattern.starvation))
                break
    return matches


FATAL_AT_BOOT = frozenset({"kernel panic", "emergency shell", "Ignition failure"})
"""What ends a boot for good: a machine whose console shows one never answers SSH, so waiting is pointless."""


def fatal_boot_lines(text: str, source: str) -> list[ConsoleMatch]:
    """The lines of `text` that say a boot has failed for good (FATAL_AT_BOOT), in order."""
    return [m for m in scan(text, source) if m.description in FATAL_AT_BOOT]


def describe(matches: list[ConsoleMatch], limit: int = 10) -> str:
    lines = [str(m) for m in matches[:limit]]
    if len(matches) > limit:
        lines.append(f"... and {len(matches) - limit} more")
    return "\n".join(lines)


def split_starvation(
    matches: list[ConsoleMatch], emulated: bool
) -> tuple[list[ConsoleMatch], list[ConsoleMatch]]:
    """(failures, tolerated). Under emulation (TCG), lockups and stalls say the host starved the guest, not
    that the guest is broken: they are reported, but fail nothing. Under KVM every match is a failure."""
    if not emulated:
        return matches, []
    return [m for m in matches if not m.starvation], [m for m in matches if m.starvation]
