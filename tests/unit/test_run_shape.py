"""What a run decides from the options and the acceleration: vCPUs per machine, how slots are held."""

from __future__ import annotations

import pytest

from tests.integration.helpers import run_inner

PROBE = """
def test_probe(railyard_run):
    print("SHAPE", railyard_run.accel.name, railyard_run.machine_cpus, railyard_run.slots_for_life)
    print("MEMORY", railyard_run.machine_memory_mib)
"""


@pytest.mark.parametrize(
    ("args", "shape"),
    [
        (["--qemu-accel=tcg"], "SHAPE tcg 1 True"),  # one host core per machine, held for its life
        (["--qemu-accel=tcg", "--qemu-cpus=3"], "SHAPE tcg 3 True"),
        (["--qemu-accel=tcg", "--cpus=3"], "SHAPE tcg 3 True"),
        (["--platform=aws", "--qemu-accel=tcg"], "SHAPE cloud 2 False"),  # not run here
    ],
)
def test_machine_shape(pytester, args, shape):
    pytester.makepyfile(test_probe=PROBE)
    result = run_inner(pytester, "-s", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*{shape}*"])


@pytest.mark.parametrize("args", [["--memory=2048"], ["--qemu-memory=2048"]])
def test_memory_has_one_meaning_under_both_names(pytester, args):
    pytester.makepyfile(test_probe=PROBE)
    result = run_inner(pytester, "-s", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*MEMORY 2048*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform=aws", "--qemu-cpus=3"], "*--cpus: not for --platform=aws*--aws-instance-type*"),
        (
            ["--platform=azure", "--memory=4096", "--firmware=bios"],
            "*--memory, --firmware: not for --platform=azure*--azure-vm-size*",
        ),
        (["--cpus=0"], "*--cpus must be a positive number, not 0*"),
    ],
)
def test_a_shape_a_platform_cannot_honour_is_one_clear_error(pytester, args, message):
    pytester.makepyfile(test_probe=PROBE)
    result = run_inner(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
