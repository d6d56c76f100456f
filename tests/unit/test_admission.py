import multiprocessing
import time

import pytest

from harness.admission import BootSlots, mem_available_mib
from harness.errors import BootError


def test_slots_are_exclusive(tmp_path):
    slots = BootSlots(2, tmp_path)
    with slots.slot("a", timeout=5), slots.slot("b", timeout=5):
        with pytest.raises(BootError, match="no boot slot"):
            with slots.slot("c", timeout=0.6):
                pass
    with slots.slot("d", timeout=1) as slot:
        assert slot.waited < 1


def _hold(directory, ready, release):
    with BootSlots(1, directory).slot("child", timeout=5):
        ready.set()
        release.wait(10)


def test_slot_held_by_another_process_is_waited_for_and_freed_when_it_exits(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    child.start()
    assert ready.wait(10)
    with pytest.raises(BootError):
        with BootSlots(1, tmp_path).slot("parent", timeout=0.5):
            pass
    release.set()
    start = time.monotonic()
    with BootSlots(1, tmp_path).slot("parent", timeout=10):
        assert time.monotonic() - start < 10
    child.join(10)


def test_killed_holder_releases_its_slot(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    child.start()
    assert ready.wait(10)
    child.kill()
    child.join(10)
    with BootSlots(1, tmp_path).slot("parent", timeout=5):
        pass


def test_memory_requirement(tmp_path):
    assert mem_available_mib("MemTotal: 100 kB\nMemAvailable:    2097152 kB\n") == 2048
    with pytest.raises(BootError):
        with BootSlots(1, tmp_path, memory_mib=10**9).slot("big", timeout=0.5):
            pass
