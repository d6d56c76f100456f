"""Longest modules first: the order a run starts its test modules in, from what they took before.

Under pytest-xdist a worker takes the next test (or module group) as it gets free, in collection order. The
suites' heaviest module (the update suite: several reboots per test, for every channel) comes last
alphabetically, so a run used to end with one worker busy on it and the other idle. Starting the modules
that take longest first evens the workers out (longest-processing-time-first scheduling).

What a module took is read from `durations.json` in its directory (seconds per module file name), written
by a run given `--save-durations`. Items keep their order within a module, so a module's shared machine
(`module_machine`) is still set up once. A module with no record counts as the median of those with one;
without any record the collection order is kept.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)

DURATIONS_FILE = "durations.json"


class HasPath(Protocol):
    @property
    def path(self) -> Path: ...


Item = TypeVar("Item", bound=HasPath)


def read_durations(directory: Path) -> dict[str, float]:
    """Seconds per module file name recorded in `directory` (empty when there is no usable record)."""
    path = directory / DURATIONS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("ignoring %s: not a JSON object", path)
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and v >= 0}


def longest_modules_first(items: Sequence[Item], durations: Mapping[Path, Mapping[str, float]]) -> list[Item]:
    """`items` with whole modules reordered by their recorded durations, longest first (stable).

    `durations` maps a directory to the seconds per module file name recorded there."""
    modules: dict[Path, list[Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    known = {
        path: durations[path.parent][path.name]
        for path in modules
        if path.parent in durations and path.name in durations[path.parent]
    }
    if not known:
        return list(items)
    typical = statistics.median(known.values())
    order = sorted(modules, key=lambda path: -known.get(path, typical))  # sorted() is stable
    return [item for path in order for item in modules[path]]


def merge_durations(recorded: Mapping[str, float], measured: Mapping[str, float]) -> dict[str, float]:
    """The record of a directory after a run: `measured` modules replace what was recorded of them."""
    merged = {**recorded, **{name: round(seconds, 1) for name, seconds in measured.items()}}
    return dict(sorted(merged.items()))


def module_seconds(reports: Iterable[tuple[Path, float]]) -> dict[Path, float]:
    """Seconds per module file from (module path, duration) of every setup, call and teardown report."""
    total: dict[Path, float] = {}
    for path, seconds in reports:
        total[path] = total.get(path, 0.0) + seconds
    return total


def save_durations(seconds: Mapping[Path, float]) -> list[Path]:
    """Merge the measured `seconds` per module into the `durations.json` of each module's directory; the
    files written."""
    by_directory: dict[Path, dict[str, float]] = {}
    for path, value in seconds.items():
        by_directory.setdefault(path.parent, {})[path.name] = value
    written = []
    for directory, measured in sorted(by_directory.items()):
        target = directory / DURATIONS_FILE
        merged = merge_durations(read_durations(directory), measured)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(merged, indent=2) + "\n")
        tmp.replace(target)
        written.append(target)
    return written
