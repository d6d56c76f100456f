"""`--shard i/n`: split a run's tests over n CI jobs, deterministically, keeping a shared machine's tests whole.

Every shard collects the same tests and computes the same split, so shard i of n keeps its part and
deselects the rest: the union of the n shards is the whole run and no test runs twice. The unit of the
split is a *group*: the tests that share a module's machine on one channel (their `xdist_group`), or a test
alone. Groups go to shards longest first, each to the shard with the least work so far (the weights come
from the modules' recorded durations, harness.ordering; a module with no record counts as the median), ties
broken by name, so the split does not depend on the order of collection.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from harness.errors import ConfigError

T = TypeVar("T")

# What a test of a module with no record counts as when no module has one.
DEFAULT_TEST_SECONDS = 60.0


@dataclass(frozen=True)
class Shard:
    index: int
    """1-based."""
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ConfigError(f"--shard {text!r}: expected i/n, e.g. 1/4 (shard i of n, counted from 1)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard {text}: i must be between 1 and n, and n at least 1")
    return Shard(index, count)


def split(
    items: Sequence[T],
    count: int,
    group_of: Callable[[T], str],
    module_of: Callable[[T], str],
    module_seconds: Mapping[str, float],
) -> list[list[T]]:
    """`items` split into `count` lists (each in the items' own order); a group's items stay in one list.

    `module_seconds` is the recorded time of each module (all of its tests); an item counts as its module's
    time shared evenly between the module's items here."""
    per_module: dict[str, int] = {}
    for item in items:
        per_module[module_of(item)] = per_module.get(module_of(item), 0) + 1
    known = [module_seconds[m] / n for m, n in per_module.items() if m in module_seconds and n]
    typical = statistics.median(known) if known else DEFAULT_TEST_SECONDS

    def weight(item: T) -> float:
        module = module_of(item)
        if module in module_seconds:
            return module_seconds[module] / per_module[module]
        return typical

    groups: dict[str, float] = {}
    for item in items:
        key = group_of(item)
        groups[key] = groups.get(key, 0.0) + weight(item)
    load = [0.0] * count
    shard_of: dict[str, int] = {}
    for key in sorted(groups, key=lambda k: (-groups[k], k)):
        target = min(range(count), key=lambda i: (load[i], i))
        shard_of[key] = target
        load[target] += groups[key]
    parts: list[list[T]] = [[] for _ in range(count)]
    for item in items:
        parts[shard_of[group_of(item)]].append(item)
    return parts
