"""What a run decides from the options and the acceleration: vCPUs per machine, how slots are held."""

from __future__ import annotations

import pytest

from tests.integration.helpers import run_inner

PROBE = """
def test_probe(railyard_run):
    print("SHAPE", railyard_run.accel.name, railyard_run.machine_cpus, railyard_run.slots_for_life)
"""


@pytest.mark.parametrize(
    ("args", "shape"),
    [
        (["--qemu-accel=tcg"], "SHAPE tcg 1 True"),  # one host core per machine, held for its life
        (["--qemu-accel=tcg", "--qemu-cpus=3"], "SHAPE tcg 3 True"),
        (["--platform=aws", "--qemu-accel=tcg", "--qemu-cpus=3"], "SHAPE cloud 2 False"),  # not run here
    ],
)
def test_machine_shape(pytester, args, shape):
    pytester.makepyfile(test_probe=PROBE)
    result = run_inner(pytester, "-s", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*{shape}*"])
