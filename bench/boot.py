"""Boot benchmark of the default image under this host's acceleration: how long, and where the time goes.

Prints, as medians over --runs: a plain `qemu-system-x86_64` boot of the same kernel with a minimal initramfs
(direct kernel boot to a PID 1 that powers off) and the same boot of the kernel unpacked from its bzImage (the
difference is the kernel's own decompression, part of every boot), the default image's first boot with Ignition to an SSH login,
a reboot to a new boot id, and the restore of a checkpoint of a booted machine to an SSH login; their ratios
to the plain boot and the targets; then the phases of a first boot and of a reboot (shutdown, firmware + boot
loader, kernel, initramfs before Ignition, Ignition, initramfs after it, switch-root to multi-user.target,
sshd), from console lines stamped on the host and the guest's systemd-analyze and journal (bench.boot_phases).

    .venv/bin/python bench/boot.py [--runs 3] [--reboots 1] [--json PATH|-] [--artifacts DIR] [--skip-plain]
                                   [--cpus N]

The machines have two vCPUs unless `--cpus` says otherwise; a test's machine has one under TCG (each machine
is admitted to one host core), and measures slower: `--cpus 1` shows what the suites' machines take.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: bench/ is a package

from bench.boot_phases import BOOT_PHASES, REBOOT_PHASES, median, median_phases
from bench.boot_run import BENCH_CPUS, BootBench, BootMeasure, RunResult
from bench.plain_boot import image_kernel, minimal_initramfs, plain_boot, unpack_kernel
from harness.acceleration import detect

TARGET_FIRST_BOOT = 40.0
TARGET_REBOOT = 25.0
TARGET_RESTORE = 3.0
TARGET_FIRSTBOOT_RESTORE_RATIO = 0.5
"""A first-boot restore to SSH, at most this fraction of a cold first boot."""
NO_FIRSTBOOT_CHECKPOINTS = "not measured (the image cannot wait for a first-boot checkpoint)"
NO_RESTORE = "not measured (the QEMU platform has no save_checkpoint/restore)"


@dataclass
class Summary:
    accel: str
    plain: list[float]
    runs: list[RunResult]
    restore_note: str | None
    plain_uncompressed: list[float] = field(default_factory=list)
    """The plain boot of the kernel taken out of its bzImage: no decompressor runs."""
    kernel_packing: str | None = None
    """How the image's bzImage packs its kernel ("xz", "gzip", "other")."""
    cpus: int = BENCH_CPUS
    """The vCPUs of the image's machines (the plain kernel boots have two)."""

    def kernel_decompression(self) -> float | None:
        """Seconds every boot spends in the kernel's own decompressor (plain boot, packed minus unpacked)."""
        packed, unpacked = median(self.plain), median(self.plain_uncompressed)
        return None if packed is None or unpacked is None else round(packed - unpacked, 3)

    def phases(self, which: str) -> dict[str, float | None]:
        names = BOOT_PHASES if which == "first" else REBOOT_PHASES
        return median_phases([boot.phases for boot in self.boots(which)], names)

    def seconds(self, which: str) -> float | None:
        return median([boot.seconds for boot in self.boots(which)])

    def restore(self) -> float | None:
        return median([run.restore_s for run in self.runs if run.restore_s is not None])

    def firstboot_restore(self) -> float | None:
        return median([r.firstboot_restore_s for r in self.runs if r.firstboot_restore_s is not None])

    def _firstboot_target(self) -> float | None:
        first = self.seconds("first")
        return None if first is None else round(first * TARGET_FIRSTBOOT_RESTORE_RATIO, 1)

    def boots(self, which: str) -> list[BootMeasure]:
        """The first boots of all runs (`first`), or all their reboots (`reboot`)."""
        if which == "first":
            return [run.first for run in self.runs]
        return [boot for run in self.runs for boot in run.reboots]

    def to_json(self) -> dict[str, Any]:
        return {
            "acceleration": self.accel,
            "cpus": self.cpus,
            "runs": len(self.runs),
            "reboots": len(self.boots("reboot")),
            "plain_kernel_s": median(self.plain),
            "plain_kernel_uncompressed_s": median(self.plain_uncompressed),
            "kernel_compression": self.kernel_packing,
            "kernel_decompression_s": self.kernel_decompression(),
            "first_boot_s": self.seconds("first"),
            "reboot_s": self.seconds("reboot"),
            "restore_s": self.restore(),
            "firstboot_restore_s": self.firstboot_restore(),
            "first_boot_phases": self.phases("first"),
            "reboot_phases": self.phases("reboot"),
            "targets": {
                "first_boot_s": TARGET_FIRST_BOOT,
                "reboot_s": TARGET_REBOOT,
                "restore_s": TARGET_RESTORE,
                "firstboot_restore_s": self._firstboot_target(),
            },
            "notes": {
                "restore_s": self.restore_note,
                "firstboot_restore_s": None
                if self.firstboot_restore() is not None
                else NO_FIRSTBOOT_CHECKPOINTS,
            },
            "per_run": [_run_json(run) for run in self.runs],
        }


def _boot_json(boot: BootMeasure) -> dict[str, Any]:
    return {
        "seconds": boot.seconds,
        "phases": boot.phases.seconds,
        "notes": boot.phases.notes,
        "systemd_analyze": dict(boot.analyze.parts) if boot.analyze else None,
        "blame": [[unit, seconds] for unit, seconds in boot.blame],
        "critical_chain": [[link.unit, link.at, link.took] for link in boot.chain],
        "shutdown_console": [[round(at, 2), text] for at, text in boot.shutdown_console],
        "marks": boot.marks,
    }


def _run_json(run: RunResult) -> dict[str, Any]:
    return {
        "first_boot": _boot_json(run.first),
        "reboots": [_boot_json(boot) for boot in run.reboots],
        "restore_s": run.restore_s,
        "firstboot_restore_s": run.firstboot_restore_s,
    }


def _seconds(value: float | None, width: int = 6) -> str:
    return f"{value:{width}.1f} s" if value is not None else f"{'-':>{width}}  "


def _line(label: str, value: float | None, plain: float | None, target: float) -> str:
    if value is None:
        return f"{label:<46}{'not measured':>8}"
    ratio = f"ratio {value / plain:5.2f}" if plain else "ratio     -"
    return f"{label:<46}{_seconds(value)}  {ratio}  target <= {target:.0f} s"


def render(summary: Summary, out: TextIO) -> None:
    """The human-readable report: totals with ratios and targets, phases, and the last run's details."""
    plain = median(summary.plain)
    count = len(summary.boots("reboot"))
    print(
        f"acceleration: {summary.accel}, {summary.cpus} vCPU, median of {len(summary.runs)} runs ({count} reboots)",
        file=out,
    )
    print(f"{'plain kernel + minimal initramfs to userspace:':<46}{_seconds(plain)}", file=out)
    unpack = summary.kernel_decompression()
    if unpack is not None:
        unpacked = median(summary.plain_uncompressed)
        print(
            f"{'  the same, kernel unpacked from its bzImage:':<46}{_seconds(unpacked)}  so the kernel's own "
            f"{summary.kernel_packing} decompression costs {unpack:.1f} s of every boot (in firmware + boot loader)",
            file=out,
        )
    first, reboot = summary.seconds("first"), summary.seconds("reboot")
    print(_line("first boot with Ignition to SSH login:", first, plain, TARGET_FIRST_BOOT), file=out)
    print(_line("reboot to a new boot id:", reboot, plain, TARGET_REBOOT), file=out)
    restore = summary.restore()
    if restore is None:
        print(f"{'restore of a booted checkpoint to SSH login:':<46}{summary.restore_note}", file=out)
    else:
        speedup = f"  {first / restore:5.1f}x faster than a cold first boot" if first and restore else ""
        print(
            _line("restore of a booted checkpoint to SSH login:", restore, plain, TARGET_RESTORE) + speedup,
            file=out,
        )
    firstboot = summary.firstboot_restore()
    label = "restore of a first-boot checkpoint to SSH:"
    if firstboot is None:
        print(f"{label:<46}{NO_FIRSTBOOT_CHECKPOINTS}", file=out)
    else:
        target = summary._firstboot_target()
        ratio = f"{firstboot / first:4.2f} of a cold first boot" if first else ""
        print(f"{label:<46}{_seconds(firstboot)}  {ratio}  target <= {target} s", file=out)
    firsts, reboots = summary.phases("first"), summary.phases("reboot")
    print(f"\nphases (median){'first boot':>40}{'reboot':>12}", file=out)
    for name in REBOOT_PHASES:
        print(f"  {name:<41}{_seconds(firsts.get(name), 8)}{_seconds(reboots.get(name), 8)}", file=out)
    sums = [sum(v for v in phases.values() if v is not None) for phases in (firsts, reboots)]
    print(f"  {'sum of the phases':<41}{_seconds(sums[0], 8)}{_seconds(sums[1], 8)}", file=out)
    recovered = [n for boot in summary.boots("reboot") for n in boot.phases.notes if n.startswith("harness:")]
    for note in recovered:
        print(f"  {note[:160]}", file=out)
    if not summary.runs:
        return
    last = summary.runs[-1]
    for title, boot in (("first boot", last.first), *(("reboot", boot) for boot in last.reboots[-1:])):
        print(f"\n{title} (last run, {boot.seconds:.1f} s):", file=out)
        for note in boot.phases.notes:
            print(f"  note: {note}", file=out)
        if boot.analyze is not None:
            parts = " + ".join(f"{v:.1f} s ({k})" for k, v in boot.analyze.parts.items())
            print(f"  systemd-analyze: {parts} = {boot.analyze.total:.1f} s", file=out)
        else:
            print("  systemd-analyze: not available", file=out)
        print("  blame: " + ", ".join(f"{unit} {s:.1f} s" for unit, s in boot.blame[:6]), file=out)
        chain = [f"{x.unit} @{x.at:.1f}" + (f" +{x.took:.1f}" if x.took else "") for x in boot.chain[:6]]
        print("  critical chain: " + " <- ".join(chain), file=out)
        seen = [f"{name} +{at:.1f} s" for name, at in boot.marks.items() if at is not None]
        print("  seen at: " + (", ".join(seen) or "nothing"), file=out)
        for at, text in boot.shutdown_console:
            print(f"  console +{at:6.1f} s  {text[:100]}", file=out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON to PATH (- for stdout)"
    )
    parser.add_argument(
        "--artifacts", metavar="DIR", type=Path, help="keep consoles, journals, analyses here"
    )
    parser.add_argument("--reboots", type=int, default=1, help="reboots per run (each one measured)")
    parser.add_argument("--skip-plain", action="store_true", help="leave out the plain kernel boot")
    parser.add_argument(
        "--cpus", type=int, default=BENCH_CPUS,
        help=f"vCPUs of the image's machines (default {BENCH_CPUS}; a test's machine has 1 under TCG)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if shutil.which("gcc") is None and not args.skip_plain:
        print(
            "bench: gcc is needed for the minimal initramfs (apt-get install gcc libc6-dev)", file=sys.stderr
        )
        return 2
    accel = detect(args.accel)
    with tempfile.TemporaryDirectory(prefix="railyard-bench-") as tmp:
        workdir = Path(tmp)
        plain: list[float] = []
        unpacked: list[float] = []
        packing: str | None = None
        if not args.skip_plain:
            kernel, initrd = image_kernel(workdir), minimal_initramfs(workdir)
            packing, vmlinux = unpack_kernel(kernel, workdir)
            for n in range(args.runs):
                plain.append(plain_boot(kernel, initrd, args.accel, workdir / f"plain-console-{n}.txt"))
                if vmlinux is not None:
                    console = workdir / f"plain-unpacked-console-{n}.txt"
                    unpacked.append(plain_boot(vmlinux, initrd, args.accel, console))
        bench = BootBench(accel, workdir, args.artifacts, cpus=args.cpus)
        try:
            note = None if bench.restore_supported else NO_RESTORE
            runs = [bench.run(n, args.reboots) for n in range(args.runs)]
        finally:
            bench.close()
    summary = Summary(accel.name, plain, runs, note, unpacked, packing, bench.cpus)
    # With --json -, the JSON alone goes to stdout and the table to stderr.
    render(summary, sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        text = json.dumps(summary.to_json(), indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
