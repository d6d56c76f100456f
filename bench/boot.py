"""Boot benchmark of the default image under this host's acceleration.

Prints, as medians over --runs: a plain `qemu-system-x86_64` boot of the same kernel with a minimal initramfs
(direct kernel boot to a PID 1 that powers off), the default image's first boot with Ignition to an SSH login,
and a reboot to a new boot id; then the ratios to the plain boot, and the targets.

    .venv/bin/python bench/boot.py [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from harness.acceleration import Timeouts, detect
from harness.distros import get_distro
from harness.ignition import IgnitionConfig
from harness.machine import GuestMachine
from harness.ssh import generate_keypair
from images.build import default_cache_dir, ensure_image
from platforms.base import FirstBootConfig, MachineSpec, PlatformContext
from platforms.qemu import QemuPlatform
from platforms.qemu.command import accel_args

TARGET_FIRST_BOOT = 40.0
TARGET_REBOOT = 25.0
MARKER = b"RAILYARD-BENCH-USERSPACE"


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's `newc` format: (name, mode, data) entries."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.write(b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + encoded)
        out.write(b"\0" * (-out.tell() % 4) + data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def minimal_initramfs(directory: Path) -> Path:
    init = directory / "init"
    source = Path(__file__).with_name("mini_init.c")
    subprocess.run(["gcc", "-static", "-Os", "-o", str(init), str(source)], check=True)
    cpio = directory / "mini.cpio"
    cpio.write_bytes(_newc([("dev", 0o040755, b""), ("init", 0o100755, init.read_bytes())]))
    return cpio


def image_kernel(directory: Path) -> Path:
    """The kernel of the default image, from the cached root file system."""
    [tarball] = sorted((default_cache_dir() / "rootfs").glob("rootfs-*.tar"))[-1:]
    with tarfile.open(tarball) as tar:
        member = next(m for m in tar.getmembers() if Path(m.name).name.startswith("vmlinuz-"))
        data = tar.extractfile(member)
        assert data is not None
        kernel = directory / "vmlinuz"
        kernel.write_bytes(data.read())
    return kernel


def plain_boot(kernel: Path, initrd: Path, accel_name: str, workdir: Path) -> float:
    accel = detect(accel_name)
    console = workdir / "plain-console.txt"
    argv = [
        "qemu-system-x86_64", "-machine", "q35", *accel_args(accel), "-smp", "2", "-m", "1024",
        "-nodefaults", "-vga", "none", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 quiet panic=-1",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while MARKER not in (console.read_bytes() if console.exists() else b""):
            if proc.poll() is not None or time.monotonic() - start > 300:
                raise RuntimeError("the plain boot did not reach userspace")
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()


def image_boots(accel_name: str, workdir: Path) -> tuple[float, float]:
    accel = detect(accel_name)
    timeouts = Timeouts.for_acceleration(accel)
    built = ensure_image()
    distro = get_distro("railyard")
    keys = generate_keypair(workdir)
    ignition = FirstBootConfig.render(
        IgnitionConfig().add_user("core", ssh_keys=[keys.public_line], groups=["sudo"]).to_dict()
    )
    ctx = PlatformContext("bench", workdir, accel, timeouts, {})
    platform = QemuPlatform(ctx)
    platform.validate()
    try:
        spec = MachineSpec(
            name="bench", image=built.path, ignition=ignition, ignition_fw_cfg=distro.ignition_fw_cfg,
            workdir=workdir / f"m-{time.monotonic_ns()}",
        )  # fmt: skip
        spec.workdir.mkdir(parents=True)
        start = time.monotonic()
        vm = platform.boot(spec)
        guest = GuestMachine(vm, pkey=keys.pkey, timeouts=timeouts, distro=distro, channel="stable")
        guest.wait_for_ssh()
        first = time.monotonic() - start
        guest.settle()
        start = time.monotonic()
        guest.reboot()
        reboot = time.monotonic() - start
        guest.close()
        return first, reboot
    finally:
        platform.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        print(
            "bench: gcc is needed for the minimal initramfs (apt-get install gcc libc6-dev)", file=sys.stderr
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="railyard-bench-") as tmp:
        workdir = Path(tmp)
        kernel, initrd = image_kernel(workdir), minimal_initramfs(workdir)
        plain = [plain_boot(kernel, initrd, args.accel, workdir) for _ in range(args.runs)]
        boots = [image_boots(args.accel, workdir) for _ in range(args.runs)]
    p = statistics.median(plain)
    first = statistics.median(b[0] for b in boots)
    reboot = statistics.median(b[1] for b in boots)
    print(f"acceleration: {detect(args.accel).name}, median of {args.runs} runs")
    print(f"plain kernel + minimal initramfs to userspace: {p:6.1f} s")
    print(
        f"first boot with Ignition to SSH login:        {first:6.1f} s  ratio {first / p:5.2f}  target <= {TARGET_FIRST_BOOT:.0f} s"
    )
    print(
        f"reboot to a new boot id:                      {reboot:6.1f} s  ratio {reboot / p:5.2f}  target <= {TARGET_REBOOT:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
