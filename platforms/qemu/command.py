"""The QEMU command line of one machine, built by pure functions (no I/O), so it can be unit-tested.

Per machine: a qcow2 overlay over the read-only base image, the serial console appended to a file (a socket
chardev nobody reads stalls the guest's UART), a QMP socket, user-mode networking with SSH forwarded from a port
QEMU picks on 127.0.0.1, the Ignition config as a fw_cfg blob, a watchdog that resets a hung guest. A test's
machine options add blank qcow2 disks (in the runtime dir, serials `railyard-disk1`...), NICs on the L2 hub's
segments and SMBIOS type 11 strings with extra kernel arguments.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.acceleration import Acceleration
from harness.errors import ConfigError, PlatformError
from platforms.base import (
    FIRMWARE_CHOICES,
    MIN_MEMORY_MIB,
    MachineSpec,
    disk_serial,
    kernel_args_smbios_strings,
)

QEMU_BINARY = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GUEST_SSH_PORT = 22
CHECKPOINT_FW_CFG = "opt/org.railyard/checkpoint"
TCG_TB_SIZE_MIB = 128
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

FirmwareKind = Literal["uefi", "bios"]


@dataclass(frozen=True)
class Firmware:
    """`bios` is QEMU's built-in SeaBIOS; `uefi` is OVMF: read-only code plus a per-machine copy of the vars."""

    kind: FirmwareKind
    code: Path | None = None
    vars_template: Path | None = None

    @classmethod
    def named(cls, kind: str, code: Path = OVMF_CODE, vars_template: Path = OVMF_VARS) -> Firmware:
        if kind == "uefi":
            return cls("uefi", code, vars_template)
        if kind == "bios":
            return cls("bios")
        raise ConfigError(f"unknown firmware {kind!r}: choose one of {', '.join(FIRMWARE_CHOICES)}")


@dataclass(frozen=True)
class QemuPaths:
    """The files of one machine. Disposable runtime files live in `runtime_dir`; the rest are artifacts."""

    runtime_dir: Path
    overlay: Path
    vars: Path
    qmp_socket: Path
    pidfile: Path
    console: Path
    ignition: Path
    log: Path

    @classmethod
    def layout(cls, workdir: Path, runtime_dir: Path, socket_dir: Path | None = None) -> QemuPaths:
        """Where each file goes. The QMP socket goes in `socket_dir` when given: a unix socket path has at
        most 107 bytes, which a deep `workdir` can exceed (see `socket_path_fits`)."""
        return cls(
            runtime_dir=runtime_dir,
            overlay=runtime_dir / "disk.qcow2",
            vars=runtime_dir / "OVMF_VARS.qcow2",
            qmp_socket=(socket_dir or runtime_dir) / "qmp.sock",
            pidfile=runtime_dir / "qemu.pid",
            console=workdir / "console.txt",
            ignition=workdir / "ignition.json",
            log=workdir / "qemu.log",
        )

    def extra_disk(self, index: int) -> Path:
        """The file of the machine's extra disk `index` (1 for the first), disposable like the overlay."""
        return self.runtime_dir / f"disk{index}.qcow2"


def socket_path_fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH


def _value(path: Path | str) -> str:
    """Escape a value for QEMU's `key=value,...` option syntax, where a literal comma is written twice."""
    return str(path).replace(",", ",,")


def accel_args(accel: Acceleration) -> list[str]:
    if accel.name == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # Multi-threaded TCG: one host thread per vCPU, which shortens the early boot noticeably. A translation
    # buffer of 128 MiB instead of QEMU's default: with the default, firmware and kernel ran several times
    # slower after a guest reset than after QEMU's start (bench/boot.py, medians of 3 runs: a reboot's
    # firmware + boot loader phase 30.6 s and kernel phase 24.3 s, against 6.8 s and 3.5 s at the first
    # boot of the same runs; with 128 MiB, 7.2 s and 4.5 s after a reset as at the first boot).
    return ["-accel", f"tcg,thread=multi,tb-size={TCG_TB_SIZE_MIB}", "-cpu", "max"]


def firmware_args(firmware: Firmware, paths: QemuPaths) -> list[str]:
    if firmware.kind == "bios":
        return []
    if firmware.code is None:
        raise ConfigError("UEFI firmware needs an OVMF code file")
    return [
        "-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={_value(firmware.code)}",
        "-drive", f"if=pflash,unit=1,format=qcow2,file={_value(paths.vars)}",
    ]  # fmt: skip


def private_net_args(spec: MachineSpec) -> list[str]:
    """A second NIC on the cluster's private segment: frames relayed by the L2 hub over 127.0.0.1."""
    net = spec.private_net
    if net is None:
        return []
    return [
        "-netdev", f"socket,id=p0,connect=127.0.0.1:{net.hub_port}",
        "-device", f"virtio-net-pci,netdev=p0,mac={net.mac},romfile=",
    ]  # fmt: skip


def extra_disk_args(spec: MachineSpec, paths: QemuPaths) -> list[str]:
    """The test's blank disks after the boot disk, each with a serial the guest names it by
    (`/dev/disk/by-id/virtio-railyard-disk1`)."""
    args: list[str] = []
    for index in range(1, len(spec.extra_disks_mib) + 1):
        args += [
            "-drive",
            f"if=none,id=disk{index},format=qcow2,cache=unsafe,discard=unmap,file={_value(paths.extra_disk(index))}",
            "-device", f"virtio-blk-pci,drive=disk{index},serial={disk_serial(index)}",
        ]  # fmt: skip
    return args


def extra_nic_args(spec: MachineSpec) -> list[str]:
    """The test's extra NICs, each on the segment of its number: frames relayed by an L2 hub over 127.0.0.1."""
    args: list[str] = []
    for index, nic in enumerate(spec.extra_nics, start=1):
        args += [
            "-netdev", f"socket,id=x{index},connect=127.0.0.1:{nic.hub_port}",
            "-device", f"virtio-net-pci,netdev=x{index},mac={nic.mac},romfile=",
        ]  # fmt: skip
    return args


def kernel_args_args(spec: MachineSpec) -> list[str]:
    """Extra kernel arguments as SMBIOS type 11 strings, for a boot loader that reads them."""
    args: list[str] = []
    for text in kernel_args_smbios_strings(spec.kernel_args):
        args += ["-smbios", f"type=11,value={_value(text)}"]
    return args


def qemu_command(
    spec: MachineSpec,
    *,
    accel: Acceleration,
    paths: QemuPaths,
    firmware: Firmware,
    binary: str = QEMU_BINARY,
) -> list[str]:
    """The full argv that boots `spec`. Pure: it reads and writes no file."""
    if spec.cpus < 1:
        raise ConfigError(f"machine {spec.name}: cpus must be at least 1, not {spec.cpus}")
    if spec.memory_mib < MIN_MEMORY_MIB:
        raise ConfigError(
            f"machine {spec.name}: {spec.memory_mib} MiB of memory is too little (min {MIN_MEMORY_MIB})"
        )
    return [
        binary,
        "-name", _value(spec.name),
        "-machine", "q35",
        *accel_args(accel),
        "-smp", str(spec.cpus),
        "-m", str(spec.memory_mib),
        "-no-user-config",
        "-nodefaults",
        "-vga", "none",
        "-display", "none",
        "-chardev", f"file,id=con,path={_value(paths.console)},append=on",
        "-serial", "chardev:con",
        *firmware_args(firmware, paths),
        "-drive", f"if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap,file={_value(paths.overlay)}",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
        *extra_disk_args(spec, paths),
        "-fw_cfg", f"name={_value(spec.ignition_fw_cfg)},file={_value(paths.ignition)}",
        # What the default image's initramfs does before Ignition: `firstboot` waits for a checkpoint.
        "-fw_cfg", f"name={CHECKPOINT_FW_CFG},string={spec.checkpoint_stage or 'none'}",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:0-:{GUEST_SSH_PORT}",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        *private_net_args(spec),
        *extra_nic_args(spec),
        *kernel_args_args(spec),
        "-device", "virtio-rng-pci",
        # A new generation id at every start: a machine restored from a checkpoint reseeds its kernel RNG.
        "-device", "vmgenid,guid=auto",
        "-device", "i6300esb",
        "-action", "watchdog=reset",
        "-qmp", f"unix:{_value(paths.qmp_socket)},server=on,wait=off",
        "-pidfile", str(paths.pidfile),
    ]  # fmt: skip


def overlay_command(base: Path, base_format: str, overlay: Path) -> list[str]:
    """`qemu-img` argv creating a qcow2 overlay backed by the (never written) base image."""
    return [
        QEMU_IMG,
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        base_format,
        "-b",
        str(base.resolve()),
        str(overlay),
    ]


def blank_disk_command(path: Path, size_mib: int) -> list[str]:
    """`qemu-img` argv creating an empty qcow2 disk of `size_mib` MiB (it grows as the guest writes)."""
    return [QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), f"{size_mib}M"]


_HOST_FORWARD = re.compile(
    r"TCP\[HOST_FORWARD\]\s+-?\d+\s+(?P<host>\S+)\s+(?P<port>\d+)\s+\S+\s+(?P<guest>\d+)\b"
)


def forwarded_port(usernet: str, guest_port: int = GUEST_SSH_PORT) -> int:
    """The host port QEMU bound for `hostfwd=...-:guest_port`, from the text of HMP `info usernet`."""
    for match in _HOST_FORWARD.finditer(usernet):
        if int(match["guest"]) == guest_port and int(match["port"]) != 0:
            return int(match["port"])
    raise PlatformError(f"no host forward to guest port {guest_port} in `info usernet`:\n{usernet}")
