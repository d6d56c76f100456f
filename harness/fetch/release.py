"""Where a Flatcar release's files are: the release tree, its `version.txt`, the QEMU image names.

The tree is `<release-url>/<board>/<version or current>/`, with `<release-url>` a template naming
`{channel}` (Flatcar's own is `https://{channel}.release.flatcar-linux.net/`). Each image file `F` comes
with `F.sig` (a detached GPG signature of `F`) and `F.DIGESTS` (its hashes); `F` may be published as `F.bz2`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import ConfigError

DEFAULT_RELEASE_URL = "https://{channel}.release.flatcar-linux.net/"
CHANNELS = ("alpha", "beta", "stable", "lts")
BOARDS = ("amd64-usr", "arm64-usr")
FIRMWARES = ("bios", "uefi")
DISTROS = ("flatcar",)

_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){1,3}$")


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release that is cached: its name there and whether the image is the disk to boot."""

    name: str
    disk: bool = False


def release_files(firmware: str) -> tuple[ReleaseFile, ...]:
    """The files a QEMU machine of `firmware` needs: the disk image, and for UEFI Flatcar's firmware
    code and variable store."""
    if firmware == "bios":
        return (ReleaseFile("flatcar_production_qemu_image.img", disk=True),)
    if firmware == "uefi":
        return (
            ReleaseFile("flatcar_production_qemu_uefi_image.img", disk=True),
            ReleaseFile("flatcar_production_qemu_uefi_efi_code.qcow2"),
            ReleaseFile("flatcar_production_qemu_uefi_efi_vars.qcow2"),
        )
    raise ConfigError(f"unknown firmware {firmware!r}: choose one of {', '.join(FIRMWARES)}")


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    return value


def check_version(version: str) -> str:
    """`current` or a release version (`4152.2.3`)."""
    if version != "current" and not _VERSION_RE.match(version):
        raise ConfigError(f"--version {version!r} is neither `current` nor a release version like 4152.2.3")
    return version


def folder_url(template: str, channel: str, board: str, version: str) -> str:
    """The URL of a release's folder (ending in /), from the release URL template."""
    if "{channel}" not in template:
        raise ConfigError(f"--release-url {template!r} must name the channel as {{channel}}")
    base = template.replace("{channel}", channel)
    if not re.match(r"^https?://", base):
        raise ConfigError(f"--release-url {template!r} is not an http:// or https:// URL")
    return f"{base.rstrip('/')}/{board}/{version}/"


def parse_version_txt(text: str) -> str:
    """FLATCAR_VERSION of a `version.txt` (`FLATCAR_VERSION=4152.2.3`, besides FLATCAR_BUILD and others)."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "FLATCAR_VERSION":
            version = value.strip().strip("\"'")
            if _VERSION_RE.match(version):
                return version
            raise ConfigError(
                f"version.txt names FLATCAR_VERSION={version!r}, which is not a release version"
            )
    raise ConfigError("version.txt has no FLATCAR_VERSION= line")
