"""The warm pool: machines restored from booted checkpoints instead of booting cold.

A machine whose image, Ignition config and shape match a saved checkpoint (`--warm=booted`, the default where the
platform has checkpoints) is restored from it: it resumes, booted and settled, a few seconds after it starts.
The second machine of a key (in this run or an earlier one: a config that comes back) saves the checkpoint
for the others, under the cache (`~/.cache/railyard/checkpoints/<key>/`), so later runs use it too. The key hashes everything that changes the
guest: the platform's signature (image file, hypervisor version, machine shape, firmware, devices) and the
Ignition config; anything changed gives a new key, checkpoints unused for a week are deleted,
and so are those whose image file was deleted or rebuilt (no machine can match them again).

Each restored machine is a machine of its own: its own copy-on-write disk (its writes never reach the
checkpoint or another clone), console and SSH port; its kernel RNG reseeded at resume (QEMU's vmgenid); its
wall clock set to the host's. What clones still share with the machine that made the checkpoint: the machine
id, the SSH host keys, the boot id of that boot, and whatever that first boot wrote (to its extra disks too:
they are saved with it). The machines that share a segment (a private network, extra NICs) differ in MACs
and addresses, so they never share a checkpoint: each has the machine id and host keys of its own first
boot. Tests marked `@pytest.mark.flags("cold_boot")` always boot cold. A checkpoint that cannot be restored (truncated, saved by another QEMU) is
dropped, and the machine boots cold with a note: never a failure.

Checkpoints are made by one process at a time per key (a lock file; a process that finds the lock taken boots
cold without saving), written into a temporary directory and published by an atomic rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

WARM_MODES = ("off", "booted", "firstboot", "all")
"""`--warm` (see harness.starts): which checkpoints machines may be restored from."""
START_COLD = "cold"
START_RESTORED = "restored-booted"
START_FIRSTBOOT = "restored-firstboot"
COMPLETE = "checkpoint.json"
MAX_IDLE = 7 * 24 * 3600.0
"""Checkpoints unused for this long are deleted."""
_TEMP = ".tmp-"


@dataclasses.dataclass(frozen=True)
class StartRecord:
    """How a machine came up, for the test's report."""

    kind: str
    """START_COLD or START_RESTORED."""
    seconds: float
    """From asking the platform for the machine until it is up (SSH answers; settled after a boot)."""
    checkpoint: str = ""
    """The checkpoint it was restored from (its key)."""
    note: str = ""
    slot_wait: float = 0.0
    """How long it waited for a machine slot of the host (harness.admission) before it was asked for: part
    of the test's duration, not of `seconds`."""

    def describe(self) -> str:
        text = f"{self.kind} in {self.seconds:.1f} s"
        text += f" from {self.checkpoint}" if self.checkpoint else ""
        if self.slot_wait >= SLOT_WAIT_SHOWN:
            text += f", after {self.slot_wait:.1f} s waiting for a machine slot"
        return f"{text} ({self.note})" if self.note else text

    @classmethod
    def parse(cls, text: str) -> StartRecord:
        """The record a report's `start <machine>` line describes (`describe`'s inverse; a wait too short to
        be shown reads as none). Raises ValueError for a line `describe` cannot have written."""
        match = _DESCRIBED.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a machine start: {text!r}")
        return cls(
            kind=match["kind"],
            seconds=float(match["seconds"]),
            checkpoint=match["checkpoint"] or "",
            note=match["note"] or "",
            slot_wait=float(match["wait"] or 0.0),
        )


_DESCRIBED = re.compile(
    rf"(?P<kind>{START_COLD}|{START_RESTORED}|{START_FIRSTBOOT}) in (?P<seconds>[0-9.]+) s"
    r"(?: from (?P<checkpoint>[^\s,()]+))?"
    r"(?:, after (?P<wait>[0-9.]+) s waiting for a machine slot)?(?: \((?P<note>.*)\))?"
)

SLOT_WAIT_SHOWN = 0.5
"""Shorter waits for a machine slot are not worth a word in the report."""


@dataclasses.dataclass
class Draft:
    """A checkpoint being saved: the directory to save into. `abandoned` keeps it from being published."""

    key: str
    directory: Path
    abandoned: bool = False


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One saved checkpoint, as `railyard checkpoints` lists it."""

    key: str
    path: Path
    about: dict[str, object]
    """What its `checkpoint.json` says: kind, the machine it was made by or for, when."""
    size_bytes: int
    last_used: float
    """When a machine was last restored from it (or it was made), as a Unix time."""


def image_about(image: Path) -> dict[str, str]:
    """What a checkpoint's `checkpoint.json` says of the image its machine booted: the file, its size and
    when it last changed, so a checkpoint whose image was deleted or rebuilt is pruned at once (its key can
    never come back)."""
    try:
        resolved = image.resolve()
        stat = resolved.stat()
    except OSError:
        return {}
    return {"image": str(resolved), "image size": str(stat.st_size), "image mtime_ns": str(stat.st_mtime_ns)}


def image_gone(about: dict[str, object]) -> str | None:
    """Why the image a checkpoint was made from is no longer the one it booted (deleted, rebuilt), or None
    while it is (and for a checkpoint that names no image)."""
    path = about.get("image")
    if not isinstance(path, str):
        return None
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        return f"its image {path} is gone"
    except OSError:
        return None
    if str(stat.st_size) != about.get("image size") or str(stat.st_mtime_ns) != about.get("image mtime_ns"):
        return f"its image {path} has changed since"
    return None


def checkpoint_key(signature: str, ignition: str) -> str:
    """The key of a checkpoint: a hash of the platform's signature and the Ignition config's text."""
    digest = hashlib.sha256()
    for part in (signature, ignition):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CheckpointStore:
    """Checkpoint directories under `root`, one per key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    def find(self, key: str) -> Path | None:
        """The complete checkpoint of `key` (marked as used now), or None."""
        directory = self.path(key)
        marker = directory / COMPLETE
        if not marker.is_file():
            return None
        with contextlib.suppress(OSError):
            os.utime(marker)
        return directory

    @contextlib.contextmanager
    def making(self, key: str, about: dict[str, str]) -> Iterator[Draft | None]:
        """A temporary directory to save the checkpoint of `key` into, published as the checkpoint when the
        block ends without an error and the draft was not abandoned (removed otherwise). None when another
        process is making it or it already exists: boot cold then, without saving."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            if self.find(key) is not None:
                yield None
                return
            temporary = self.root / f"{_TEMP}{key}-{os.getpid()}"
            _remove(temporary)
            temporary.mkdir(parents=True)
            draft = Draft(key, temporary)
            try:
                yield draft
                if draft.abandoned:
                    return
                (temporary / COMPLETE).write_text(
                    json.dumps({"key": key, "created": time.time(), **about}, indent=2) + "\n"
                )
                _remove(self.path(key))  # an unusable one left by a crash, under our lock
                os.rename(temporary, self.path(key))
            finally:
                _remove(temporary)

    def wanted(self, key: str) -> bool:
        """Count a machine of `key` coming up without a checkpoint; True from the second one on (in this run
        or an earlier one): a checkpoint is only worth its disk space for a config that comes back."""
        seen = self.root / ".seen" / key
        if seen.exists():
            with contextlib.suppress(OSError):
                os.utime(seen)
            return True
        seen.parent.mkdir(parents=True, exist_ok=True)
        seen.touch()
        return False

    def drop(self, key: str, reason: str) -> None:
        """Delete the checkpoint of `key` (it could not be restored): the next machine makes it anew."""
        directory = self.path(key)
        log.warning("dropping checkpoint %s: %s", directory, reason)
        trash = self.root / f"{_TEMP}drop-{key}-{os.getpid()}-{time.monotonic_ns()}"
        with contextlib.suppress(OSError):
            os.rename(directory, trash)  # atomic: no other process finds it half deleted
            _remove(trash)

    def entries(self) -> list[CheckpointInfo]:
        """The saved checkpoints, the most recently used first."""
        found: list[CheckpointInfo] = []
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            marker = entry / COMPLETE
            if entry.name.startswith(".") or not marker.is_file():
                continue
            try:
                about = json.loads(marker.read_text())
            except (OSError, ValueError):
                about = {}
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            found.append(CheckpointInfo(entry.name, entry, about, size, marker.stat().st_mtime))
        return sorted(found, key=lambda info: -info.last_used)

    def clear(self) -> list[Path]:
        """Delete every saved checkpoint (machines restored from one keep running: their QEMU holds the
        files open). Checkpoints being made are left to their makers."""
        removed = []
        for info in self.entries():
            self.drop(info.key, "cleared")
            removed.append(info.path)
        return removed

    def prune(self, max_idle: float = MAX_IDLE) -> list[Path]:
        """Delete checkpoints unused for `max_idle` seconds, checkpoints whose image was deleted or rebuilt
        (no machine can match them again), and temporary directories of dead processes."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        seen = self.root / ".seen"
        for entry in seen.iterdir() if seen.is_dir() else ():
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > max_idle:
                    entry.unlink()
        for entry in self.root.iterdir():
            if entry.name.startswith(_TEMP):
                pid = entry.name.rsplit("-", 1)[-1]
                if entry.name.startswith(f"{_TEMP}drop-") or (pid.isdigit() and not _pid_alive(int(pid))):
                    _remove(entry)
                    removed.append(entry)
                continue
            marker = entry / COMPLETE
            if entry.name.startswith(".") or not entry.is_dir() or not marker.is_file():
                continue
            idle = now - marker.stat().st_mtime > max_idle
            if idle or self._orphaned(marker):
                _remove(entry)
                removed.append(entry)
        return removed

    @staticmethod
    def _orphaned(marker: Path) -> bool:
        try:
            about = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        reason = image_gone(about) if isinstance(about, dict) else None
        if reason is not None:
            log.info("checkpoint %s can never be restored again: %s", marker.parent.name, reason)
        return reason is not None


def _remove(directory: Path) -> None:
    if directory.is_dir():
        shutil.rmtree(directory, ignore_errors=True)
