"""Platforms are found through the entry-point group `railyard.platforms` and imported lazily.

A platform module must import without its SDK (boto3, libvirt, azure): it imports those when it boots.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from harness.errors import ConfigError
from platforms.base import Platform

GROUP = "railyard.platforms"

# Used when the project runs from a checkout that was not installed (no entry points registered).
BUILTIN = {
    "qemu": "platforms.qemu:QemuPlatform",
    "libvirt": "platforms.libvirt:LibvirtPlatform",
    "aws": "platforms.aws:AwsPlatform",
    "azure": "platforms.azure:AzurePlatform",
}


def _targets() -> dict[str, str]:
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def platform_names() -> list[str]:
    return sorted(_targets())


def load_platform(name: str) -> type[Platform]:
    targets = _targets()
    if name not in targets:
        raise ConfigError(f"unknown platform {name!r}: choose one of {', '.join(sorted(targets))}")
    module_name, _, attr = targets[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"platform {name!r} needs a package that is not installed ({exc}); "
            f"install it with: pip install 'railyard[{name}]'"
        ) from exc
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Platform)):
        raise ConfigError(f"entry point {targets[name]!r} is not a Platform class")
    return cls
