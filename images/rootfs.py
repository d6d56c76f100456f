"""The Debian root file system the image is made of, built by mmdebstrap and cached as a tarball.

The tarball depends only on the package set and this recipe, so changes to the image's own
files (overlay, dracut module, units) reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from filelock import FileLock

from images.hosttools import require_tools, run

log = logging.getLogger(__name__)

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "RAILYARD_DEBIAN_MIRROR"
ROOTFS_RECIPE_VERSION = "1"

PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "systemd",
    "systemd-sysv",
    "udev",
    "systemd-boot",
    "dracut",
    "dracut-network",
    "ignition",
    "curl",
    "dbus",
    "openssh-server",
    "openssh-sftp-server",
    "sudo",
    "python3",
    "iproute2",
    "e2fsprogs",
    "util-linux",
    "kmod",
    "zstd",
    "lz4",  # the initramfs compressor (dracut runs in the image's tree; the guest can rebuild its initrd)
    "procps",
    "iputils-ping",  # ping: the network suites' reachability and MTU checks (as root: raw sockets)
    "podman",  # the container runtime: images a test builds on the host are loaded and run (crun, conmon)
    "systemd-resolved",  # name resolution (stub on 127.0.0.53); upstream servers only where a config names them
    "systemd-timesyncd",  # the clock from NTP servers a config names (no built-in fallback servers)
    "auditd",  # the kernel's audit log, with rules from /etc/audit/rules.d
    # Storage the suites provision with Ignition: partitions, file systems, swap, RAID.
    "gdisk",
    "xfsprogs",
    "btrfs-progs",
    "dosfstools",
    "mdadm",
    "cryptsetup-bin",  # LUKS volumes Ignition creates (in the initramfs) and systemd opens at boot from crypttab
)

DPKG_OPTIONS: tuple[str, ...] = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)

# Debian's dracut hooks would build an initramfs (twice) while packages are installed.
# Divert dracut to a no-op during installation; the image build runs it once, its own way.
ESSENTIAL_HOOK = (
    'chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/bin/dracut.real --add /usr/bin/dracut'
    ' && printf "#!/bin/sh\\nexit 0\\n" >"$1/usr/bin/dracut" && chmod 755 "$1/usr/bin/dracut"'
)
CUSTOMIZE_HOOK = (
    'rm -f "$1/usr/bin/dracut"'
    ' && chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/bin/dracut'
    ' && rm -f "$1"/boot/initrd.img-* "$1"/etc/ssh/ssh_host_*'
)


def rootfs_key(packages: tuple[str, ...] = PACKAGES) -> str:
    """Cache key of the root file system tarball: the package set and the recipe."""
    recipe = {
        "recipe": ROOTFS_RECIPE_VERSION,
        "suite": SUITE,
        "packages": sorted(packages),
        "dpkg": list(DPKG_OPTIONS),
        "hooks": [ESSENTIAL_HOOK, CUSTOMIZE_HOOK],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def mmdebstrap_command(
    output: Path, packages: tuple[str, ...] = PACKAGES, mirror: str | None = None
) -> list[str]:
    mirror = mirror or os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)
    command = [
        "mmdebstrap",
        "--variant=apt",
        "--mode=root",
        "--format=tar",  # whatever the output's name ends with
        '--aptopt=APT::Install-Recommends "false"',
        *[f"--dpkgopt={o}" for o in DPKG_OPTIONS],
        f"--include={','.join(packages)}",
        f"--essential-hook={ESSENTIAL_HOOK}",
        f"--customize-hook={CUSTOMIZE_HOOK}",
        SUITE,
        str(output),
        mirror,
    ]
    return command


def rootfs_tarball_path(cache_dir: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    return cache_dir / "rootfs" / f"rootfs-{SUITE}-{rootfs_key(packages)}.tar"


def ensure_rootfs(cache_dir: Path, force: bool = False, packages: tuple[str, ...] = PACKAGES) -> Path:
    """Return the cached root file system tarball, building it (under a file lock) if needed."""
    path = rootfs_tarball_path(cache_dir, packages)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists() and not force:
            log.info("root file system: cached %s", path.name)
            return path
        require_tools(["mmdebstrap", "chroot"])
        partial = path.with_name(f"{path.stem}.partial-{os.getpid()}.tar")
        log.info("root file system: running mmdebstrap (%d packages; a few minutes)", len(packages))
        try:
            run(mmdebstrap_command(partial, packages), "mmdebstrap (root file system)")
            partial.rename(path)
        finally:
            partial.unlink(missing_ok=True)
    return path
