"""Runs start the modules that took longest first, keeping each module's tests together and in order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.ordering import (
    DURATIONS_FILE,
    longest_modules_first,
    merge_durations,
    module_seconds,
    read_durations,
    save_durations,
)

SUITES = Path("/suites")


@dataclass(frozen=True)
class FakeItem:
    path: Path
    name: str


def items(*spec: str) -> list[FakeItem]:
    """'a:1' -> the test `1` of module `test_a.py`."""
    return [FakeItem(SUITES / f"test_{m}.py", n) for m, n in (s.split(":") for s in spec)]


def names(found: list[FakeItem]) -> list[str]:
    return [f"{i.path.stem.removeprefix('test_')}:{i.name}" for i in found]


def test_modules_go_longest_first_and_keep_their_tests_in_order() -> None:
    collected = items("basic:1", "basic:2", "reboot:1", "update:1", "update:2", "update:3")
    durations = {SUITES: {"test_basic.py": 20.0, "test_reboot.py": 60.0, "test_update.py": 900.0}}
    assert names(longest_modules_first(collected, durations)) == [
        "update:1", "update:2", "update:3", "reboot:1", "basic:1", "basic:2",
    ]  # fmt: skip


def test_a_module_without_a_record_counts_as_the_median() -> None:
    collected = items("a:1", "b:1", "c:1", "new:1")
    durations = {SUITES: {"test_a.py": 10.0, "test_b.py": 50.0, "test_c.py": 300.0}}
    assert names(longest_modules_first(collected, durations)) == ["c:1", "b:1", "new:1", "a:1"]


def test_without_records_the_collection_order_stays() -> None:
    collected = items("b:1", "a:1", "a:2")
    assert longest_modules_first(collected, {}) == collected
    assert longest_modules_first(collected, {Path("/elsewhere"): {"test_a.py": 5.0}}) == collected


def test_durations_add_up_per_module_and_merge_into_the_record(tmp_path: Path) -> None:
    a, b = tmp_path / "test_a.py", tmp_path / "test_b.py"
    seconds = module_seconds([(a, 1.0), (a, 30.0), (b, 2.5), (a, 0.25)])
    assert seconds == {a: 31.25, b: 2.5}
    (tmp_path / DURATIONS_FILE).write_text(json.dumps({"test_b.py": 99.0, "test_gone.py": 7.0}))
    assert save_durations(seconds) == [tmp_path / DURATIONS_FILE]
    assert read_durations(tmp_path) == {"test_a.py": 31.2, "test_b.py": 2.5, "test_gone.py": 7.0}
    assert merge_durations({"x": 1.0}, {"y": 2.04}) == {"x": 1.0, "y": 2.0}


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"test_a.py": "slow"}'])
def test_an_unusable_record_is_ignored(tmp_path: Path, text: str) -> None:
    (tmp_path / DURATIONS_FILE).write_text(text)
    assert read_durations(tmp_path) == {}


def test_a_run_saves_durations_and_the_next_starts_with_the_longest_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a="def test_quick():\n    pass\n",
        test_b="import time\n\ndef test_slow():\n    time.sleep(0.3)\n",
    )
    before = pytester.runpytest("--co", "-q")
    assert [line for line in before.outlines if "::" in line] == [
        "test_a.py::test_quick",
        "test_b.py::test_slow",
    ]
    pytester.runpytest("--save-durations").assert_outcomes(passed=2)
    record = read_durations(pytester.path)
    assert record["test_b.py"] > record["test_a.py"]
    after = pytester.runpytest("--co", "-q")
    assert [line for line in after.outlines if "::" in line] == [
        "test_b.py::test_slow",
        "test_a.py::test_quick",
    ]
