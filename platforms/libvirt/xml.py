"""libvirt XML of one machine, rendered by pure functions (no I/O, no libvirt), so it can be unit-tested.

A machine is a persistent domain plus three storage volumes in the hypervisor's pool: a qcow2 overlay backed by
the base image's volume, the Ignition config (handed to the guest as a fw_cfg blob) and the serial console log
(written by virtlogd). SSH goes through QEMU user-mode networking with a host forward bound to 127.0.0.1 on the
hypervisor, given on `<qemu:commandline>`: this libvirt knows user networking only through passt. The domain
carries Railyard's `<metadata>` (run id, owner process, creation time) so `railyard gc` can find leftovers.
A test's machine options add blank qcow2 volumes as virtio disks (serials `railyard-disk1`...), NICs on the L2
hub's segments (on `<qemu:commandline>` like the others) and SMBIOS type 11 strings with extra kernel arguments
(`<sysinfo type='smbios'>`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from harness.acceleration import Acceleration
from harness.errors import ConfigError
from platforms.base import MIN_MEMORY_MIB, MachineSpec, disk_serial, kernel_args_smbios_strings

METADATA_NS = "https://railyard.invalid/libvirt/1"
METADATA_PREFIX = "railyard"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
DOMAIN_PREFIX = "railyard-"
GUEST_SSH_PORT = 22
# The user-net NIC sits on the q35 root bus at a fixed slot: without an explicit bus/addr QEMU puts it where
# libvirt later places its own PCIe root ports, and the domain fails to start.
USER_NET_BUS = "pcie.0"
USER_NET_ADDR = "0x10"
PRIVATE_NET_ADDR = "0x11"
FIRST_EXTRA_NIC_SLOT = 0x12
"""Extra NICs take the root bus slots from here on (0x12, 0x13...), clear of libvirt's root ports."""
USER_NET_ID = "railyard-net0"
PRIVATE_NET_ID = "railyard-net1"
EXTRA_NET_ID = "railyard-extra{index}"
# Domain names are kept short: they end up in file names (NVRAM, logs) on the hypervisor.
MAX_DOMAIN_NAME = 80


@dataclass(frozen=True)
class OwnerRecord:
    """Who created a domain and when, as stored in its `<metadata>`. `railyard gc` decides with it."""

    run_id: str
    machine: str
    owner_pid: int
    owner_host: str
    owner_start: int
    """The owner's start time (clock ticks after boot, from /proc/PID/stat), telling a reused pid apart."""
    created: float
    """Seconds since the epoch."""
    test: str = ""


@dataclass(frozen=True)
class DomainFiles:
    """Where the hypervisor finds a machine's files (paths on the hypervisor host, e.g. volume paths)."""

    overlay: Path
    ignition: Path
    console_log: Path
    disks: tuple[Path, ...] = ()
    """The volumes of the test's extra disks, in order (`MachineSpec.extra_disks_mib`)."""


@dataclass(frozen=True)
class LibvirtFirmware:
    """`bios` (SeaBIOS) or `uefi` with an OVMF code file and the vars template libvirt copies per domain."""

    kind: str
    code: Path | None = None
    vars_template: Path | None = None


def domain_name(run_id: str, machine: str) -> str:
    """The domain name of a machine: prefixed, carrying the run id, only characters safe in file names."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", f"{DOMAIN_PREFIX}{run_id}-{machine}")
    return name[:MAX_DOMAIN_NAME]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _qemu_value(text: str) -> str:
    """Escape a value for QEMU's `key=value,...` option syntax, where a literal comma is written twice."""
    return text.replace(",", ",,")


def netdev_args(spec: MachineSpec) -> list[str]:
    """QEMU arguments of the NICs: user-mode networking with SSH forwarded from a port QEMU picks on
    127.0.0.1, and the cluster's private segment (frames relayed by the L2 hub) when the spec has one."""
    args = [
        "-netdev", f"user,id={USER_NET_ID},hostfwd=tcp:127.0.0.1:0-:{GUEST_SSH_PORT}",
        "-device",
        f"virtio-net-pci,netdev={USER_NET_ID},bus={USER_NET_BUS},addr={USER_NET_ADDR},romfile=",
    ]  # fmt: skip
    net = spec.private_net
    if net is not None:
        args += [
            "-netdev", f"socket,id={PRIVATE_NET_ID},connect=127.0.0.1:{net.hub_port}",
            "-device",
            f"virtio-net-pci,netdev={PRIVATE_NET_ID},mac={net.mac},bus={USER_NET_BUS},"
            f"addr={PRIVATE_NET_ADDR},romfile=",
        ]  # fmt: skip
    for index, nic in enumerate(spec.extra_nics, start=1):
        netdev = EXTRA_NET_ID.format(index=index)
        args += [
            "-netdev", f"socket,id={netdev},connect=127.0.0.1:{nic.hub_port}",
            "-device",
            f"virtio-net-pci,netdev={netdev},mac={nic.mac},bus={USER_NET_BUS},"
            f"addr={FIRST_EXTRA_NIC_SLOT + index - 1:#x},romfile=",
        ]  # fmt: skip
    return args


def extra_disk_target(index: int) -> str:
    """The target device of extra disk `index` (1 for the first): vdb, vdc, ... (the boot disk is vda)."""
    if not 1 <= index <= 25:
        raise ConfigError(f"extra disk {index}: at most 25 extra disks have a virtio target name")
    return "vd" + chr(ord("a") + index)


def _metadata(domain: ET.Element, owner: OwnerRecord) -> None:
    metadata = _sub(domain, "metadata")
    _sub(
        metadata,
        f"{{{METADATA_NS}}}run",
        id=owner.run_id,
        machine=owner.machine,
        owner_pid=str(owner.owner_pid),
        owner_host=owner.owner_host,
        owner_start=str(owner.owner_start),
        created=f"{owner.created:.0f}",
        test=owner.test,
    )


def _os(domain: ET.Element, firmware: LibvirtFirmware, smbios: bool) -> None:
    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm", arch="x86_64", machine="q35")
    if smbios:  # the SMBIOS tables carry the domain's `<sysinfo type='smbios'>`
        _sub(os_element, "smbios", mode="sysinfo")
    if firmware.kind == "uefi":
        if firmware.code is None or firmware.vars_template is None:
            raise ConfigError("UEFI firmware needs an OVMF code file and a vars template")
        _sub(os_element, "loader", str(firmware.code), readonly="yes", type="pflash", secure="no")
        # No path: libvirt copies the template to its own per-domain NVRAM file, removed on undefine.
        _sub(os_element, "nvram", template=str(firmware.vars_template))
    elif firmware.kind != "bios":
        raise ConfigError(f"unknown firmware {firmware.kind!r}: choose uefi or bios")


def _devices(domain: ET.Element, files: DomainFiles) -> None:
    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache="unsafe", discard="unmap")
    _sub(disk, "source", file=str(files.overlay))
    _sub(disk, "target", dev="vda", bus="virtio")
    _sub(disk, "boot", order="1")
    for index, path in enumerate(files.disks, start=1):
        extra = _sub(devices, "disk", type="file", device="disk")
        _sub(extra, "driver", name="qemu", type="qcow2", cache="unsafe", discard="unmap")
        _sub(extra, "source", file=str(path))
        _sub(extra, "target", dev=extra_disk_target(index), bus="virtio")
        _sub(extra, "serial", disk_serial(index))
    # A pty nobody reads drops output instead of stalling the guest; virtlogd appends all of it to the log.
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(files.console_log), append="on")
    _sub(serial, "target", port="0")
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "watchdog", model="i6300esb", action="reset")


def domain_xml(
    spec: MachineSpec,
    *,
    name: str,
    accel: Acceleration,
    firmware: LibvirtFirmware,
    files: DomainFiles,
    owner: OwnerRecord,
) -> str:
    """The domain XML that boots `spec`. Pure: it reads and writes no file."""
    if spec.cpus < 1:
        raise ConfigError(f"machine {spec.name}: cpus must be at least 1, not {spec.cpus}")
    if spec.memory_mib < MIN_MEMORY_MIB:
        raise ConfigError(
            f"machine {spec.name}: {spec.memory_mib} MiB of memory is too little (min {MIN_MEMORY_MIB})"
        )
    if len(files.disks) != len(spec.extra_disks_mib):
        raise ConfigError(
            f"machine {spec.name}: {len(spec.extra_disks_mib)} extra disks asked for, {len(files.disks)} volumes given"
        )
    if not spec.ignition_fw_cfg.startswith("opt/"):
        raise ConfigError(f"fw_cfg name {spec.ignition_fw_cfg!r} must start with 'opt/' (QEMU's rule)")
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    ET.register_namespace("qemu", QEMU_NS)
    domain = ET.Element("domain", type="kvm" if accel.name == "kvm" else "qemu")
    _sub(domain, "name", name)
    _metadata(domain, owner)
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.cpus), placement="static")
    sysinfo = _sub(domain, "sysinfo", type="fwcfg")
    _sub(sysinfo, "entry", name=spec.ignition_fw_cfg, file=str(files.ignition))
    oem_strings = kernel_args_smbios_strings(spec.kernel_args)
    if oem_strings:  # SMBIOS type 11
        strings = _sub(_sub(domain, "sysinfo", type="smbios"), "oemStrings")
        for text in oem_strings:
            _sub(strings, "entry", text)
    _os(domain, firmware, smbios=bool(oem_strings))
    features = _sub(domain, "features")
    _sub(features, "acpi")
    # KVM passes the host CPU through; TCG emulates every feature it can.
    _sub(domain, "cpu", mode="host-passthrough" if accel.name == "kvm" else "maximum", check="none")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    _devices(domain, files)
    commandline = _sub(domain, f"{{{QEMU_NS}}}commandline")
    for arg in netdev_args(spec):
        _sub(commandline, f"{{{QEMU_NS}}}arg", value=arg)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def parse_owner(metadata_xml: str) -> OwnerRecord | None:
    """The owner record in a domain's Railyard metadata element (as `virDomainGetMetadata` returns it),
    or None when it is missing or malformed (then the domain is not Railyard's to touch)."""
    try:
        element = ET.fromstring(metadata_xml)
    except ET.ParseError:
        return None
    if element.tag not in ("run", f"{{{METADATA_NS}}}run"):
        return None
    try:
        return OwnerRecord(
            run_id=element.attrib["id"],
            machine=element.attrib.get("machine", ""),
            owner_pid=int(element.attrib["owner_pid"]),
            owner_host=element.attrib.get("owner_host", ""),
            owner_start=int(element.attrib.get("owner_start", "0")),
            created=float(element.attrib["created"]),
            test=element.attrib.get("test", ""),
        )
    except (KeyError, ValueError):
        return None


def volume_xml(
    name: str,
    *,
    capacity: int,
    fmt: str = "raw",
    backing: Path | None = None,
    backing_format: str = "qcow2",
    mode: str = "0644",
) -> str:
    """A storage volume: a raw file (Ignition, console log, base image upload) or a qcow2 overlay on `backing`."""
    if capacity < 0:
        raise ConfigError(f"volume {name}: capacity must not be negative")
    volume = ET.Element("volume")
    _sub(volume, "name", name)
    _sub(volume, "capacity", str(capacity), unit="bytes")
    _sub(volume, "allocation", "0", unit="bytes")
    target = _sub(volume, "target")
    _sub(target, "format", type=fmt)
    permissions = _sub(target, "permissions")
    _sub(permissions, "mode", mode)
    if backing is not None:
        store = _sub(volume, "backingStore")
        _sub(store, "path", str(backing))
        _sub(store, "format", type=backing_format)
    ET.indent(volume)
    return ET.tostring(volume, encoding="unicode") + "\n"


def pool_xml(name: str, directory: Path) -> str:
    """A directory storage pool."""
    pool = ET.Element("pool", type="dir")
    _sub(pool, "name", name)
    target = _sub(pool, "target")
    _sub(target, "path", str(directory))
    permissions = _sub(target, "permissions")
    _sub(permissions, "mode", "0711")
    ET.indent(pool)
    return ET.tostring(pool, encoding="unicode") + "\n"
