"""One fetch: resolve the version, download each file of the release, verify it, cache the lot at once."""

from __future__ import annotations

import bz2
import datetime
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness.distros.flatcar import FLATCAR
from harness.errors import ConfigError, FetchError
from harness.fetch import cache
from harness.fetch.digests import check_digests
from harness.fetch.download import NotFound, Progress, download, get_bytes
from harness.fetch.release import (
    BOARDS,
    CHANNELS,
    DEFAULT_RELEASE_URL,
    DISTROS,
    FIRMWARES,
    ReleaseFile,
    check_choice,
    check_version,
    folder_url,
    parse_version_txt,
    release_files,
)
from harness.fetch.signature import OFFICIAL_FINGERPRINT, OFFICIAL_KEY_URL, Keyring, verify_detached
from images.metadata import ImageMetadata, metadata_path, write_metadata

log = logging.getLogger(__name__)

COMPRESSED_SUFFIX = ".bz2"
CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchRequest:
    """What `railyard image fetch` was asked for."""

    channel: str
    distro: str = "flatcar"
    version: str = "current"
    board: str = "amd64-usr"
    firmware: str = "bios"
    release_url: str = DEFAULT_RELEASE_URL
    signing_key: Path | None = None
    """A key file trusted as given; None: Flatcar's official key, checked against the pinned fingerprint."""
    cache_root: Path | None = None
    """The fetched images' root (default: `fetched/` in the user's Railyard cache)."""

    def check(self) -> None:
        check_choice("distro", self.distro, DISTROS)
        check_choice("channel", self.channel, CHANNELS)
        check_choice("board", self.board, BOARDS)
        check_choice("firmware", self.firmware, FIRMWARES)
        check_version(self.version)
        folder_url(self.release_url, self.channel, self.board, self.version)
        if self.signing_key is not None and not self.signing_key.is_file():
            raise ConfigError(f"--signing-key {self.signing_key}: no such file")


class _Refused(FetchError):
    """A file that downloaded whole but failed its checks: its partial copy goes too."""


def _keyring(request: FetchRequest) -> Keyring:
    if request.signing_key is not None:
        return Keyring(request.signing_key.read_bytes(), f"--signing-key {request.signing_key}")
    return Keyring(get_bytes(OFFICIAL_KEY_URL), OFFICIAL_KEY_URL, pinned=OFFICIAL_FINGERPRINT)


def resolve_version(request: FetchRequest) -> str:
    """The release version asked for: `current` read from that folder's version.txt."""
    if request.version != "current":
        return request.version
    url = folder_url(request.release_url, request.channel, request.board, "current") + "version.txt"
    try:
        text = get_bytes(url).decode(errors="replace")
    except NotFound:
        raise FetchError(
            f"{url} does not exist: is {request.channel} a channel of that release server?"
        ) from None
    return parse_version_txt(text)


def fetch_release(request: FetchRequest, *, stream: TextIO | None = None) -> cache.FetchedImage:
    """Download, verify and cache a release's QEMU image; the cached image (at once if already there)."""
    request.check()
    root = request.cache_root or cache.fetched_cache_dir()
    version = resolve_version(request)
    where = (request.distro, request.channel, version, request.board, request.firmware)
    final = cache.image_folder(root, *where)
    existing = cache.load_fetched(final, request.firmware)
    if existing is not None:
        log.info("%s %s %s is already cached in %s", request.distro, request.channel, version, final)
        return existing
    folder = folder_url(request.release_url, request.channel, request.board, version)
    partial = cache.partial_folder(root, *where)
    with _keyring(request) as keyring:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=cache.STAGING_PREFIX, dir=root))
        try:
            provenance = [
                _fetch_file(item, folder, partial, staging, keyring, stream)
                for item in release_files(request.firmware)
            ]
            image = _publish(request, version, folder, staging, final, provenance, keyring)
        except BaseException as exc:
            cache.remove_tree(staging)
            if isinstance(exc, _Refused):
                cache.remove_tree(partial)
            cache.prune_empty(partial, root)
            raise
    cache.remove_tree(partial)
    cache.prune_empty(partial.parent, root)
    return image


def _published_name(item: ReleaseFile, folder: str) -> tuple[str, bytes]:
    """The name the file is published under (plain or .bz2) and its detached signature."""
    for name in (item.name, item.name + COMPRESSED_SUFFIX):
        try:
            return name, get_bytes(folder + name + ".sig")
        except NotFound:
            continue
    raise FetchError(
        f"{folder} publishes neither {item.name} nor {item.name}{COMPRESSED_SUFFIX} with a .sig signature: "
        "is the version right, and does the release have QEMU images for this firmware?"
    )


def _fetch_file(
    item: ReleaseFile, folder: str, partial: Path, staging: Path, keyring: Keyring, stream: TextIO | None
) -> dict[str, object]:
    name, signature = _published_name(item, folder)
    try:
        digests = get_bytes(folder + name + ".DIGESTS").decode(errors="replace")
    except NotFound:
        raise FetchError(
            f"{folder}{name}.DIGESTS does not exist: refusing a file without its digests"
        ) from None
    data = partial / name
    download(folder + name, data, progress=Progress(name, stream))
    sig_path = staging / (name + ".sig")
    sig_path.write_bytes(signature)
    try:
        good = verify_detached(keyring, sig_path, data, name)
        kinds = check_digests(data, name, digests)
    except FetchError as exc:
        raise _Refused(str(exc)) from None
    finally:
        sig_path.unlink(missing_ok=True)
    target = staging / item.name
    if name.endswith(COMPRESSED_SUFFIX):
        _decompress(data, target, name)
    else:
        os.replace(data, target)
    return {
        "file": item.name,
        "url": folder + name,
        "signed_by": good.signing_fingerprint,
        "primary_key": good.primary_fingerprint,
        "signed_on": good.created,
        "digests_checked": kinds,
    }


def _decompress(source: Path, target: Path, name: str) -> None:
    try:
        with bz2.open(source, "rb") as packed, target.open("wb") as out:
            while chunk := packed.read(CHUNK):
                out.write(chunk)
    except (OSError, EOFError, ValueError) as exc:
        raise _Refused(f"{name} does not decompress ({exc}); nothing was cached") from None


def _publish(
    request: FetchRequest,
    version: str,
    folder: str,
    staging: Path,
    final: Path,
    provenance: list[dict[str, object]],
    keyring: Keyring,
) -> cache.FetchedImage:
    disk = cache.disk_name(request.firmware)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    meta = ImageMetadata(
        name=Path(disk).stem,
        version=version,
        build_key=f"{request.distro}-{request.channel}-{version}-{request.board}-{request.firmware}",
        os_id=request.distro,
        channel=request.channel,
        distro=request.distro,
        ignition_fw_cfg=FLATCAR.ignition_fw_cfg,
        firmware=request.firmware,
        built_at=now,
    )
    write_metadata(metadata_path(staging / disk), meta)
    about = {
        "distro": request.distro,
        "channel": request.channel,
        "version": version,
        "board": request.board,
        "firmware": request.firmware,
        "release": folder,
        "fetched_at": now,
        "signing_key": keyring.source,
        "files": provenance,
    }
    (staging / "fetch.json").write_text(json.dumps(about, indent=2) + "\n")
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:
        found = cache.load_fetched(final, request.firmware)
        if found is None:
            raise FetchError(
                f"{final} exists and is not a complete fetch: remove it and fetch again"
            ) from None
        cache.remove_tree(staging)  # another fetch of the same release finished first
        return found
    image = cache.load_fetched(final, request.firmware)
    assert image is not None
    log.info("cached %s", image.path)
    return image
