"""Which image a run's machines boot, per channel: the image given with `--image`, a released image that
`railyard image fetch` cached (`--distro flatcar` without `--image`), or the default image."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.distros import Distro, get_distro
from harness.errors import ConfigError
from harness.progress import heartbeat, say
from images.metadata import ImageMetadata, read_metadata


@dataclass(frozen=True)
class ImageChoice:
    path: Path
    metadata: ImageMetadata | None
    distro: Distro
    channel: str

    @property
    def version(self) -> str | None:
        return self.metadata.version if self.metadata else None


FETCHED_DISTROS = frozenset({"flatcar"})
"""Distros whose released images `railyard image fetch` caches; the plugin boots those without `--image`."""


def fetched_image(channel: str, distro: str, firmware: str | None = None) -> ImageChoice:
    """The newest image of `distro` and `channel` that `railyard image fetch` cached; a ConfigError naming
    the command that fetches it when there is none."""
    from harness.fetch.cache import fetch_command, fetched_cache_dir, find_fetched

    found = find_fetched(distro, channel, firmware=firmware)
    if found is None:
        wanted = f" for {firmware}" if firmware else ""
        raise ConfigError(
            f"no {distro} {channel} image{wanted} has been fetched (looked in {fetched_cache_dir()}): run "
            f"`{fetch_command(distro, channel, firmware)}` first, or give one with --image"
        )
    return ImageChoice(found.path, found.metadata, get_distro(distro), channel)


def resolve_image(
    channel: str,
    *,
    explicit: Path | None,
    metadata: ImageMetadata | None,
    distro: str | None,
    local: bool,
    firmware: str | None = None,
) -> ImageChoice:
    """What machines of `channel` boot: the `--image` given (its distro from `--distro` or its metadata), or,
    for a platform that boots local disks, a fetched release of `--distro` (flatcar; `firmware`: of that
    firmware, when given) or the default image of that channel (built and cached); a cloud platform finds
    its own image, so nothing is chosen here but the distro (Flatcar unless `--distro`)."""
    if explicit is not None:
        distro_name = distro or (metadata.distro if metadata else None)
        if distro_name is None:
            raise ConfigError(
                f"{explicit} has no Railyard metadata: say which OS it is with --distro (flatcar, fcos or railyard)"
            )
        return ImageChoice(explicit, metadata, get_distro(distro_name), channel)
    if not local:
        return ImageChoice(Path(), None, get_distro(distro or "flatcar"), channel)
    if distro in FETCHED_DISTROS:
        return fetched_image(channel, distro, firmware)
    from images.build import ensure_image

    with heartbeat(f"the default image ({channel})"):
        built = ensure_image(channel=channel, progress=lambda line: say(str(line)))
    meta = read_metadata(built.path)
    return ImageChoice(built.path, meta, get_distro(distro or (meta.distro if meta else "railyard")), channel)


def check_image(path: Path) -> Path:
    path = path.expanduser().absolute()
    if not path.exists():
        raise ConfigError(f"--image {path}: no such file")
    if not path.is_file():
        raise ConfigError(f"--image {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"--image {path}: not readable by this user")
    with path.open("rb") as f:
        head = f.read(4)
    if head != b"QFI\xfb" and path.stat().st_size < 1 << 20:
        raise ConfigError(f"--image {path}: neither a qcow2 image nor a raw disk of plausible size")
    return path
