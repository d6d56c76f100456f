"""Under pytest-xdist, the tests sharing a module's machine run in one worker (one boot per module and channel)."""

from __future__ import annotations

import re

from tests.integration.helpers import run_inner

WORKER = re.compile(r"^\[(gw\d+)\] .*(SKIPPED|PASSED) (\S+)", re.MULTILINE)


def workers_of(output: str) -> dict[str, str]:
    """test id (without the group suffix) -> the worker that ran it."""
    return {m.group(3).split("@")[0]: m.group(1) for m in WORKER.finditer(output)}


def test_module_machine_tests_stay_in_one_worker_per_channel(pytester):
    # Skipped before any boot (the platform is excluded), but scheduled exactly as if they ran.
    pytester.makepyfile(
        test_shared="""
        import pytest

        pytestmark = [pytest.mark.exclude_platforms("qemu"), pytest.mark.channels("alpha", "beta")]

        @pytest.mark.parametrize("n", range(4))
        def test_reads(module_machine, n):
            pass
        """,
        test_other="""
        import pytest

        @pytest.mark.parametrize("n", range(8))
        def test_plain(n):
            pass
        """,
    )
    result = run_inner(pytester, "-n", "2")
    result.assert_outcomes(skipped=8, passed=8)
    workers = workers_of(result.stdout.str())
    for channel in ("alpha", "beta"):
        ran_on = {w for test, w in workers.items() if f"[qemu-{channel}-" in test}
        assert len(ran_on) == 1, (channel, workers)
    assert len(set(workers.values())) == 2, "the other tests are still spread over both workers"


def test_a_users_xdist_group_is_honoured(pytester):
    pytester.makepyfile(
        test_grouped="""
        import pytest

        @pytest.mark.xdist_group("serial")
        @pytest.mark.parametrize("n", range(6))
        def test_in_group(n):
            pass
        """
    )
    result = run_inner(pytester, "-n", "2")
    result.assert_outcomes(passed=6)
    workers = workers_of(result.stdout.str())
    assert len(workers) == 6
    assert len(set(workers.values())) == 1, workers


def test_the_longest_modules_start_first(pytester):
    # xdist would start the group with most tests first; the durations say the single tests take longest.
    pytester.makefile(".json", durations='{"test_long.py": 100.0, "test_grouped.py": 1.0}')
    started = pytester.path / "started.txt"
    body = f"""
        import fcntl

        def record(name):
            with open({str(started)!r}, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(name + "\\n")
        """
    pytester.makepyfile(
        test_long=body
        + """
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_long(n):
            record(f"long{n}")
        """,
        test_grouped=body
        + """
        import pytest

        @pytest.mark.xdist_group("together")
        @pytest.mark.parametrize("n", range(6))
        def test_grouped(n):
            record(f"grouped{n}")
        """,
    )
    result = run_inner(pytester, "-n", "2")
    result.assert_outcomes(passed=10)
    order = started.read_text().split()
    assert sorted(order[:2]) == ["long0", "long1"], order
