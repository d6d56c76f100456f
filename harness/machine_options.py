"""Machine options a test asks for with markers: extra blank disks, extra NICs, memory, firmware and extra
kernel arguments. Pure logic.

The markers are read at collection (a bad argument is one ConfigError naming the marker), folded into
`Requirements.machine`, and resolved by the factory into `MachineSpec` fields. Whether a platform honours an
option is declared by the platform (`Platform.machine_options`); whether an image takes extra kernel arguments
is read from its metadata (`kernel_args_refusal`). A test that asks for what its target cannot give is
skipped with the reason before any machine boots.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from harness.errors import ConfigError
from images.metadata import ImageMetadata
from platforms.base import (
    FIRMWARE_CHOICES,
    MACHINE_OPTIONS,
    MIN_MEMORY_MIB,
    OPTION_DISKS,
    OPTION_FIRMWARE,
    OPTION_KARGS,
    OPTION_MEMORY,
    OPTION_NICS,
)

MAX_DISKS = 16
"""Extra disks per machine (each is a PCI device on the machine's root bus)."""
MAX_DISK_MIB = 1 << 20
"""The largest extra disk: 1 TiB (a qcow2 file grows only as the guest writes)."""
MAX_NICS = 8
"""Extra NICs per machine."""
MAX_KERNEL_ARGS_CHARS = 1024
"""Extra kernel arguments, all together (the x86 kernel's whole command line holds 2048 bytes)."""

FEATURE_KERNEL_ARGS = "smbios-kernel-cmdline"
"""An image feature (its metadata's `features`): its boot loader appends the SMBIOS type 11 string
`io.systemd.boot.kernel-cmdline-extra=` (systemd-boot 256 and later) or `io.systemd.stub.kernel-cmdline-extra=`
(a unified kernel image's systemd-stub 254 and later) to the kernel command line."""
SYSTEMD_BOOT_CMDLINE_VERSION = 256
"""The first systemd-boot that reads `io.systemd.boot.kernel-cmdline-extra` from SMBIOS."""
BOOT_LOADER_PACKAGES = ("systemd-boot-efi", "systemd-boot")

MARKERS: dict[str, str] = {
    "disks(*sizes_mib)": "extra blank disks of these sizes in MiB, serials railyard-disk1, railyard-disk2, ... "
    "(/dev/disk/by-id/virtio-railyard-disk1); local platforms",
    "nics(count)": "this many extra NICs, each on a segment shared by the test's machines; local platforms",
    "memory(mib)": "guest memory of the test's machines in MiB, instead of the run's --memory; local platforms",
    "firmware(kind)": "bios or uefi for the test's machines, instead of --firmware or the image's; local platforms",
    "kargs(*args)": "extra kernel arguments from the first boot on, where the image's boot loader takes them "
    "from SMBIOS (systemd-boot 256 or later); local platforms",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class MachineOptions:
    """What a test's markers ask of its machines; empty fields are the run's defaults."""

    disks_mib: tuple[int, ...] = ()
    nics: int = 0
    memory_mib: int | None = None
    firmware: str | None = None
    kernel_args: tuple[str, ...] = ()

    def asked(self) -> list[str]:
        """The options (OPTION_*, the marker names) the test asked for, in a fixed order."""
        given = {
            OPTION_DISKS: bool(self.disks_mib),
            OPTION_NICS: self.nics > 0,
            OPTION_MEMORY: self.memory_mib is not None,
            OPTION_FIRMWARE: self.firmware is not None,
            OPTION_KARGS: bool(self.kernel_args),
        }
        return [name for name, asked in given.items() if asked]


class Mark(Protocol):
    """The part of a pytest Mark that is read here and in harness.targets (so both stay pure)."""

    @property
    def name(self) -> str: ...
    @property
    def args(self) -> tuple[Any, ...]: ...
    @property
    def kwargs(self) -> Mapping[str, Any]: ...


def is_machine_option(name: str) -> bool:
    """Whether `name` is the marker of a machine option."""
    return name in MACHINE_OPTIONS


def fold(options: MachineOptions, mark: Mark) -> MachineOptions:
    """`options` with the marker `mark` added; markers come closest first (as pytest's iter_markers gives
    them): the closest `disks`, `nics`, `memory` and `firmware` win, `kargs` of every level add up (the
    outer ones first). Raises ConfigError for a bad argument."""
    if mark.kwargs:
        raise ConfigError(
            f"@pytest.mark.{mark.name} takes no keyword arguments (got {', '.join(sorted(mark.kwargs))}); "
            f"e.g. {_EXAMPLES[mark.name]}"
        )
    if mark.name == OPTION_DISKS:
        sizes = tuple(_disk_size(arg) for arg in _flat(mark.args))
        if not sizes:
            raise ConfigError(f"@pytest.mark.disks needs at least one size in MiB, e.g. {_EXAMPLES['disks']}")
        if len(sizes) > MAX_DISKS:
            raise ConfigError(f"@pytest.mark.disks: {len(sizes)} disks asked for, at most {MAX_DISKS}")
        return options if options.disks_mib else replace(options, disks_mib=sizes)
    if mark.name == OPTION_NICS:
        count = _whole(mark, _single(mark), "a number of extra NICs")
        if not 1 <= count <= MAX_NICS:
            raise ConfigError(f"@pytest.mark.nics({count}): give between 1 and {MAX_NICS} extra NICs")
        return options if options.nics else replace(options, nics=count)
    if mark.name == OPTION_MEMORY:
        mib = _whole(mark, _single(mark), "the guest memory in MiB")
        if mib < MIN_MEMORY_MIB:
            raise ConfigError(f"@pytest.mark.memory({mib}): a machine needs at least {MIN_MEMORY_MIB} MiB")
        return options if options.memory_mib is not None else replace(options, memory_mib=mib)
    if mark.name == OPTION_FIRMWARE:
        kind = _single(mark)
        if kind not in FIRMWARE_CHOICES:
            raise ConfigError(
                f"@pytest.mark.firmware({kind!r}): unknown firmware; choose one of {', '.join(FIRMWARE_CHOICES)}"
            )
        return options if options.firmware is not None else replace(options, firmware=str(kind))
    if mark.name == OPTION_KARGS:
        args = tuple(_kernel_arg(arg) for arg in _flat(mark.args))
        if not args:
            raise ConfigError(f"@pytest.mark.kargs needs at least one argument, e.g. {_EXAMPLES['kargs']}")
        combined = (*args, *options.kernel_args)
        if len(" ".join(combined)) > MAX_KERNEL_ARGS_CHARS:
            raise ConfigError(
                f"@pytest.mark.kargs: {len(' '.join(combined))} characters of kernel arguments, "
                f"at most {MAX_KERNEL_ARGS_CHARS}"
            )
        return replace(options, kernel_args=combined)
    raise ConfigError(f"@pytest.mark.{mark.name} is not a machine option")


_EXAMPLES = {
    OPTION_DISKS: "@pytest.mark.disks(1024, 2048)",
    OPTION_NICS: "@pytest.mark.nics(1)",
    OPTION_MEMORY: "@pytest.mark.memory(2048)",
    OPTION_FIRMWARE: '@pytest.mark.firmware("bios")',
    OPTION_KARGS: '@pytest.mark.kargs("foo=bar")',
}


def _flat(args: tuple[Any, ...]) -> list[Any]:
    flat: list[Any] = []
    for arg in args:
        flat.extend(arg if isinstance(arg, list | tuple) else [arg])
    return flat


def _single(mark: Mark) -> Any:
    if len(mark.args) != 1:
        raise ConfigError(
            f"@pytest.mark.{mark.name} takes exactly one argument, not {len(mark.args)}; "
            f"e.g. {_EXAMPLES[mark.name]}"
        )
    return mark.args[0]


def _whole(mark: Mark, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"@pytest.mark.{mark.name}({value!r}): give {what} as a whole number")
    return value


def _disk_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"@pytest.mark.disks: bad size {value!r}; give each size in MiB as a whole number, "
            f"e.g. {_EXAMPLES['disks']}"
        )
    if not 1 <= value <= MAX_DISK_MIB:
        raise ConfigError(f"@pytest.mark.disks: size {value} MiB is out of range (1 to {MAX_DISK_MIB} MiB)")
    return value


def _kernel_arg(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"@pytest.mark.kargs: bad argument {value!r}; give kernel arguments as text")
    if _CONTROL.search(value):
        raise ConfigError(f"@pytest.mark.kargs: {value!r} holds a control character (a newline?)")
    return " ".join(value.split())


# -- what a target can give -------------------------------------------------------------------------------


def kernel_args_refusal(options: MachineOptions, metadata: ImageMetadata | None, firmware: str) -> str | None:
    """Why extra kernel arguments cannot reach a machine of this image and firmware at its first boot, or None
    (also when none are asked for).

    They go to the guest as SMBIOS type 11 strings, which only a boot loader that reads them applies: an image
    whose metadata lists FEATURE_KERNEL_ARGS, or whose systemd-boot is version 256 or later. Changing the
    image's own boot entries instead would mean changing the image.
    """
    if not options.kernel_args:
        return None
    if firmware != "uefi":
        return (
            "@pytest.mark.kargs: extra kernel arguments reach the guest through its UEFI boot loader, and this "
            f"machine boots with {firmware}"
        )
    if metadata is None:
        return (
            "@pytest.mark.kargs: the image has no Railyard metadata, so nothing says that its boot loader "
            "takes extra kernel arguments from SMBIOS"
        )
    if FEATURE_KERNEL_ARGS in metadata.features:
        return None
    version = boot_loader_version(metadata.packages)
    if version is not None and version >= SYSTEMD_BOOT_CMDLINE_VERSION:
        return None
    found = f"systemd-boot {version}" if version is not None else "its boot loader"
    return (
        f"@pytest.mark.kargs: image {metadata.name} cannot take extra kernel arguments at first boot: {found} "
        f"does not read SMBIOS io.systemd.boot.kernel-cmdline-extra (systemd-boot {SYSTEMD_BOOT_CMDLINE_VERSION} "
        f"and later do; an image can also declare the feature {FEATURE_KERNEL_ARGS!r})"
    )


def boot_loader_version(packages: Mapping[str, str]) -> int | None:
    """The major version of the image's systemd-boot, from its package list (`252.39-1~deb12u2` -> 252)."""
    for name in BOOT_LOADER_PACKAGES:
        match = re.match(r"(?:\d+:)?(\d+)", packages.get(name, ""))
        if match:
            return int(match.group(1))
    return None
