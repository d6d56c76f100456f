"""What differs between the operating systems under test, behind one small interface.

A `Distro` knows where its Ignition reads the config, its default user, the Ignition and Butane dialects
the harness writes for it, how its updater is pointed at a server or kept quiet, and which `GuestOS`
answers `machine.os` on a running machine. Nothing outside `harness.distros` branches on a distro's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.distros.guest import GuestOS
from harness.errors import UpdateError
from harness.ignition import IgnitionConfig

if TYPE_CHECKING:
    from harness.machine import GuestMachine


@dataclass(frozen=True)
class Distro:
    """An OS without A/B update support in Railyard (Fedora CoreOS today); subclasses add it."""

    name: str
    ignition_fw_cfg: str
    """The fw_cfg name its Ignition reads on QEMU (`opt/com.coreos/config`, `opt/org.flatcar-linux/config`)."""
    default_user: str = "core"
    ignition_version: str = "3.3.0"
    """The Ignition spec version of the configs the harness renders for it."""
    butane_variant: str = "fcos"
    update_conf: str | None = None
    """The updater's configuration file, where it has one the harness writes."""
    given_payloads: bool = False
    """Whether the update suites offer it the update payload given with `--update-payload` (Flatcar), not
    the default image's own payloads."""
    container_cli: str | None = None
    """The container runtime's command (`podman`, `docker`): it loads a Docker archive (`load -i`) and runs
    it (`run --rm`); None where the OS has no runtime."""

    @property
    def has_updates(self) -> bool:
        return self.update_conf is not None

    def update_config(self, server: str, group: str) -> str:
        """The updater's configuration pointing at `server` for `group` (the channel)."""
        raise UpdateError(f"{self.name} has no A/B update support in Railyard")

    def updates_off_config(self) -> str | None:
        """The updater's configuration that keeps it from checking by itself, or None (nothing to stop)."""
        return None

    def update_ignition(self, server: str, group: str) -> dict[str, Any]:
        """Ignition that points the machine's updater at `server` for `group`."""
        return self._config_file(self.update_config(server, group))

    def updates_off_ignition(self) -> dict[str, Any] | None:
        """Ignition that keeps the updater quiet (the harness's default), or None where there is none."""
        text = self.updates_off_config()
        return self._config_file(text) if text is not None else None

    def _config_file(self, text: str) -> dict[str, Any]:
        if self.update_conf is None:
            raise UpdateError(f"{self.name} has no updater configuration Railyard knows")
        return IgnitionConfig(self.ignition_version).add_file(self.update_conf, text, mode=0o644).to_dict()

    def guest(self, machine: GuestMachine) -> GuestOS:
        """The helpers behind `machine.os` for this distro."""
        return GuestOS(machine)
