"""Distro descriptions: where Ignition reads its config, the default user, how to read A/B state."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ConfigError


@dataclass(frozen=True)
class Distro:
    name: str
    ignition_fw_cfg: str
    default_user: str = "core"
    # The Ignition spec version the distro's Ignition accepts for the configs the harness renders.
    ignition_version: str = "3.3.0"
    butane_variant: str = "fcos"


RAILYARD = Distro(name="railyard", ignition_fw_cfg="opt/com.coreos/config", butane_variant="fcos")
FLATCAR = Distro(name="flatcar", ignition_fw_cfg="opt/org.flatcar-linux/config", butane_variant="flatcar")
FCOS = Distro(name="fcos", ignition_fw_cfg="opt/com.coreos/config", butane_variant="fcos")

_DISTROS = {d.name: d for d in (RAILYARD, FLATCAR, FCOS)}


def known_distros() -> list[str]:
    return sorted(_DISTROS)


def get_distro(name: str) -> Distro:
    try:
        return _DISTROS[name]
    except KeyError:
        raise ConfigError(f"unknown distro {name!r}: choose one of {', '.join(known_distros())}") from None
