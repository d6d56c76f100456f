"""`--shard i/n`: a deterministic split that keeps a shared machine's tests together (pure logic, and the plugin
on tests that boot nothing)."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.shard import Shard, parse_shard, split
from tests.integration.helpers import run_inner


def test_shards_are_counted_from_one() -> None:
    assert parse_shard("2/3") == Shard(2, 3)
    assert str(parse_shard(" 1 / 1 ")) == "1/1"


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "1/2/3", "-1/2"])
def test_a_bad_shard_is_one_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--shard "):
        parse_shard(text)


ITEMS = [f"m{m}::t{t}" for m in range(5) for t in range(4)]


def group_of(item: str) -> str:
    module = item.split("::")[0]
    return module if module in ("m0", "m3") else item  # m0 and m3 share a machine


def module_of(item: str) -> str:
    return item.split("::")[0]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 30])
def test_every_test_is_in_exactly_one_shard_and_groups_stay_whole(count: int) -> None:
    parts = split(ITEMS, count, group_of, module_of, {"m1": 400.0})
    assert sorted(i for part in parts for i in part) == sorted(ITEMS)
    for group in ("m0", "m3"):
        holders = [n for n, part in enumerate(parts) if any(group_of(i) == group for i in part)]
        assert len(holders) == 1, (group, holders)
    for part in parts:
        assert part == sorted(part, key=ITEMS.index), "each shard keeps the collection order"


def test_the_split_does_not_depend_on_the_order_of_collection() -> None:
    seconds = {"m2": 30.0, "m4": 900.0}
    forward = split(ITEMS, 3, group_of, module_of, seconds)
    backward = split(list(reversed(ITEMS)), 3, group_of, module_of, seconds)
    assert [sorted(p) for p in forward] == [sorted(p) for p in backward]


def test_recorded_durations_balance_the_shards() -> None:
    # m4 took as long as all the others together: it gets a shard to itself.
    seconds = {"m0": 100.0, "m1": 100.0, "m2": 100.0, "m3": 100.0, "m4": 400.0}
    parts = split(ITEMS, 2, module_of, module_of, seconds)
    assert {module_of(i) for i in parts[0]} == {"m4"} or {module_of(i) for i in parts[1]} == {"m4"}


def selected(pytester: pytest.Pytester, *args: str) -> set[str]:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", *args)
    assert result.ret == 0, result.stdout.str()
    return {line for line in result.stdout.lines if "::" in line}


def test_shards_of_a_run_together_run_every_test_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_shared="""
        import pytest

        pytestmark = [pytest.mark.exclude_platforms("qemu"), pytest.mark.channels("alpha", "beta")]

        @pytest.mark.parametrize("n", range(3))
        def test_reads(module_machine, n):
            pass
        """,
        test_plain="""
        import pytest

        @pytest.mark.parametrize("n", range(9))
        def test_plain(n):
            pass
        """,
    )
    whole = selected(pytester)
    assert len(whole) == 15
    shards = [selected(pytester, "--shard", f"{i}/3") for i in (1, 2, 3)]
    assert set().union(*shards) == whole
    assert sum(len(s) for s in shards) == len(whole), "no test is in two shards"
    for channel in ("alpha", "beta"):
        holders = [n for n, s in enumerate(shards) if any(f"[qemu-{channel}-" in name for name in s)]
        assert len(holders) == 1, f"the {channel} machine's tests are split: {holders}"
    # Under xdist each worker makes the same split.
    result = run_inner(pytester, "--shard", "2/3", "-n", "2")
    ran = result.parseoutcomes()
    assert ran.get("passed", 0) + ran.get("skipped", 0) == len(shards[1])
