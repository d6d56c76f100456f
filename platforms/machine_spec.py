"""What a platform is asked to boot: `MachineSpec` and its parts (the first-boot Ignition config, a private
NIC, extra NICs and disks, kernel arguments), pure data so that command lines can be unit-tested."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

FIRSTBOOT_WAITING = "railyard: first-boot checkpoint: waiting before Ignition"
"""What the default image's initramfs prints when it waits for a first-boot checkpoint to be saved."""
FIRMWARE_CHOICES = ("uefi", "bios")
"""The firmware a machine boots with (`MachineSpec.firmware`, `--firmware`)."""
MIN_MEMORY_MIB = 128
"""The least guest memory a machine may have."""

DISK_SERIAL_PREFIX = "railyard-disk"
SMBIOS_BOOT_CMDLINE = "io.systemd.boot.kernel-cmdline-extra="
"""An SMBIOS type 11 string whose rest systemd-boot (256 and later) appends to a boot entry's options."""
SMBIOS_STUB_CMDLINE = "io.systemd.stub.kernel-cmdline-extra="
"""The same for a unified kernel image, read by its systemd-stub (254 and later)."""


def disk_serial(index: int) -> str:
    """The serial number of a machine's extra disk `index` (1 for the first): the guest finds it as
    `/dev/disk/by-id/virtio-railyard-disk1`. virtio-blk serials hold at most 20 bytes."""
    return f"{DISK_SERIAL_PREFIX}{index}"


def kernel_args_smbios_strings(kernel_args: tuple[str, ...]) -> list[str]:
    """The SMBIOS type 11 strings that hand `kernel_args` to the guest's boot loader (none without any)."""
    if not kernel_args:
        return []
    line = " ".join(kernel_args)
    return [SMBIOS_BOOT_CMDLINE + line, SMBIOS_STUB_CMDLINE + line]


@dataclass(frozen=True)
class PrivateNet:
    """A second NIC on a private segment shared by the machines of a cluster (see platforms.qemu.l2hub)."""

    hub_port: int
    mac: str
    address: str
    """The guest's address with prefix length, e.g. `10.0.3.1/24`."""


@dataclass(frozen=True)
class ExtraNic:
    """An extra NIC of a machine (`@pytest.mark.nics`), on the segment of its number: the extra NICs number 1
    of the machines of one test share one segment, number 2 another (see platforms.qemu.l2hub). The harness
    configures no address on it."""

    hub_port: int
    mac: str


@dataclass(frozen=True)
class FirstBootConfig:
    """The Ignition config a machine gets at first boot: rendered once by the harness, with what platforms
    need to know of it (its spec version, the users' SSH keys) readable without parsing the text again."""

    text: str
    """The JSON text handed to the guest (fw_cfg blob, EC2 user data, Azure custom data)."""
    version: str
    """`ignition.version` of the config."""
    ssh_keys_by_user: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(user, keys) of every user the config gives SSH keys, in order."""

    @classmethod
    def render(cls, config: Mapping[str, Any]) -> FirstBootConfig:
        """From a config dict (as the harness builds and validates it)."""
        ignition = config.get("ignition")
        version = ignition.get("version") if isinstance(ignition, Mapping) else None
        if not isinstance(version, str):
            raise ConfigError("the Ignition config has no ignition.version string")
        passwd = config.get("passwd")
        users = passwd.get("users", []) if isinstance(passwd, Mapping) else []
        keys: list[tuple[str, tuple[str, ...]]] = []
        for user in users if isinstance(users, list) else []:
            if not isinstance(user, Mapping) or not isinstance(user.get("name"), str):
                continue
            lines = [k.strip() for k in user.get("sshAuthorizedKeys", []) if isinstance(k, str) and k.strip()]
            if lines:
                keys.append((user["name"], tuple(lines)))
        return cls(json.dumps(config, indent=2), version, tuple(keys))

    @classmethod
    def parse(cls, text: str) -> FirstBootConfig:
        """From JSON text; ConfigError when it is not a JSON object with an `ignition.version`."""
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the Ignition config is not valid JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise ConfigError("the Ignition config is not a JSON object")
        rendered = cls.render(config)
        return cls(text, rendered.version, rendered.ssh_keys_by_user)

    def ssh_keys(self, user: str | None = None) -> list[str]:
        """The SSH keys the config gives `user` (every user's, without repeats, when None)."""
        found: list[str] = []
        for name, keys in self.ssh_keys_by_user:
            if user is None or name == user:
                found += [k for k in keys if k not in found]
        return found


@dataclass(frozen=True)
class MachineSpec:
    """Everything a platform needs to boot one machine. Pure data, so command lines can be unit-tested."""

    name: str
    image: Path
    ignition: FirstBootConfig
    """The Ignition config handed to the guest at first boot."""
    ignition_fw_cfg: str
    """The fw_cfg name the distro's Ignition reads (`opt/com.coreos/config`, `opt/org.flatcar-linux/config`)."""
    workdir: Path
    """A directory of this machine's own: overlay disk, console log, sockets."""
    ssh_user: str = "core"
    memory_mib: int = 1024
    cpus: int = 2
    firmware: str = "uefi"
    private_net: PrivateNet | None = None
    channel: str = ""
    """The release channel the machine runs (cloud platforms find their image by it)."""
    test_id: str = ""
    """The pytest node id the machine was booted for (cloud platforms tag resources with it)."""
    checkpoint_stage: str = ""
    """`firstboot`: the guest stops before Ignition reads its config, announcing it on the console
    (FIRSTBOOT_WAITING), so that a first-boot checkpoint can be saved (platforms with `checkpoints`)."""
    extra_disks_mib: tuple[int, ...] = ()
    """Sizes in MiB of blank disks attached after the boot disk, serials `disk_serial(1)`, `(2)`..."""
    extra_nics: tuple[ExtraNic, ...] = ()
    """NICs attached after the primary one (and the private one), each on the segment of its number."""
    kernel_args: tuple[str, ...] = ()
    """Kernel arguments the boot loader adds to the image's own (SMBIOS type 11; see
    `kernel_args_smbios_strings`)."""
    extra: Mapping[str, str] = field(default_factory=dict)
