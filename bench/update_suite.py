"""Wall time of the update suite run serially and in parallel, in one run of this script.

Runs `pytest --platform=qemu suites/test_update.py` with `-n 1`, then with `-n 4` (or `--workers`), both on
the same cached images and payloads (they are built first, outside the timings), and prints both wall times,
the speed-up, and each run's pass/fail counts. Under TCG on a 2-core host, boot admission keeps four workers
from starving each other, so the speed-up is bounded by the cores, not by the workers.

    .venv/bin/python bench/update_suite.py [--channel stable ...] [--workers 4] [-- extra pytest args]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHANNELS = ("alpha", "beta", "stable", "lts")
SUMMARY = re.compile(r"=+ (?P<body>.*\bin [\d.]+s.*) =+$")


@dataclass(frozen=True)
class Timing:
    workers: int
    seconds: float
    returncode: int
    summary: str


def prepare(channels: list[str]) -> None:
    """Build (or find cached) every image and payload the suite needs, so the timings hold only tests."""
    sys.path.insert(0, str(ROOT))
    from images.build import ensure_image, update_payload

    for channel in channels:
        ensure_image(channel=channel, progress=print)
        for steps in (1, 2):
            version, path = update_payload(channel, steps, progress=print)
            print(f"{channel}: payload {version} at {path}")


def run_suite(workers: int, channels: list[str], extra: list[str]) -> Timing:
    command = [
        sys.executable, "-m", "pytest", "--platform=qemu", "-n", str(workers), "-p", "no:cacheprovider", "-q",
        *[f"--channel={c}" for c in channels], *extra, "suites/test_update.py",
    ]  # fmt: skip
    print("running:", " ".join(command), flush=True)
    start = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    summary = ""
    for line in reversed(proc.stdout.splitlines()):
        match = SUMMARY.search(line.strip())
        if match:
            summary = match.group("body")
            break
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:])
    return Timing(workers, seconds, proc.returncode, summary or f"exit status {proc.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channel", action="append", choices=CHANNELS, help="channels to run (default: all)")
    parser.add_argument(
        "--workers", type=int, default=4, help="xdist workers of the parallel run (default 4)"
    )
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    channels = args.channel or list(CHANNELS)
    prepare(channels)
    serial = run_suite(1, channels, args.extra)
    parallel = run_suite(args.workers, channels, args.extra)
    print()
    print(f"update suite, channels {', '.join(channels)}, host cores {os.cpu_count()}")
    print(f"  -n 1:  {serial.seconds:8.1f} s  ({serial.summary})")
    print(f"  -n {args.workers}:  {parallel.seconds:8.1f} s  ({parallel.summary})")
    print(f"  speed-up (-n 1 / -n {args.workers}): {serial.seconds / parallel.seconds:.2f}x")
    return 0 if serial.returncode == 0 and parallel.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
