"""Build (and cache) the default Railyard test image and its /usr update payloads.

Stages: rootfs (cached Debian tarball, extracted), initramfs (cached per rootfs and dracut
inputs), filesystems (overlay, version stamp, ext4/FAT images), disk (GPT), convert (qcow2).
Everything lands in a temporary directory first; finished files are renamed into the cache,
so the cache never holds a half-built image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.errors import ImageError
from harness.update_signing import KEY_FILE_NAME, generate_signing_key
from images import disk
from images.hosttools import require_free_space, require_root, require_tools, run
from images.metadata import (
    FEATURE_FIRSTBOOT_CHECKPOINT,
    FEATURE_SSH_READY_LINE,
    IGNITION_FW_CFG,
    ImageMetadata,
    metadata_path,
    read_metadata,
    write_metadata,
)
from images.rootfs import ensure_rootfs, rootfs_key
from images.tree import (
    PreparedTree,
    build_initramfs,
    customisation_hash,
    customise,
    directory_bytes,
    extract_rootfs,
    initramfs_inputs_hash,
    install_dracut_inputs,
    installed_packages,
    prune_modules,
    split_usr,
)

log = logging.getLogger(__name__)

BUILDER_VERSION = "1"
DEFAULT_CHANNEL = "stable"
DEFAULT_VERSION = "1.0.0"
# The version each channel's image carries; its update payloads are the next versions (see next_version).
CHANNEL_VERSIONS: dict[str, str] = {"alpha": "4.0.0", "beta": "3.0.0", "stable": "2.0.0", "lts": "1.0.0"}
SIGNING_KEY_DIR = "keys"
SIGNING_PUBLIC_NAME = "update-signing.pub"
OS_NAME = "Railyard"
SORT_KEY = "railyard"
FIRSTBOOT_ENTRY_VERSION = 999999
NEEDED_FREE_BYTES = 4 * 2**30
LOCK_TIMEOUT = 3600.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    metadata_path: Path
    metadata: dict[str, Any]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "railyard"


def _validate(channel: str, version: str) -> None:
    for what, value in (("channel", channel), ("version", version)):
        if not _NAME_RE.match(value):
            raise ImageError(
                f"invalid image {what} {value!r}: use letters, digits and . _ + - (at most 64 characters)"
            )


def channel_version(channel: str) -> str:
    """The version of a channel's image (DEFAULT_VERSION for a channel without its own)."""
    return CHANNEL_VERSIONS.get(channel, DEFAULT_VERSION)


def next_version(version: str, steps: int = 1) -> str:
    """The version `steps` releases after `version`: its last number counts up (2.0.0 -> 2.0.1)."""
    if steps < 1:
        raise ImageError(f"next_version needs steps >= 1, got {steps}")
    match = re.fullmatch(r"(.*?)(\d+)([^\d]*)", version)
    if match is None:
        raise ImageError(f"version {version!r} has no number to count up")
    head, number, tail = match.groups()
    return f"{head}{int(number) + steps}{tail}"


def update_version(channel: str, steps: int = 1) -> str:
    """The version of a channel's update payload: `steps` releases after the channel's image."""
    return next_version(channel_version(channel), steps)


# -- the payload-signing key ----------------------------------------------------------------------


def _key_dir(cache_dir: Path) -> Path:
    return cache_dir / SIGNING_KEY_DIR


def signing_key(cache_dir: Path | None = None) -> Path:
    """The private key update payloads are signed with (created once per cache, under a file lock).

    Every image and payload built from this cache trusts its public part
    (`/usr/share/railyard/update-signing.pub`).
    """
    cache_dir = cache_dir or default_cache_dir()
    keys = _key_dir(cache_dir)
    public = keys / SIGNING_PUBLIC_NAME
    private = keys / KEY_FILE_NAME
    if private.exists() and public.exists():
        return private
    locks = cache_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / "signing-key.lock"), timeout=LOCK_TIMEOUT):
        if private.exists() and public.exists():
            return private
        keys.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="new-key-", dir=keys))
        try:
            new_private, line = generate_signing_key(staging)
            (staging / SIGNING_PUBLIC_NAME).write_text(line + "\n")
            private.with_name(private.name + ".pub").unlink(missing_ok=True)
            private.unlink(missing_ok=True)
            new_private.with_name(new_private.name + ".pub").rename(private.with_name(private.name + ".pub"))
            new_private.rename(private)
            (staging / SIGNING_PUBLIC_NAME).rename(public)  # last: its presence means the pair is complete
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("created the update payload signing key %s", private)
        return private


def signing_public_key(cache_dir: Path | None = None) -> str:
    """The allowed_signers line images of this cache verify payloads with (the key is created if missing)."""
    cache_dir = cache_dir or default_cache_dir()
    signing_key(cache_dir)
    return (_key_dir(cache_dir) / SIGNING_PUBLIC_NAME).read_text().strip()


def _signer_id(cache_dir: Path) -> str:
    """A short id of the cache's signing key, part of every cache key ("" before the key exists)."""
    try:
        text = (_key_dir(cache_dir) / SIGNING_PUBLIC_NAME).read_text().strip()
    except FileNotFoundError:
        return ""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


IMAGE_FEATURES: tuple[str, ...] = (FEATURE_FIRSTBOOT_CHECKPOINT, FEATURE_SSH_READY_LINE)
"""What the default image declares in its metadata (images.metadata): part of its cache key."""


def image_key(channel: str, version: str, signer: str = "") -> str:
    """Cache key of an image: every input that changes its bytes."""
    inputs = {
        "builder": BUILDER_VERSION,
        "rootfs": rootfs_key(),
        "initramfs": initramfs_inputs_hash(),
        "customisation": customisation_hash(),
        "layout": [disk.ESP_MIB, disk.ROOT_MIB, disk.USR_MIN_MIB, disk.USR_GRANULE_MIB],
        "channel": channel,
        "version": version,
        "signer": signer,
        "features": list(IMAGE_FEATURES),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def image_path(cache_dir: Path, channel: str, version: str) -> Path:
    key = image_key(channel, version, _signer_id(cache_dir))
    return cache_dir / "images" / f"railyard-{channel}-{version}-{key}.qcow2"


def usr_payload_path(cache_dir: Path, channel: str, version: str) -> Path:
    key = image_key(channel, version, _signer_id(cache_dir))
    return cache_dir / "payloads" / f"railyard-usr-{channel}-{version}-{key}.ext4"


class _Stages:
    """Times each build stage and reports it to the log and the progress callback."""

    def __init__(self, what: str, progress: Progress | None) -> None:
        self.what = what
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def say(self, message: str) -> None:
        log.info("%s: %s", self.what, message)
        if self.progress is not None:
            self.progress(f"{self.what}: {message}")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.say(f"{name} ...")
        start = time.monotonic()
        yield
        took = time.monotonic() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + round(took, 1)
        self.say(f"{name} took {took:.1f} s")


def _preflight(cache_dir: Path) -> None:
    require_root()
    require_tools()
    require_free_space(cache_dir, NEEDED_FREE_BYTES)


def _prepare_tree(
    workdir: Path, cache_dir: Path, channel: str, version: str, build_key: str, force: bool, stages: _Stages
) -> PreparedTree:
    with stages.stage("rootfs"):
        tarball = ensure_rootfs(cache_dir, force=force)
        tree = extract_rootfs(tarball, workdir / "tree")
        prune_modules(tree)
    with stages.stage("initramfs"):
        cached = cache_dir / "initramfs" / f"initrd-{rootfs_key()}-{initramfs_inputs_hash()}.img"
        cached.parent.mkdir(parents=True, exist_ok=True)
        if cached.exists() and not force:
            install_dracut_inputs(tree)
            shutil.copyfile(cached, tree.initrd)
        else:
            partial = workdir / "initrd.partial"
            build_initramfs(tree, partial)
            shutil.copyfile(partial, cached.with_name(cached.name + ".tmp"))
            cached.with_name(cached.name + ".tmp").rename(cached)
    with stages.stage("filesystems"):
        customise(tree, channel, version, build_key, signing_public_key(cache_dir))
    return tree


def _usr_fs_mib(usr_dir: Path) -> int:
    """Size of a /usr file system: its content plus a little room, in whole MiB."""
    return int(directory_bytes(usr_dir) * 1.12) // disk.MIB + 64


def _kernel_cmdline(usr_dir: Path, slot: str) -> str:
    template = (usr_dir / "lib" / "railyard" / "cmdline").read_text()
    return " ".join(template.split()).replace("@USR@", slot)


def _boot_entry(title: str, version: int, slot_dir: str, options: str) -> str:
    return (
        f"title {title}\n"
        f"sort-key {SORT_KEY}\n"
        f"version {version}\n"
        f"linux /{slot_dir}/vmlinuz\n"
        f"initrd /{slot_dir}/initrd\n"
        f"options {options}\n"
    )


LOADER_CONF = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nrandom-seed-mode off\n"


def build_image(
    channel: str = DEFAULT_CHANNEL,
    version: str | None = None,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> BuiltImage:
    """Build the image for a channel and version into the cache (force: rebuild every stage).

    The version defaults to the channel's (CHANNEL_VERSIONS).
    """
    version = version or channel_version(channel)
    cache_dir = cache_dir or default_cache_dir()
    _validate(channel, version)
    signing_key(cache_dir)
    with _image_lock(cache_dir, "image", channel, version):
        return _build_image_locked(channel, version, force, cache_dir, progress)


def ensure_image(
    channel: str = DEFAULT_CHANNEL,
    version: str | None = None,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> BuiltImage:
    """The cached image for a channel and version; built first (once, under a file lock) if missing.

    The version defaults to the channel's (CHANNEL_VERSIONS).
    """
    version = version or channel_version(channel)
    cache_dir = cache_dir or default_cache_dir()
    _validate(channel, version)
    signing_key(cache_dir)
    with _image_lock(cache_dir, "image", channel, version):
        path = image_path(cache_dir, channel, version)
        if not force and path.exists() and metadata_path(path).exists():
            meta = read_metadata(path)
            if meta is not None:
                log.info("image: using cached %s", path)
                return BuiltImage(path, metadata_path(path), meta.to_dict())
        return _build_image_locked(channel, version, force, cache_dir, progress)


@contextlib.contextmanager
def _image_lock(cache_dir: Path, kind: str, channel: str, version: str) -> Iterator[None]:
    locks = cache_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{kind}-{channel}-{version}.lock"), timeout=LOCK_TIMEOUT)
    with lock:
        yield


def _build_image_locked(
    channel: str, version: str, force: bool, cache_dir: Path, progress: Progress | None
) -> BuiltImage:
    _preflight(cache_dir)
    key = image_key(channel, version, _signer_id(cache_dir))
    final = image_path(cache_dir, channel, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    stages = _Stages(f"image {channel} {version}", progress)
    stages.say(f"building {final.name}")
    started = time.monotonic()
    (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir / "tmp"))
    try:
        tree = _prepare_tree(workdir, cache_dir, channel, version, key, force, stages)
        packages = installed_packages(tree.root)
        with stages.stage("filesystems"):
            usr_dir = split_usr(tree, workdir / "usr")
            usr_content = directory_bytes(usr_dir)
            layout = disk.compute_layout(disk.usr_partition_mib(usr_content))
            usr_img = workdir / "usr.ext4"
            disk.make_ext4(usr_dir, usr_img, _usr_fs_mib(usr_dir), "USR", journal=False)
            root_img = workdir / "root.ext4"
            disk.make_ext4(tree.root, root_img, disk.ROOT_MIB, "ROOT", journal=True)
            module_dir = usr_dir / "lib" / "modules" / tree.kernel_version
            sd_boot = usr_dir / "lib" / "systemd" / "boot" / "efi" / "systemd-bootx64.efi"
            if not sd_boot.exists():
                raise ImageError(f"systemd-boot EFI binary missing from the root file system: {sd_boot}")
            options = _kernel_cmdline(usr_dir, "USR-A")
            esp_img = workdir / "esp.vfat"
            disk.make_esp(
                esp_img,
                disk.ESP_MIB,
                files={
                    "EFI/BOOT/BOOTX64.EFI": sd_boot,
                    "EFI/systemd/systemd-bootx64.efi": sd_boot,
                    "usr-a/vmlinuz": module_dir / "vmlinuz",
                    "usr-a/initrd": module_dir / "initrd",
                },
                texts={
                    "loader/loader.conf": LOADER_CONF,
                    "loader/entries/usr-a.conf": _boot_entry(
                        f"{OS_NAME} {version} (USR-A)", 1, "usr-a", options
                    ),
                    "loader/entries/firstboot-usr-a.conf": _boot_entry(
                        f"{OS_NAME} {version} (USR-A, first boot)",
                        FIRSTBOOT_ENTRY_VERSION,
                        "usr-a",
                        options + " ignition.firstboot",
                    ),
                },
            )
        with stages.stage("disk"):
            raw = workdir / "disk.raw"
            disk.assemble(layout, raw, {"ESP": esp_img, "USR-A": usr_img, "ROOT": root_img})
        with stages.stage("convert"):
            qcow2 = workdir / "disk.qcow2"
            disk.convert_qcow2(raw, qcow2)
        stages.seconds["total"] = round(time.monotonic() - started, 1)
        meta = ImageMetadata(
            name=f"railyard-{channel}-{version}",
            version=version,
            channel=channel,
            build_key=key,
            ignition_fw_cfg=IGNITION_FW_CFG,
            kernel_version=tree.kernel_version,
            kernel_cmdline=options,
            partitions={p.label: p.size_mib for p in layout.partitions},
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=dict(stages.seconds),
            packages=packages,
            features=IMAGE_FEATURES,
        )
        meta_tmp = workdir / "disk.json"
        write_metadata(meta_tmp, meta)
        final_meta = metadata_path(final)
        final_meta.unlink(missing_ok=True)
        shutil.move(qcow2, final)
        shutil.move(meta_tmp, final_meta)
        stages.say(f"done in {stages.seconds['total']:.1f} s: {final}")
        return BuiltImage(final, final_meta, meta.to_dict())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def build_usr_image(
    version: str,
    channel: str = DEFAULT_CHANNEL,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """A /usr ext4 image (an update payload) for a version, cached; install it with railyard-slot.

    Its os-release carries `version`; it trusts the same signing key as the images of this cache.
    """
    cache_dir = cache_dir or default_cache_dir()
    _validate(channel, version)
    signing_key(cache_dir)
    with _image_lock(cache_dir, "usr", channel, version):
        final = usr_payload_path(cache_dir, channel, version)
        if final.exists() and not force:
            return final
        return _build_usr_locked(version, channel, force, cache_dir, progress)


def _build_usr_locked(
    version: str, channel: str, force: bool, cache_dir: Path, progress: Progress | None
) -> Path:
    """`build_usr_image`'s work, with the payload's lock held."""
    _preflight(cache_dir)
    final = usr_payload_path(cache_dir, channel, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    stages = _Stages(f"usr payload {channel} {version}", progress)
    (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="usr-", dir=cache_dir / "tmp"))
    try:
        key = image_key(channel, version, _signer_id(cache_dir))
        tree = _prepare_tree(workdir, cache_dir, channel, version, key, force, stages)
        with stages.stage("filesystems"):
            usr_dir = split_usr(tree, workdir / "usr")
            usr_img = workdir / "usr.ext4"
            disk.make_ext4(usr_dir, usr_img, _usr_fs_mib(usr_dir), "USR", journal=False)
        shutil.move(usr_img, final)
        stages.say(f"done: {final}")
        return final
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def compressed_usr_payload_path(cache_dir: Path, channel: str, version: str) -> Path:
    raw = usr_payload_path(cache_dir, channel, version)
    return raw.with_name(raw.name + ".zst")


def compressed_usr_image(
    version: str,
    channel: str = DEFAULT_CHANNEL,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """The /usr payload of `build_usr_image`, zstd-compressed (`.ext4.zst`, cached).

    A quarter of the raw file system's size: what a machine downloads and hashes. The update agent
    unpacks it (after verifying it) before `railyard-slot install`. The raw file system it was made from
    is not kept (each is most of a GB, and nothing reads it again).
    """
    cache_dir = cache_dir or default_cache_dir()
    _validate(channel, version)
    signing_key(cache_dir)
    with _image_lock(cache_dir, "usr", channel, version):
        final = compressed_usr_payload_path(cache_dir, channel, version)
        raw = usr_payload_path(cache_dir, channel, version)
        if final.exists() and not force:
            raw.unlink(missing_ok=True)  # left by an earlier Railyard, which kept both
            return final
        if force or not raw.exists():
            raw = _build_usr_locked(version, channel, force, cache_dir, progress)
        require_tools(["zstd"])
        partial = final.with_name(final.name + ".partial")
        run(["zstd", "-q", "-T0", "-3", "-f", "-o", partial, raw], "zstd (usr payload)")
        partial.rename(final)
        raw.unlink()
        log.info("usr payload %s %s: compressed to %s", channel, version, final)
        return final


def update_payload(
    channel: str, steps: int = 1, cache_dir: Path | None = None, progress: Progress | None = None
) -> tuple[str, Path]:
    """The /usr payload `steps` versions after a channel's image: (version, cached `.ext4.zst` file)."""
    version = update_version(channel, steps)
    return version, compressed_usr_image(version, channel, cache_dir=cache_dir, progress=progress)
