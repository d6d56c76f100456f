"""The whole suites with the warm pool and without it, and what bounds the ratio of the two.

Runs the main job, `pytest --platform=qemu -n 2 suites/`, with the warm pool (`--warm=all`) until no
machine boots cold or saves a checkpoint (at most `--warmups` runs; a new image's keys need three: each key
is saved the second time it comes up), then with `--warm=off`, then warm again, and prints
each run's wall time and the ratio of the off run to each warm run around it.

From each run's `report.json` it splits the machine time (the sum of the tests' durations) into the
machines' starts (restores, cold boots, checkpoint saves), their waits for a machine slot, and the rest:
the work the tests do once their machines are up (their commands, reboots and updates), which no warm pool
can save. That work spread evenly over the workers is the shortest any warm run of these suites can take;
the off run's wall time over it is the most a warm pool can give them on this host (`bound`).

    .venv/bin/python bench/warm_suites.py [--workers 2] [--warmups 3] [-- extra pytest arguments]
    .venv/bin/python bench/warm_suites.py --off DIR --warm DIR [DIR ...]   # runs made before (--output-dir)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.warm import START_COLD, START_FIRSTBOOT, START_RESTORED, StartRecord  # noqa: E402

START_PREFIX = "start "
SAVED = re.compile(r"saved as checkpoint \S+ in (?P<seconds>[0-9.]+) s")


@dataclass(frozen=True)
class Breakdown:
    """One run's machine time, from its report."""

    tests: int
    passed: int
    machine_s: float
    """The sum of the tests' durations (setup, call and teardown)."""
    starts: dict[str, tuple[int, float]]
    """Per start kind: how many machines came up that way, and their seconds (with checkpoint saves)."""
    start_s: float
    """What the starts added to the tests' durations (the machines of one request come up in parallel)."""
    slot_wait_s: float
    saves: int = 0
    """Checkpoints saved during the run."""

    @property
    def work_s(self) -> float:
        """What the tests did with their machines up, which no warm pool saves."""
        return max(self.machine_s - self.start_s - self.slot_wait_s, 0.0)

    def floor_s(self, workers: int) -> float:
        """The shortest wall time this work allows on `workers` workers."""
        return self.work_s / workers

    @property
    def all_restored(self) -> bool:
        """Whether no machine booted cold or saved a checkpoint: a warm run in its steady state."""
        return self.starts.get(START_COLD, (0, 0.0))[0] == 0 and not self.saves


def breakdown(report: Mapping[str, Any]) -> Breakdown:
    """Split a `report.json` (harness.reports) into starts, slot waits and the tests' own work. A machine
    shared by a module's tests appears in each of their reports and is counted once."""
    tests = list(report.get("tests", []))
    seen: set[tuple[str, str]] = set()
    starts: dict[str, tuple[int, float]] = {}
    saves = 0
    start_s = slot_wait_s = 0.0
    for test in tests:
        # The machines a test brings up come up together (one request: one wait, started in parallel).
        came_up: list[tuple[StartRecord, float]] = []
        for name, value in (test.get("properties") or {}).items():
            if name.startswith(START_PREFIX) and (name, value) not in seen:
                seen.add((name, value))
                record = StartRecord.parse(str(value))
                saved = SAVED.search(record.note)
                came_up.append((record, float(saved["seconds"]) if saved else 0.0))
        for record, save_s in came_up:
            saves += 1 if save_s else 0
            count, seconds = starts.get(record.kind, (0, 0.0))
            starts[record.kind] = (count + 1, seconds + record.seconds + save_s)
        if came_up:
            start_s += max(record.seconds + save_s for record, save_s in came_up)
            slot_wait_s += max(record.slot_wait for record, _ in came_up)
    return Breakdown(
        tests=len(tests),
        passed=sum(1 for t in tests if t.get("result") == "PASS"),
        machine_s=sum(float(t.get("duration", 0)) for t in tests) / 1e9,
        starts=starts,
        start_s=start_s,
        slot_wait_s=slot_wait_s,
        saves=saves,
    )


@dataclass(frozen=True)
class Run:
    label: str
    wall_s: float
    breakdown: Breakdown
    returncode: int = 0


def describe(run: Run, workers: int) -> str:
    b = run.breakdown
    kinds = ", ".join(
        f"{count} {kind} {seconds:.0f} s"
        for kind in (START_RESTORED, START_FIRSTBOOT, START_COLD)
        for count, seconds in [b.starts.get(kind, (0, 0.0))]
        if count
    )
    return (
        f"{run.label:<8} {run.wall_s:7.0f} s wall  {b.passed}/{b.tests} passed  machine time {b.machine_s:.0f} s: "
        f"starts {b.start_s:.0f} s ({kinds or 'none'}), slot waits {b.slot_wait_s:.0f} s, "
        f"the tests' own work {b.work_s:.0f} s (at best {b.floor_s(workers):.0f} s of wall on {workers} workers); "
        f"workers idle {max(run.wall_s * workers - b.machine_s, 0.0):.0f} s"
    )


def summary(runs: Sequence[Run], workers: int) -> list[str]:
    """What the script prints: each run, then each warm run's ratio against the off runs and the bound."""
    lines = [describe(run, workers) for run in runs]
    offs = [run for run in runs if run.label == "off"]
    for off in offs:
        for warm in (run for run in runs if run.label != "off"):
            floor = warm.breakdown.floor_s(workers)
            bound = f"{off.wall_s / floor:.2f}x" if floor > 0 else "none"
            lines.append(
                f"off {off.wall_s:.0f} s / {warm.label} {warm.wall_s:.0f} s = {off.wall_s / warm.wall_s:.2f}x"
                f"  (bound: off / the warm run's own work on {workers} workers = {bound})"
            )
    return lines


def run_suites(label: str, warm: str, workers: int, output: Path, extra: Iterable[str]) -> Run:
    command = [
        sys.executable, "-m", "pytest", "--platform=qemu", "-n", str(workers), f"--warm={warm}",
        "-p", "no:cacheprovider", "-q", f"--output-dir={output}", *extra, "suites/",
    ]  # fmt: skip
    print("running:", " ".join(command), flush=True)
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    return Run(label, wall, read_breakdown(output), proc.returncode)


def read_breakdown(output: Path) -> Breakdown:
    report = output / "reports" / "report.json"
    if not report.is_file():
        raise SystemExit(f"no {report} (was {output} a run's --output-dir?)")
    return breakdown(json.loads(report.read_text()))


def wall_of(output: Path) -> float:
    """A finished run's wall time, from its JUnit report's total."""
    junit = output / "reports" / "junit.xml"
    match = re.search(r'<testsuite [^>]*\btime="([0-9.]+)"', junit.read_text()) if junit.is_file() else None
    if match is None:
        raise SystemExit(f"no wall time in {junit}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="xdist workers (default 2, as README's main job)"
    )
    parser.add_argument(
        "--warmups", type=int, default=3, help="warm runs at most before the off run (default 3)"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="where the runs go (default: a new temp dir)"
    )
    parser.add_argument(
        "--off", type=Path, metavar="DIR", help="analyse an off run made before (its --output-dir)"
    )
    parser.add_argument("--warm", type=Path, nargs="+", metavar="DIR", help="... and warm runs made before")
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    if args.off or args.warm:
        if not (args.off and args.warm):
            parser.error("--off and --warm go together")
        runs = [Run("off", wall_of(args.off), read_breakdown(args.off))]
        runs += [Run(f"warm {i}", wall_of(d), read_breakdown(d)) for i, d in enumerate(args.warm, start=1)]
    else:
        output = args.output or Path(tempfile.mkdtemp(prefix="railyard-warm-suites-"))
        warm = None
        for attempt in range(1, max(args.warmups, 1) + 1):
            warm = run_suites(f"warm {attempt}", "all", args.workers, output / f"warm{attempt}", args.extra)
            print(describe(warm, args.workers), flush=True)
            if warm.breakdown.all_restored:
                break
        assert warm is not None
        runs = [warm, run_suites("off", "off", args.workers, output / "off", args.extra)]
        runs.append(run_suites("warm after", "all", args.workers, output / "warm-after", args.extra))
    print()
    print("\n".join(summary(runs, args.workers)))
    return 0 if all(run.returncode == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
