"""GPT disk layout and assembly, without loop devices or mounts.

File systems are made in plain files (mkfs.ext4 -d, mkfs.vfat -C + mtools), the partition
table is written into the raw disk file by sfdisk, the file systems are copied in with dd,
and the raw disk is converted to qcow2.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ImageError
from images.hosttools import run

log = logging.getLogger(__name__)

MIB = 1024 * 1024
SECTOR = 512
ALIGN_MIB = 1
# GPT needs 34 sectors at the end for its backup copy; keep a whole MiB.
TRAILER_MIB = 1

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

ESP_MIB = 160
ROOT_MIB = 1024  # room for a downloaded /usr payload (the update agent keeps it in /var)
USR_MIN_MIB = 768
USR_GRANULE_MIB = 64


@dataclass(frozen=True)
class Partition:
    number: int
    label: str
    type_guid: str
    start_mib: int
    size_mib: int

    @property
    def start_bytes(self) -> int:
        return self.start_mib * MIB

    @property
    def size_bytes(self) -> int:
        return self.size_mib * MIB

    @property
    def end_mib(self) -> int:
        return self.start_mib + self.size_mib


@dataclass(frozen=True)
class DiskLayout:
    partitions: tuple[Partition, ...]
    total_mib: int

    def partition(self, label: str) -> Partition:
        for p in self.partitions:
            if p.label == label:
                return p
        raise KeyError(label)

    def sfdisk_script(self) -> str:
        lines = ["label: gpt", "unit: sectors", f"first-lba: {ALIGN_MIB * MIB // SECTOR}", ""]
        for p in self.partitions:
            lines.append(
                f"start={p.start_bytes // SECTOR}, size={p.size_bytes // SECTOR}, "
                f'type={p.type_guid}, name="{p.label}"'
            )
        return "\n".join(lines) + "\n"


def usr_partition_mib(usr_content_bytes: int) -> int:
    """Size of each USR slot: the content plus room for a larger update, in 64 MiB steps."""
    wanted = usr_content_bytes * 1.3 + 96 * MIB
    granules = -(-int(wanted) // (USR_GRANULE_MIB * MIB))
    return max(USR_MIN_MIB, granules * USR_GRANULE_MIB)


def compute_layout(usr_mib: int, esp_mib: int = ESP_MIB, root_mib: int = ROOT_MIB) -> DiskLayout:
    """ESP, USR-A, USR-B, ROOT in this order, 1 MiB aligned; ROOT last so it could grow."""
    if min(usr_mib, esp_mib, root_mib) <= 0:
        raise ImageError(f"partition sizes must be positive: usr={usr_mib} esp={esp_mib} root={root_mib} MiB")
    start = ALIGN_MIB
    parts: list[Partition] = []
    for number, (label, type_guid, size) in enumerate(
        (
            ("ESP", ESP_TYPE, esp_mib),
            ("USR-A", LINUX_TYPE, usr_mib),
            ("USR-B", LINUX_TYPE, usr_mib),
            ("ROOT", LINUX_TYPE, root_mib),
        ),
        start=1,
    ):
        parts.append(Partition(number, label, type_guid, start, size))
        start += size
    return DiskLayout(tuple(parts), start + TRAILER_MIB)


def make_ext4(source: Path, image: Path, size_mib: int, label: str, journal: bool) -> None:
    """An ext4 file system filled from a directory, in a (sparse) file of exactly size_mib."""
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size_mib * MIB)
    features = "^has_journal" if not journal else "has_journal"
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-b",
            "4096",
            "-m",
            "0",
            "-O",
            features,
            "-E",
            "root_owner=0:0",
            "-d",
            source,
            image,
        ],
        f"mkfs.ext4 ({label})",
    )


def make_esp(image: Path, size_mib: int, files: Mapping[str, Path], texts: Mapping[str, str]) -> None:
    """A FAT32 ESP in a file; files/texts map an ESP path (e.g. 'EFI/BOOT/BOOTX64.EFI') to content."""
    image.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-F", "32", "-n", "ESP", image, str(size_mib * 1024)], "mkfs.vfat (ESP)")
    dirs: set[str] = set()
    for dest in [*files, *texts]:
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    for d in sorted(dirs, key=lambda s: (s.count("/"), s)):
        run(["mmd", "-i", image, f"::/{d}"], "mmd (ESP)")
    for dest, src in files.items():
        run(["mcopy", "-i", image, src, f"::/{dest}"], "mcopy (ESP)")
    with tempfile.TemporaryDirectory() as tmp:
        for dest, text in texts.items():
            path = Path(tmp) / dest.replace("/", "_")
            path.write_text(text)
            run(["mcopy", "-i", image, path, f"::/{dest}"], "mcopy (ESP)")


def assemble(layout: DiskLayout, raw: Path, images: Mapping[str, Path]) -> None:
    """Write the partition table into a sparse raw disk and copy partition images into place."""
    raw.unlink(missing_ok=True)
    with raw.open("wb") as f:
        f.truncate(layout.total_mib * MIB)
    run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw],
        "sfdisk",
        stdin=layout.sfdisk_script().encode(),
    )
    for label, image in images.items():
        part = layout.partition(label)
        size = image.stat().st_size
        if size > part.size_bytes:
            raise ImageError(
                f"{label} image is {size} bytes, larger than its partition ({part.size_bytes} bytes)"
            )
        run(
            [
                "dd",
                f"if={image}",
                f"of={raw}",
                "bs=4M",
                f"seek={part.start_bytes}",
                "oflag=seek_bytes",
                "conv=notrunc,sparse",
                "status=none",
            ],
            f"dd ({label})",
        )


def convert_qcow2(raw: Path, qcow2: Path) -> None:
    qcow2.unlink(missing_ok=True)
    run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, qcow2],
        "qemu-img convert",
    )
