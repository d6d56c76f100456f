"""A machine's shape (vCPUs, memory, firmware): platform-neutral options, resolved once per machine.

`--cpus`, `--memory` and `--firmware` mean the same on every platform that can honour them (QEMU, libvirt);
the older `--qemu-cpus`, `--qemu-memory` and `--qemu-firmware` are the same options under their first names.
A test's `memory` and `firmware` markers (harness.machine_options) override them for that test's machines.
A platform that cannot honour one (a cloud, where the instance type sets the size and the image its firmware)
refuses it before anything boots rather than ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import ConfigError
from platforms.base import FIRMWARE_CHOICES

DEFAULT_MEMORY_MIB = 1024
# Under KVM a machine gets two vCPUs; under TCG one (each machine is admitted to one host core).
KVM_CPUS = 2
TCG_CPUS = 1

SHAPE_OPTIONS = {"machine_cpus": "--cpus", "machine_memory": "--memory", "machine_firmware": "--firmware"}
"""Option dest -> its platform-neutral spelling."""


def add_shape_options(group: Any) -> None:
    """Register the shape options on a pytest option group."""
    group.addoption(
        "--cpus", "--qemu-cpus", dest="machine_cpus", type=int, default=None, metavar="N",
        help=f"vCPUs per machine (default: {KVM_CPUS} under KVM, {TCG_CPUS} under TCG, where each machine "
        "is admitted to one host core); local platforms only",
    )  # fmt: skip
    group.addoption(
        "--memory", "--qemu-memory", dest="machine_memory", type=int, default=None, metavar="MIB",
        help=f"guest memory in MiB (default: {DEFAULT_MEMORY_MIB}); local platforms only",
    )  # fmt: skip
    group.addoption(
        "--firmware", "--qemu-firmware", dest="machine_firmware", choices=FIRMWARE_CHOICES, default=None,
        help="firmware to boot with (default: what the image declares, else uefi); local platforms only",
    )  # fmt: skip


def given_shape_options(options: Mapping[str, Any]) -> list[str]:
    """The shape options a user gave, by their platform-neutral spelling."""
    return [flag for dest, flag in SHAPE_OPTIONS.items() if options.get(dest) is not None]


def check_shape_options(options: Mapping[str, Any]) -> None:
    """Values every platform would refuse. Raises ConfigError."""
    for dest in ("machine_cpus", "machine_memory"):
        value = options.get(dest)
        if value is not None and int(value) < 1:
            raise ConfigError(f"{SHAPE_OPTIONS[dest]} must be a positive number, not {value}")


def memory_mib(options: Mapping[str, Any], wanted: int | None = None) -> int:
    """The test's `memory` marker (`wanted`), else --memory, else the default."""
    if wanted is not None:
        return wanted
    value = options.get("machine_memory")
    return int(value) if value is not None else DEFAULT_MEMORY_MIB


def cpus(options: Mapping[str, Any], emulated: bool) -> int:
    value = options.get("machine_cpus")
    if value is not None:
        return int(value)
    return TCG_CPUS if emulated else KVM_CPUS


def firmware(options: Mapping[str, Any], image_firmware: str | None, wanted: str | None = None) -> str:
    """The test's `firmware` marker (`wanted`), else --firmware, else what the image's metadata declares,
    else UEFI."""
    return str(wanted or options.get("machine_firmware") or image_firmware or "uefi")
