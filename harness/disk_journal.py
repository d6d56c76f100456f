"""Reading a stopped machine's journal from its own disk, without booting it or mounting anything.

When a machine never answers SSH, its journal is the one record of why (which unit waited, what failed), and
SSH is the usual way to read it. The machine's copy-on-write overlay is still there after it stops, so the
journal is read from it on the host: the disk is converted to a sparse raw file, the root partition found in
its GPT by name and copied out, the ext4 journal replayed on that copy (`e2fsck -E journal_only`),
`/var/log/journal` copied out of it with `debugfs` (no mount, no loop device), and rendered by the host's
`journalctl --directory`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import RailyardError

log = logging.getLogger(__name__)

SECTOR = 512
JOURNAL_DIR = "/var/log/journal"
# GPT names of the partition holding /var: ROOT on Flatcar and the default image, root on Fedora CoreOS.
ROOT_NAMES = ("ROOT", "root")
TOOL_TIMEOUT = 300.0


class DiskJournalError(RailyardError):
    """The journal could not be read from the disk (the message says which step failed)."""


@dataclass(frozen=True)
class Partition:
    name: str
    start: int
    """Byte offset in the disk."""
    size: int
    """Bytes."""


def gpt_partitions(sfdisk_json: str) -> list[Partition]:
    """The partitions `sfdisk --json` lists, with byte offsets."""
    try:
        table = json.loads(sfdisk_json)["partitiontable"]
        sector = int(table.get("sectorsize", SECTOR))
        return [
            Partition(str(p.get("name", "")), int(p["start"]) * sector, int(p["size"]) * sector)
            for p in table.get("partitions", [])
        ]
    except (KeyError, ValueError, TypeError) as exc:
        raise DiskJournalError(f"cannot read the partition table: {exc}") from exc


def root_partition(partitions: list[Partition]) -> Partition:
    for name in ROOT_NAMES:
        for part in partitions:
            if part.name == name:
                return part
    names = ", ".join(p.name or "(unnamed)" for p in partitions) or "none"
    raise DiskJournalError(f"no partition named {' or '.join(ROOT_NAMES)} on the disk (partitions: {names})")


def _run(argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskJournalError(f"{what}: {exc}") from exc
    if result.returncode not in ok:
        output = (result.stdout + result.stderr).strip()[-500:]
        raise DiskJournalError(f"{what} failed ({result.returncode}): {output}")
    return result.stdout


def read_journal(disk: Path, args: tuple[str, ...] = ("-o", "short-monotonic")) -> str:
    """The journal on `disk` (a qcow2 or raw image of a stopped machine), rendered by `journalctl`.

    It holds what reached the machine's disk before it stopped: the last seconds of a machine that was cut
    off may be missing (journald writes through the page cache).

    Raises DiskJournalError naming the step that failed (a missing tool, no root partition, no journal).
    """
    for tool in ("qemu-img", "sfdisk", "dd", "e2fsck", "debugfs", "journalctl"):
        if shutil.which(tool) is None:
            raise DiskJournalError(f"{tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="railyard-journal-") as tmp:
        raw = Path(tmp) / "disk.raw"
        # Sparse: only what the guest wrote takes space. Converting the overlay resolves its backing chain.
        _run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], "qemu-img convert")
        root = root_partition(gpt_partitions(_run(["sfdisk", "--json", str(raw)], "sfdisk --json")))
        part = Path(tmp) / "root.ext4"
        _run(
            ["dd", f"if={raw}", f"of={part}", "bs=4M", f"skip={root.start}", f"count={root.size}",
             "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"],
            "copying the root partition",
        )  # fmt: skip
        raw.unlink()
        # What the guest wrote last may sit in the file system's own journal (a stopped machine never
        # checkpoints it): replay it on the copy, or debugfs reads those blocks as they were before.
        # e2fsck exits 1 or 2 when it changed the file system (replayed the journal), which is the point.
        _run(
            ["e2fsck", "-fy", "-E", "journal_only", str(part)],
            "replaying the file system's journal",
            ok=(0, 1, 2),
        )
        out = Path(tmp) / "journal"
        out.mkdir()
        _run(
            ["debugfs", "-R", f"rdump {JOURNAL_DIR} {out}", str(part)],
            f"copying {JOURNAL_DIR} out of the root file system",
        )
        if not any(out.rglob("*.journal*")):
            raise DiskJournalError(f"the root file system has no journal files in {JOURNAL_DIR}")
        return _run(
            ["journalctl", "--no-pager", f"--directory={out / 'journal'}", *args], "journalctl --directory"
        )
