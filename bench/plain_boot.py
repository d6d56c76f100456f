"""The floor a boot is compared with: the default image's kernel booted directly (`-kernel`, no firmware)
with a minimal initramfs whose PID 1 prints a marker and powers off, on the same QEMU acceleration.

The same boot of the kernel taken out of its bzImage (an ELF `vmlinux` that QEMU enters through its PVH note)
measures what every boot spends in the kernel's own decompressor, which runs before the kernel's clock starts
and so counts in the phase "firmware + boot loader"."""

from __future__ import annotations

import io
import lzma
import subprocess
import tarfile
import time
import zlib
from pathlib import Path

from bench.console_tail import ConsoleTail
from harness.acceleration import detect
from images.build import default_cache_dir
from platforms.qemu.command import accel_args

MARKER = "RAILYARD-BENCH-USERSPACE"
PLAIN_TIMEOUT = 300.0


def newc_archive(entries: list[tuple[str, int, bytes]]) -> bytes:
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
    cpio.write_bytes(newc_archive([("dev", 0o040755, b""), ("init", 0o100755, init.read_bytes())]))
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


XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b\x08"
ELF_MAGIC = b"\x7fELF"


def _unxz(data: bytes) -> bytes | None:
    try:  # the payload is followed by the decompressor's trailer: read one stream, ignore the rest
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    except lzma.LZMAError:
        return None


def _gunzip(data: bytes) -> bytes | None:
    try:  # one gzip member; what follows it is left in unused_data
        return zlib.decompressobj(wbits=31).decompress(data)
    except zlib.error:
        return None


PACKINGS = (("xz", XZ_MAGIC, _unxz), ("gzip", GZIP_MAGIC, _gunzip))
"""The compressors of a bzImage that Python reads: name, the payload's magic bytes, the unpacker."""


def unpack_kernel(kernel: Path, directory: Path) -> tuple[str, Path | None]:
    """How a bzImage packs its kernel ("xz", "gzip" or "other", by the first payload magic in it) and the
    ELF kernel inside it (`vmlinux`, written to `directory`), None where Python cannot unpack it."""
    data = kernel.read_bytes()
    found = [(data.find(magic), name) for name, magic, _ in PACKINGS if magic in data]
    packing = min(found)[1] if found else "other"
    for _, magic, unpack in PACKINGS:
        start = data.find(magic)
        while start >= 0:
            elf = unpack(data[start:])
            if elf is not None and elf.startswith(ELF_MAGIC):
                out = directory / "vmlinux"
                out.write_bytes(elf)
                return packing, out
            start = data.find(magic, start + 1)
    return packing, None


def plain_boot(kernel: Path, initrd: Path, accel_name: str, console: Path) -> float:
    """Seconds from starting QEMU to the marker of the minimal PID 1 on `console`, a file that must not
    exist yet (each run has its own, so an earlier run's marker is never found)."""
    if console.exists():
        raise FileExistsError(f"{console} exists: each plain boot needs a console file of its own")
    accel = detect(accel_name)
    argv = [
        "qemu-system-x86_64", "-machine", "q35", *accel_args(accel), "-smp", "2", "-m", "1024",
        "-nodefaults", "-vga", "none", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 quiet panic=-1",
    ]  # fmt: skip
    with ConsoleTail(console, interval=0.01) as tail:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    return tail.wait_for(MARKER, timeout=1.0).at - start
                except TimeoutError:
                    if proc.poll() is None and time.monotonic() - start < PLAIN_TIMEOUT:
                        continue
                    break  # QEMU ended (or took too long): one last look below
            try:
                return tail.wait_for(MARKER, timeout=0.5).at - start
            except TimeoutError:
                raise RuntimeError(f"the plain boot did not reach userspace; see {console}") from None
        finally:
            proc.kill()
            proc.wait()
