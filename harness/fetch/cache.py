"""Where fetched images live, and how the plugin finds them.

    $XDG_CACHE_HOME/railyard/fetched/                  (~/.cache/railyard/fetched without XDG_CACHE_HOME)
        flatcar/stable/4152.2.3/amd64-usr/bios/
            flatcar_production_qemu_image.img          the verified, decompressed disk
            flatcar_production_qemu_image.json         its metadata (distro, channel, version, firmware...)
            fetch.json                                 where it came from, who signed it, digests checked
        .staging-XXXX/                                 one fetch at work; renamed to its folder when verified
        .partial/flatcar/stable/4152.2.3/amd64-usr/bios/
            flatcar_production_qemu_image.img.bz2      a download cut short, resumed by the next fetch

A release's folder appears whole or not at all (an atomic rename of the staging folder). `.partial` keeps
only downloads that stopped midway; a file that failed its signature or digests is deleted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ImageError
from harness.fetch.release import FIRMWARES, release_files
from harness.omaha_protocol import version_key
from images.metadata import ImageMetadata, read_metadata

PARTIAL = ".partial"
STAGING_PREFIX = ".staging-"


def fetched_cache_dir(cache_dir: Path | None = None) -> Path:
    """The fetched images' root, under the same cache folder as the default image's."""
    from images.build import default_cache_dir

    return (cache_dir or default_cache_dir()) / "fetched"


def release_key(distro: str, channel: str, version: str, board: str, firmware: str) -> Path:
    return Path(distro, channel, version, board, firmware)


def image_folder(root: Path, distro: str, channel: str, version: str, board: str, firmware: str) -> Path:
    return root / release_key(distro, channel, version, board, firmware)


def partial_folder(root: Path, distro: str, channel: str, version: str, board: str, firmware: str) -> Path:
    return root / PARTIAL / release_key(distro, channel, version, board, firmware)


@dataclass(frozen=True)
class FetchedImage:
    """A verified image in the cache: the disk to boot and its metadata."""

    path: Path
    metadata: ImageMetadata

    @property
    def folder(self) -> Path:
        return self.path.parent


def disk_name(firmware: str) -> str:
    """The file name of the disk image among a firmware's release files."""
    return next(f.name for f in release_files(firmware) if f.disk)


def load_fetched(folder: Path, firmware: str) -> FetchedImage | None:
    """The image in a release folder, or None when the folder is not a complete fetch."""
    disk = folder / disk_name(firmware)
    if not disk.is_file():
        return None
    if any(not (folder / f.name).is_file() for f in release_files(firmware)):
        return None
    try:
        meta = read_metadata(disk)
    except ImageError:
        return None
    return FetchedImage(disk, meta) if meta is not None else None


def find_fetched(
    distro: str,
    channel: str,
    *,
    board: str = "amd64-usr",
    firmware: str | None = None,
    version: str | None = None,
    root: Path | None = None,
) -> FetchedImage | None:
    """The newest fetched image of a channel (of `version`, `firmware` when given; BIOS before UEFI when
    both of one version are there), or None."""
    base = (root or fetched_cache_dir()) / distro / channel
    if not base.is_dir():
        return None
    versions = [version] if version else [p.name for p in base.iterdir() if p.is_dir()]
    firmwares = [firmware] if firmware else list(FIRMWARES)
    for candidate in sorted(versions, key=version_key, reverse=True):
        for fw in firmwares:
            found = load_fetched(base / candidate / board / fw, fw)
            if found is not None:
                return found
    return None


def fetch_command(distro: str, channel: str, firmware: str | None = None) -> str:
    """The command that fetches what `find_fetched` did not find."""
    command = f"railyard image fetch --distro {distro} --channel {channel}"
    return command + (f" --firmware {firmware}" if firmware else "")


def prune_empty(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (not including) `stop` while they are empty."""
    current = folder
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return
        current = current.parent


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
