"""Where a boot's time goes: pure parsing of what a boot leaves behind, and its split into phases.

Sources, all read after the boot (no VM here, so all of it is unit-tested):
- the console, as lines stamped with the host's monotonic clock (bench.console_tail): the kernel's
  `reboot: Restarting system` ends a shutdown, OVMF's `BdsDxe: starting Boot0001` hands over to the boot loader;
- the guest's `systemd-analyze` (firmware, loader, kernel, initrd, userspace: systemd-boot sets the loader's EFI
  variables), `systemd-analyze blame` and `critical-chain`;
- the guest's journal of the boot as JSON (PID 1's job messages): when the Ignition units ran and when
  multi-user.target was reached, on the guest's monotonic clock (zero at kernel start);
- the guest's uptime read right after the SSH login, which puts the guest's clock on the host's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.console_tail import StampedLine
from harness.consolecheck import strip_terminal_codes

SHUTDOWN = "shutdown"
FIRMWARE = "firmware + boot loader"
KERNEL = "kernel"
INITRD = "initramfs before Ignition"
IGNITION = "Ignition"
AFTER_IGNITION = "initramfs after Ignition"
USERSPACE = "switch-root to multi-user.target"
SSHD = "sshd ready (SSH login)"

BOOT_PHASES: tuple[str, ...] = (FIRMWARE, KERNEL, INITRD, IGNITION, AFTER_IGNITION, USERSPACE, SSHD)
REBOOT_PHASES: tuple[str, ...] = (SHUTDOWN, *BOOT_PHASES)

RESTART_LINE = "reboot: Restarting system"
LOADER_HANDOFF = "BdsDxe: starting Boot"
IGNITION_UNIT = re.compile(r"^ignition-[\w-]+\.service$")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(min|ms|us|µs|h|s)(?![a-z])")
_UNIT_SECONDS = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_DURATION = r"(?:\d+(?:\.\d+)?(?:min|ms|us|µs|h|s)\s*)+"
_ANALYZE_PART = re.compile(rf"({_DURATION})\((\w+)\)")
_REACHED = re.compile(rf"(\S+\.target) reached after ({_DURATION})in userspace")
_BLAME = re.compile(rf"^\s*({_DURATION})\s+(\S+)\s*$")
_CHAIN = re.compile(rf"(\S+)\s+@({_DURATION})(?:\s*\+({_DURATION}))?\s*$")


def plain(text: str) -> str:
    """A console line without terminal escape sequences (systemd's colours, the firmware's cursor moves)."""
    return strip_terminal_codes(text).strip()


def parse_duration(text: str) -> float:
    """Seconds of a systemd time span such as `1min 2.345s`, `876ms` or `12us`. Raises ValueError."""
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text).strip():
        raise ValueError(f"not a systemd time span: {text!r}")
    return sum(float(value) * _UNIT_SECONDS[unit] for value, unit in parts)


@dataclass(frozen=True)
class AnalyzeTimes:
    """`systemd-analyze` of one boot, in seconds; a part the guest did not measure is missing."""

    parts: Mapping[str, float]
    """`firmware`, `loader`, `kernel`, `initrd`, `userspace` as present."""
    total: float
    target: str | None = None
    target_after: float | None = None
    """When `target` (the default target) was reached, in seconds after userspace began."""

    def get(self, part: str) -> float | None:
        return self.parts.get(part)


def parse_analyze(text: str) -> AnalyzeTimes:
    """Parse `systemd-analyze` (`Startup finished in ... = 36.6s` and `... reached after ... in userspace`).
    Raises ValueError when the boot has not finished (or the text is something else)."""
    line = next((x for x in text.splitlines() if x.startswith("Startup finished in")), None)
    if line is None:
        raise ValueError(f"systemd-analyze gave no startup time: {text.strip()[:200]!r}")
    head, _, total = line.rpartition("=")
    parts = {name: parse_duration(span) for span, name in _ANALYZE_PART.findall(head)}
    reached = _REACHED.search(text)
    return AnalyzeTimes(
        parts=parts,
        total=parse_duration(total.strip()),
        target=reached.group(1) if reached else None,
        target_after=parse_duration(reached.group(2)) if reached else None,
    )


def parse_blame(text: str, top: int = 8) -> list[tuple[str, float]]:
    """The `top` slowest units of `systemd-analyze blame`, as (unit, seconds), slowest first."""
    found = []
    for line in text.splitlines():
        match = _BLAME.match(line)
        if match:
            found.append((match.group(2), parse_duration(match.group(1))))
    return sorted(found, key=lambda item: -item[1])[:top]


@dataclass(frozen=True)
class ChainLink:
    unit: str
    at: float
    """When the unit became active, in seconds after userspace began."""
    took: float | None
    """How long it took to start (None for units that start at once, such as targets)."""


def parse_critical_chain(text: str) -> list[ChainLink]:
    """The units of `systemd-analyze critical-chain`, in its order (the default target first)."""
    links = []
    for line in text.splitlines():
        match = _CHAIN.search(line.lstrip(" │├└─|`-"))
        if match:
            took = parse_duration(match.group(3)) if match.group(3) else None
            links.append(ChainLink(match.group(1), parse_duration(match.group(2)), took))
    return links


@dataclass
class UnitTimes:
    """When PID 1 began and finished starting a unit, in seconds of the guest's monotonic clock."""

    starting: float | None = None
    done: float | None = None


def parse_unit_jobs(journal_json: str) -> dict[str, UnitTimes]:
    """PID 1's start jobs from `journalctl -o json` lines: the first `Starting` and the first successful end
    (`Finished`, `Started`, `Reached target`, `Mounted`) of each unit."""
    units: dict[str, UnitTimes] = {}
    for line in journal_json.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        unit, usec = entry.get("UNIT"), entry.get("__MONOTONIC_TIMESTAMP")
        if not isinstance(unit, str) or entry.get("JOB_TYPE") != "start" or usec is None:
            continue
        at = int(usec) / 1e6
        times = units.setdefault(unit, UnitTimes())
        result = entry.get("JOB_RESULT")
        if result is None and times.starting is None:
            times.starting = at
        elif result == "done" and times.done is None:
            times.done = at
    return units


def ignition_span(units: Mapping[str, UnitTimes]) -> tuple[float, float] | None:
    """From the first Ignition unit's start to the last one's end (guest seconds); None when none ran."""
    spans = [
        (t.done if t.starting is None else t.starting, t.done)
        for name, t in units.items()
        if IGNITION_UNIT.match(name) and t.done is not None
    ]
    if not spans:
        return None
    return min(begin for begin, _ in spans), max(end for _, end in spans)


@dataclass(frozen=True)
class ConsoleMarks:
    """Host instants seen on the console of one boot (None: the line did not appear)."""

    restart: float | None = None
    """The kernel's `reboot: Restarting system` (end of a shutdown)."""
    loader: float | None = None
    """OVMF's `BdsDxe: starting Boot...`: the firmware starts the boot loader."""


def qmp_reset(events: Iterable[Mapping[str, Any]], after: float, wall_minus_monotonic: float) -> float | None:
    """The host monotonic instant of the first QMP `RESET` event at or after `after` (QMP stamps events with
    the wall clock: `wall_minus_monotonic` is `time.time() - time.monotonic()`); None when there is none."""
    for event in events:
        stamp = event.get("timestamp")
        if event.get("event") != "RESET" or not isinstance(stamp, Mapping):
            continue
        at = float(stamp.get("seconds", 0)) + float(stamp.get("microseconds", 0)) / 1e6 - wall_minus_monotonic
        if at >= after:
            return at
    return None


def console_marks(lines: Iterable[StampedLine]) -> ConsoleMarks:
    """The first restart and the first boot loader start among `lines` (those of one boot)."""
    restart = loader = None
    for line in lines:
        if restart is None and RESTART_LINE in line.text:
            restart = line.at
        elif loader is None and LOADER_HANDOFF in line.text:
            loader = line.at
    return ConsoleMarks(restart, loader)


@dataclass(frozen=True)
class BootRecord:
    """What one boot left behind: host instants (seconds of `time.monotonic()`) and guest instants."""

    start: float
    """The reboot request, or the start of QEMU for a first boot."""
    login: float
    """When an SSH login first worked."""
    clock_offset: float
    """Host time of the guest's monotonic zero (kernel start): host instant minus the guest's uptime."""
    console: ConsoleMarks
    analyze: AnalyzeTimes | None
    units: Mapping[str, UnitTimes]
    reboot: bool
    reset: float | None = None
    """The hypervisor's reset of the machine (QMP `RESET`), where the platform tells it."""


@dataclass
class Phases:
    seconds: dict[str, float | None]
    notes: list[str] = field(default_factory=list)

    def total(self) -> float | None:
        """The sum of the phases, when none is missing."""
        values = list(self.seconds.values())
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def boot_phases(record: BootRecord) -> Phases:
    """Split one boot into contiguous phases (those of `REBOOT_PHASES` for a reboot, `BOOT_PHASES` for a
    first boot); a phase whose boundary was not seen is None and a note says why."""
    notes: list[str] = []
    kernel_zero = record.clock_offset
    analyze, units = record.analyze, record.units

    def host(guest_seconds: float | None) -> float | None:
        return None if guest_seconds is None else kernel_zero + guest_seconds

    initrd_start = host(analyze.get("kernel")) if analyze else None
    switch_root = None
    if analyze and analyze.get("kernel") is not None and analyze.get("initrd") is not None:
        switch_root = host(analyze.parts["kernel"] + analyze.parts["initrd"])
    elif analyze:
        notes.append("systemd-analyze measured no initrd: the initramfs phases are not separable")
    else:
        notes.append("no systemd-analyze of this boot: the kernel and initramfs boundaries are not seen")
    if analyze and analyze.get("loader") is None:
        # systemd-boot leaves its timestamps out when CPUID says it runs under a hypervisor.
        notes.append(
            "the guest has no firmware/loader times (systemd-boot does not time in a VM): host clock used"
        )
    span = ignition_span(units)
    if span is not None:
        ignition_start, ignition_end = host(span[0]), host(span[1])
    elif record.reboot:
        ignition_start = ignition_end = switch_root
        notes.append("Ignition did not run (not a first boot): the initramfs counts as before Ignition")
    else:
        ignition_start = ignition_end = None
        notes.append("no Ignition unit in the journal: the Ignition phase is not seen")
    target = units.get("multi-user.target")
    multi_user = host(target.done) if target else None
    if multi_user is None:
        notes.append("multi-user.target reached: not in the journal")

    boundary: list[tuple[str, float | None]] = []
    if record.reboot:
        boundary.append((SHUTDOWN, record.start))
        restart = record.console.restart if record.console.restart is not None else record.reset
        if record.console.restart is None and record.reset is not None:
            notes.append(f"{RESTART_LINE!r} not on the console: the shutdown ends at QEMU's reset")
        elif restart is None:
            notes.append(f"neither {RESTART_LINE!r} nor a reset seen: shutdown and firmware not separable")
        boundary.append((FIRMWARE, restart))
    else:
        boundary.append((FIRMWARE, record.start))
    boundary += [
        (KERNEL, kernel_zero),
        (INITRD, initrd_start),
        (IGNITION, ignition_start),
        (AFTER_IGNITION, ignition_end),
        (USERSPACE, switch_root),
        (SSHD, multi_user),
    ]
    ends = [b for _, b in boundary[1:]] + [record.login]
    seconds = {
        name: (end - begin if begin is not None and end is not None else None)
        for (name, begin), end in zip(boundary, ends, strict=True)
    }
    if multi_user is not None and multi_user > record.login:
        notes.append("SSH answered before multi-user.target was reached (sshd phase negative)")
    return Phases(seconds, notes)


def median_phases(runs: Sequence[Phases], names: Sequence[str]) -> dict[str, float | None]:
    """Per phase, the median over the runs that saw it (None when no run did)."""
    result: dict[str, float | None] = {}
    for name in names:
        seen = sorted(v for run in runs if (v := run.seconds.get(name)) is not None)
        result[name] = median(seen)
    return result


def median(values: Sequence[float]) -> float | None:
    """The median of `values` (None for none), as statistics.median but total for an empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def lines_between(lines: Iterable[StampedLine], begin: float, end: float | None) -> list[tuple[float, str]]:
    """Console lines stamped from `begin` to `end` (to the last line when None), as (seconds after begin,
    text without escapes); blank lines left out."""
    return [
        (line.at - begin, text)
        for line in lines
        if line.at >= begin and (end is None or line.at <= end) and (text := plain(line.text))
    ]
