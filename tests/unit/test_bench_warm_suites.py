from __future__ import annotations

from typing import Any

import pytest

from bench.warm_suites import Breakdown, Run, breakdown, summary


def result_of(name: str, seconds: float, result: str = "PASS", **starts: str) -> dict[str, Any]:
    return {
        "name": name,
        "result": result,
        "duration": int(seconds * 1e9),
        "properties": {"platform": "qemu", **{f"start {m}": v for m, v in starts.items()}},
    }


REPORT = {
    "tests": [
        # Two tests of a module share its machine: its start counts once.
        result_of("a::one", 10.0, m1="restored-booted in 3.0 s from k1"),
        result_of("a::two", 2.0, m1="restored-booted in 3.0 s from k1"),
        result_of("b::one", 40.0, m2="cold in 30.0 s, after 4.0 s waiting for a machine slot"),
        result_of(
            "c::one",
            25.0,
            "FAIL",
            m3="restored-firstboot in 15.0 s from f (saved as checkpoint k3 in 2.0 s)",
        ),
        result_of("d::one", 1.0),  # no machine of its own
        # A cluster: two machines of one request, one wait, started side by side.
        result_of(
            "e::one",
            20.0,
            m4="restored-booted in 3.0 s from k4, after 5.0 s waiting for a machine slot",
            m5="restored-booted in 4.0 s from k5, after 5.0 s waiting for a machine slot",
        ),
    ]
}


def test_machine_time_splits_into_starts_waits_and_the_tests_own_work() -> None:
    b = breakdown(REPORT)
    assert (b.tests, b.passed) == (6, 5)
    assert b.machine_s == pytest.approx(98.0)
    assert b.starts == {
        "restored-booted": (3, 10.0),
        "cold": (1, 30.0),
        "restored-firstboot": (1, 17.0),  # the save is the warm pool's cost too
    }
    assert b.start_s == pytest.approx(3.0 + 30.0 + 17.0 + 4.0)
    assert b.slot_wait_s == pytest.approx(4.0 + 5.0)
    assert b.work_s == pytest.approx(98.0 - 54.0 - 9.0)
    assert b.floor_s(2) == pytest.approx(17.5)
    assert b.saves == 1
    assert not b.all_restored


def test_a_run_of_restores_alone_is_the_steady_state() -> None:
    b = breakdown({"tests": [result_of("a::one", 5.0, m1="restored-booted in 1.0 s from k")]})
    assert b.all_restored
    assert not breakdown({"tests": [result_of("a::one", 35.0, m1="cold in 30.0 s")]}).all_restored


def test_the_summary_gives_each_ratio_and_its_bound() -> None:
    warm = Breakdown(2, 2, 120.0, starts={"restored-booted": (2, 10.0)}, start_s=10.0, slot_wait_s=10.0)
    off = Breakdown(2, 2, 200.0, starts={"cold": (2, 100.0)}, start_s=100.0, slot_wait_s=0.0)
    lines = summary([Run("warm", 60.0, warm), Run("off", 110.0, off)], workers=2)
    assert lines[-1] == (
        "off 110 s / warm 60 s = 1.83x  (bound: off / the warm run's own work on 2 workers = 2.20x)"
    )
    assert "2 restored-booted 10 s" in lines[0]
    assert "slot waits 10 s" in lines[0]
