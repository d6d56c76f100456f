"""What differs between the operating systems under test, behind one small interface (`Distro`)."""

from __future__ import annotations

from harness.distros.base import Distro
from harness.distros.flatcar import FLATCAR
from harness.distros.guest import GuestOS
from harness.distros.railyard import RAILYARD
from harness.errors import ConfigError

FCOS = Distro(
    name="fcos", ignition_fw_cfg="opt/com.coreos/config", butane_variant="fcos", container_cli="podman"
)

_DISTROS = {d.name: d for d in (RAILYARD, FLATCAR, FCOS)}


def known_distros() -> list[str]:
    return sorted(_DISTROS)


def get_distro(name: str) -> Distro:
    try:
        return _DISTROS[name]
    except KeyError:
        raise ConfigError(f"unknown distro {name!r}: choose one of {', '.join(known_distros())}") from None


__all__ = ["FCOS", "FLATCAR", "RAILYARD", "Distro", "GuestOS", "get_distro", "known_distros"]
