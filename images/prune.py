"""What of the image cache the current builder can never use again: images, update payloads, root file
system tarballs and initramfs files built from other inputs (an older recipe, another checkout, another
signing key), found by the cache key in their names.

`railyard image prune` deletes them; the warm pool's checkpoints of a deleted image go with them at the
next run (harness.warm prunes checkpoints whose image is gone).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

from images.build import _signer_id, image_key
from images.rootfs import SUITE, rootfs_key
from images.tree import initramfs_inputs_hash

_IMAGE = re.compile(
    r"railyard-(?P<usr>usr-)?(?P<channel>[a-z]+)-(?P<version>\d[\w.]*)-(?P<key>[0-9a-f]{16})\."
)
_ROOTFS = re.compile(rf"rootfs-{SUITE}-(?P<key>[0-9a-f]{{16}})\.tar(\.lock)?$")
_INITRD = re.compile(r"initrd-(?P<rootfs>[0-9a-f]{16})-(?P<inputs>[0-9a-f]{16})\.img$")


@dataclasses.dataclass(frozen=True)
class Stale:
    path: Path
    why: str


def stale_files(cache_dir: Path) -> Iterator[Stale]:
    """The files of `cache_dir` built from inputs the current builder no longer has."""
    signer = _signer_id(cache_dir)
    keys: dict[tuple[str, str], str] = {}
    for folder in ("images", "payloads"):
        for path in _files(cache_dir / folder):
            match = _IMAGE.match(path.name)
            if match is None:
                continue
            wanted = (match["channel"], match["version"])
            if wanted not in keys:
                keys[wanted] = image_key(*wanted, signer)
            if match["key"] != keys[wanted]:
                what = "update payload" if match["usr"] else "image"
                yield Stale(path, f"{what} {match['channel']} {match['version']} of another build")
    current_rootfs = rootfs_key()
    for path in _files(cache_dir / "rootfs"):
        match = _ROOTFS.match(path.name)
        if match is not None and match["key"] != current_rootfs:
            yield Stale(path, "root file system of other packages")
    inputs = initramfs_inputs_hash()
    for path in _files(cache_dir / "initramfs"):
        match = _INITRD.match(path.name)
        if match is not None and (match["rootfs"], match["inputs"]) != (current_rootfs, inputs):
            yield Stale(path, "initramfs of another build")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def prune(cache_dir: Path, dry_run: bool = False) -> list[Stale]:
    """Delete (or with `dry_run` only list) the stale files of `cache_dir`."""
    found = list(stale_files(cache_dir))
    if not dry_run:
        for stale in found:
            stale.path.unlink(missing_ok=True)
    return found
