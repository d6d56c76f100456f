import pytest

from harness.errors import WaitTimeout
from harness.retry import poll


def test_poll_returns_first_value():
    calls = iter([None, None, "ok"])
    assert poll(lambda: next(calls), timeout=10, interval=0.01, what="x") == "ok"


def test_poll_times_out_naming_the_last_error():
    def attempt():
        raise ValueError("still booting")

    with pytest.raises(WaitTimeout, match="waiting for the thing: last error: still booting"):
        poll(attempt, timeout=0.2, interval=0.05, what="the thing")
