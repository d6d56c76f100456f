import fcntl
import multiprocessing
import threading
import time

import pytest

from harness.admission import TURNSTILE, BootSlots, mem_available_mib
from harness.errors import BootError
from harness.retry import poll


def _locked(path) -> bool:
    """Whether another open file holds an exclusive flock on `path`."""
    if not path.exists():
        return False
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_slots_are_exclusive(tmp_path):
    slots = BootSlots(2, tmp_path)
    with slots.slot("a", timeout=5), slots.slot("b", timeout=5):
        with pytest.raises(BootError, match="no machine slot"):
            with slots.slot("c", timeout=0.6):
                pass
    with slots.slot("d", timeout=1) as slot:
        assert slot.waited < 1


def _hold(directory, ready, release):
    with BootSlots(1, directory).slot("child", timeout=5):
        ready.set()
        release.wait(10)


def _child_holding_a_slot(directory):
    """A forked process that holds one slot until the returned event is set (or it is killed)."""
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(directory, ready, release))
    child.start()
    assert ready.wait(10)
    return child, release


def test_slot_held_by_another_process_is_waited_for_and_freed_when_it_exits(tmp_path):
    child, release = _child_holding_a_slot(tmp_path)
    with pytest.raises(BootError):
        with BootSlots(1, tmp_path).slot("parent", timeout=0.5):
            pass
    release.set()
    start = time.monotonic()
    with BootSlots(1, tmp_path).slot("parent", timeout=10):
        assert time.monotonic() - start < 10
    child.join(10)


def test_killed_holder_releases_its_slot(tmp_path):
    child, _release = _child_holding_a_slot(tmp_path)
    child.kill()
    child.join(10)
    with BootSlots(1, tmp_path).slot("parent", timeout=5):
        pass


def test_memory_requirement(tmp_path):
    assert mem_available_mib("MemTotal: 100 kB\nMemAvailable:    2097152 kB\n") == 2048
    with pytest.raises(BootError):
        with BootSlots(1, tmp_path, memory_mib=10**9).slot("big", timeout=0.5):
            pass


def test_a_request_for_several_slots_takes_all_or_none(tmp_path):
    slots = BootSlots(3, tmp_path)
    with slots.slot("one", timeout=5):
        with pytest.raises(BootError):
            with slots.slot("cluster of three", timeout=0.6, count=3):
                pass
        assert slots.held == 1  # the two free slots were not kept by the failed request
        with slots.slot("cluster of two", timeout=1, count=2):
            assert slots.held == 3
    assert slots.held == 0
    with slots.slot("more than there are", timeout=1, count=5) as big:
        assert big.count == 3


def test_a_waiting_cluster_is_served_before_later_single_requests(tmp_path):
    child, release = _child_holding_a_slot(tmp_path)
    slots = BootSlots(2, tmp_path)
    order: list[str] = []
    cluster_waiting = threading.Event()

    def cluster() -> None:
        slot = slots.slot("cluster", timeout=10, count=2)
        cluster_waiting.set()
        with slot:
            order.append("cluster")

    first = threading.Thread(target=cluster)
    first.start()
    assert cluster_waiting.wait(5)
    poll(lambda: _locked(tmp_path / TURNSTILE) or None, timeout=5, what="the cluster to stand in line")
    late = BootSlots(2, tmp_path)
    with pytest.raises(BootError):
        with late.slot("late single", timeout=0.6):
            pass  # the free slot is not handed past the cluster waiting in line
    release.set()
    child.join(10)
    first.join(10)
    assert order == ["cluster"]


def test_a_process_holding_a_slot_goes_ahead_rather_than_deadlock(tmp_path):
    slots = BootSlots(1, tmp_path, overcommit_after=0.5)
    with slots.slot("first machine", timeout=5):
        with slots.slot("second machine of the same test", timeout=30) as second:
            assert second.overcommitted
            assert not second.held
    other = BootSlots(1, tmp_path, overcommit_after=0.5)
    with other.slot("holds nothing", timeout=5) as third:
        assert third.held
        assert not third.overcommitted
