"""Ignition config spec versions: which exist, how they order, which a guest accepts."""

from __future__ import annotations

import re

from harness.errors import ConfigError

__all__ = [
    "DEFAULT_VERSION",
    "EXPERIMENTAL_VERSIONS",
    "STABLE_VERSIONS",
    "check_version",
    "parse_version",
    "spec_level",
]

#: Stable 3.x spec versions this package knows.
STABLE_VERSIONS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")
#: Experimental versions some Ignition releases accept (Ignition 2.14, as in Debian bookworm, reads
#: ``3.4.0-experimental``; later releases read ``3.5.0-experimental``). Each is accepted only by the
#: Ignition release whose newest spec it is.
EXPERIMENTAL_VERSIONS = ("3.4.0-experimental", "3.5.0-experimental")
DEFAULT_VERSION = "3.3.0"

_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)(-experimental)?")


def parse_version(version: str) -> tuple[int, int, int, int]:
    """Order key of a spec version; ``-experimental`` sorts before the final release of the same number."""
    m = _VERSION_RE.fullmatch(version) if isinstance(version, str) else None
    if m is None:
        raise ConfigError(
            f"ignition.version {version!r} is not a spec version: write it as 'MAJOR.MINOR.PATCH', "
            f"one of {', '.join(STABLE_VERSIONS)}"
        )
    major, minor, patch, exp = m.groups()
    return int(major), int(minor), int(patch), 0 if exp else 1


def spec_level(version: str) -> tuple[int, int, int]:
    """The feature level of a version: ``3.4.0-experimental`` has (roughly) the fields of 3.4.0."""
    return parse_version(version)[:3]


def check_version(
    version: object, *, max_version: str | None = None, where: str = "$.ignition.version"
) -> str:
    """Return ``version`` if it is a known 3.x version accepted by a guest reading up to ``max_version``.

    ``max_version`` is the newest spec the guest's Ignition reads. A stable version is accepted when it
    is not newer; an experimental version only when it is exactly ``max_version``.
    """
    if not isinstance(version, str):
        raise ConfigError(
            f'{where} must be a string such as "3.3.0", not {type(version).__name__} {version!r}'
        )
    key = parse_version(version)
    if key[0] != 3:
        hint = (
            "spec 2.x configs are read only by Ignition 0.x releases; translate it to 3.x (ign-converter)"
            if key[0] == 2
            else f"use one of {', '.join(STABLE_VERSIONS)}"
        )
        raise ConfigError(f"{where} {version!r} is not a 3.x spec version: {hint}")
    if version not in STABLE_VERSIONS and version not in EXPERIMENTAL_VERSIONS:
        raise ConfigError(
            f"{where} {version!r} is not a known spec version: use one of "
            f"{', '.join(STABLE_VERSIONS)} (experimental: {', '.join(EXPERIMENTAL_VERSIONS)})"
        )
    if max_version is None:
        return version
    limit = parse_version(max_version)
    if key[3] == 0:
        if version != max_version:
            raise ConfigError(
                f"{where} {version!r} is an experimental spec that this guest's Ignition (newest spec "
                f"{max_version}) does not read: use a stable version up to {max_version}"
            )
    elif key > limit:
        newest = [v for v in STABLE_VERSIONS if parse_version(v) <= limit]
        raise ConfigError(
            f"{where} {version!r} is newer than this guest's Ignition reads (newest spec {max_version}): "
            f"lower it to {newest[-1] if newest else max_version} and drop fields the older spec lacks"
        )
    return version
