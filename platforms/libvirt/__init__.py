"""The libvirt platform: machines as persistent domains on one or more hypervisors, driven by libvirt-python.

The domain XML comes from the pure `domain_xml` (platforms.libvirt.xml); disks, the Ignition config and the
console log are storage volumes (platforms.libvirt.storage), uploaded and read through libvirt's stream API, so
a remote hypervisor works like a local one. A guest's SSH is forwarded from its hypervisor's 127.0.0.1: on a
remote hypervisor (`qemu+ssh://user@host/system`) the harness reaches it through an SSH jump to that host, with
the credentials libvirt's URI names (harness.ssh_jump). What lives in this process (the L2 hub of private
networks and extra NICs) cannot reach a remote hypervisor: tests needing it are skipped there.
Machines are spread round-robin over the `--libvirt-uri`s; an xdist worker starts at its own offset, so two
workers with two URIs begin on different hypervisors. Every domain records its owner process in its
`<metadata>`: `close()` removes what this process created, `railyard gc --platform=libvirt` what a killed one
left (domain, NVRAM, volumes).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import BootError, ConfigError, PlatformError, SSHError
from harness.ssh_jump import SSHJump
from platforms.base import (
    CAP_HARD_RESET,
    CAP_HOST_SERVICES,
    CAP_POWER_CYCLE,
    CAP_PRIVATE_NETWORK,
    FIRMWARE_CHOICES,
    MACHINE_OPTIONS,
    OPTION_NICS,
    GarbageRequest,
    Machine,
    MachineSpec,
    NicSegment,
    Platform,
    PlatformContext,
    PrivateNetwork,
    SSHEndpoint,
)
from platforms.libvirt.gc import collect_on, disk_volume_name, pid_start_time, remove_domain, volume_names
from platforms.libvirt.storage import (
    DEFAULT_POOL,
    HypervisorAddress,
    base_volume,
    create_blank,
    create_overlay,
    create_raw,
    ensure_pool,
    inspect_image,
    parse_uri,
    pool_directory,
    read_volume,
)
from platforms.libvirt.xml import (
    DomainFiles,
    LibvirtFirmware,
    OwnerRecord,
    domain_name,
    domain_xml,
)
from platforms.qemu.command import OVMF_CODE, OVMF_VARS, forwarded_port
from platforms.qemu.l2hub import HubNetwork, HubSegment

__all__ = ["LibvirtMachine", "LibvirtPlatform", "domain_xml"]

log = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///system"
PORT_TIMEOUT = 30.0


def _libvirt() -> Any:
    try:
        libvirt = importlib.import_module("libvirt")
    except ImportError as exc:
        raise ConfigError(
            "the libvirt platform needs libvirt-python: pip install 'railyard[libvirt]'"
        ) from exc
    # libvirt prints every error to stderr by default, also those Railyard expects and handles.
    libvirt.registerErrorHandler(_ignore_error, None)
    return libvirt


def _ignore_error(_context: object, _error: object) -> None:
    """Errors reach Railyard as exceptions; libvirt's own printing of them is turned off."""


class Hypervisor:
    """One libvirt connection and its Railyard storage pool."""

    def __init__(self, address: HypervisorAddress, pool_name: str) -> None:
        self.address = address
        self.pool_name = pool_name
        jump = address.jump_address()
        self.jump = SSHJump(jump) if jump is not None else None
        """How the harness reaches the guests' forwarded ports on a remote host; None on this host."""
        self._conn: Any = None
        self._pool: Any = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.address.uri

    @property
    def conn(self) -> Any:
        with self._lock:
            if self._conn is None:
                libvirt = _libvirt()
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise ConfigError(
                        f"cannot connect to libvirt at {self.uri}: {exc}; is libvirtd (and virtlogd) running "
                        f"there, and may this user use it?"
                    ) from exc
            return self._conn

    @property
    def pool(self) -> Any:
        conn = self.conn
        with self._lock:
            if self._pool is None:
                self._pool = ensure_pool(conn, self.address, self.pool_name)
            return self._pool

    def existing_pool(self) -> Any | None:
        """The pool if the hypervisor has it (gc never creates one)."""
        libvirt = _libvirt()
        try:
            return self.conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError:
            return None

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._pool = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if self.jump is not None:
            self.jump.close()

    def where(self) -> str:
        """Where its guests' SSH ports are forwarded from, for log lines."""
        return "127.0.0.1" if self.jump is None else f"127.0.0.1 of {self.address.host}"


@dataclass
class _ConsoleCopy:
    """How much of the hypervisor's console log is already in the local console file."""

    offset: int = 0


class LibvirtMachine(Machine):
    live_console = True

    def __init__(
        self,
        spec: MachineSpec,
        *,
        hypervisor: Hypervisor,
        domain: Any,
        domain_name: str,
        ssh_port: int,
        xml: str,
    ) -> None:
        super().__init__(spec)
        self.hypervisor = hypervisor
        self.domain = domain
        self.domain_name = domain_name
        self.ssh_port = ssh_port
        self.xml = xml
        self._console = _ConsoleCopy()
        self._console_lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.hypervisor.uri

    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        """The forwarded port on the hypervisor's loopback: this host's, or a remote host's through a jump."""
        return SSHEndpoint("127.0.0.1", self.ssh_port, self.spec.ssh_user, via=self.hypervisor.jump)

    @property
    def console_path(self) -> Path:
        """The local copy of the console log, brought up to date with the hypervisor's on each access."""
        path = self.spec.workdir / "console.txt"
        self.sync_console(path)
        return path

    def sync_console(self, path: Path) -> None:
        libvirt = _libvirt()
        _, _, console = volume_names(self.domain_name)
        with self._console_lock:
            try:
                volume = self.hypervisor.pool.storageVolLookupByName(console)
                data = read_volume(
                    self.hypervisor.conn, volume, self._console.offset, self.hypervisor.address.local
                )
            except (libvirt.libvirtError, PlatformError, OSError) as exc:
                log.debug("%s: console not copied: %s", self.name, exc)
                path.touch()
                return
            with path.open("ab") as out:
                out.write(data)
            self._console.offset += len(data)

    def is_running(self) -> bool:
        libvirt = _libvirt()
        try:
            return bool(self.domain.isActive())
        except libvirt.libvirtError:
            return False

    def reset(self) -> None:
        if not self.is_running():
            raise PlatformError(
                f"cannot reset {self.name}: domain {self.domain_name} on {self.uri} is not running"
            )
        log.info("%s: hard reset", self.name)
        self.domain.reset(0)

    def power_cycle(self) -> None:
        """Destroy the domain (its QEMU process) and start it again: same volumes and UEFI variables, the
        console log appended to, SSH forwarded from the port the new QEMU picks."""
        libvirt = _libvirt()
        log.info("%s: power cycle (domain %s destroyed and started again)", self.name, self.domain_name)
        self.kill()
        try:
            self.domain.create()
        except libvirt.libvirtError as exc:
            raise PlatformError(f"cannot start domain {self.domain_name} on {self.uri} again: {exc}") from exc
        self.ssh_port = _ssh_port(self.domain, PORT_TIMEOUT)
        log.info("%s: SSH forwarded from %s:%d", self.name, self.hypervisor.where(), self.ssh_port)

    def poweroff(self, timeout: float) -> None:
        libvirt = _libvirt()
        if not self.is_running():
            return
        log.info("%s: ACPI power-off (up to %.0f s)", self.name, timeout)
        try:
            self.domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as exc:
            log.warning("%s: power-off request failed (%s); destroying the domain", self.name, exc)
        deadline = time.monotonic() + timeout
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.2)  # libvirt's lifecycle events need an event loop; the state is cheap to poll
        if self.is_running():
            log.warning("%s: the guest did not power off within %.0f s; destroying it", self.name, timeout)
        self.kill()

    def kill(self) -> None:
        libvirt = _libvirt()
        try:
            if self.domain.isActive():
                self.domain.destroy()
        except libvirt.libvirtError as exc:
            if self.is_running():
                raise PlatformError(f"cannot stop domain {self.domain_name} on {self.uri}: {exc}") from exc

    def access_hint(self) -> str:
        return (
            f"{super().access_hint()}  (domain {self.domain_name} on {self.uri}: virsh -c {self.uri} console)"
        )

    def artifacts(self) -> dict[str, str]:
        return {"libvirt-domain.xml": self.xml}

    def __repr__(self) -> str:
        return f"<LibvirtMachine {self.name} {self.domain_name}@{self.uri} ssh={self.hypervisor.where()}:{self.ssh_port}>"


class LibvirtPlatform(Platform):
    name: ClassVar[str] = "libvirt"
    # Machines of local URIs share the host's cores with the tests (admission by cores applies).
    local: ClassVar[bool] = True
    machine_capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_HARD_RESET, CAP_POWER_CYCLE, CAP_PRIVATE_NETWORK, CAP_HOST_SERVICES}
    )
    machine_options: ClassVar[frozenset[str]] = MACHINE_OPTIONS

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        uris = list(ctx.options.get("libvirt_uri") or [DEFAULT_URI])
        pool = str(ctx.options.get("libvirt_pool") or DEFAULT_POOL)
        self.hypervisors = [Hypervisor(parse_uri(uri), pool) for uri in dict.fromkeys(uris)]
        self._next = itertools.count(_worker_index())
        self._owner_start = pid_start_time(os.getpid())
        self._host = socket.gethostname()

    @classmethod
    def add_options(cls, group: argparse._ArgumentGroup | Any) -> None:
        add = getattr(group, "addoption", None) or group.add_argument
        add(
            "--libvirt-uri", dest="libvirt_uri", action="append", default=None, metavar="URI",
            help=f"a libvirt hypervisor to boot on; repeat to spread machines over several (default: {DEFAULT_URI})",
        )  # fmt: skip
        add(
            "--libvirt-pool", dest="libvirt_pool", default=DEFAULT_POOL, metavar="NAME",
            help=f"storage pool for disks and logs on each hypervisor, created as a directory pool if missing "
            f"(default: {DEFAULT_POOL})",
        )  # fmt: skip

    @classmethod
    def run_capabilities(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """No private network where any hypervisor is remote: its segments are an L2 hub in this process."""
        if _remote_uris(options):
            return cls.machine_capabilities - {CAP_PRIVATE_NETWORK}
        return cls.machine_capabilities

    @classmethod
    def run_option_refusal(cls, options: Mapping[str, Any], option: str) -> str | None:
        remote = _remote_uris(options)
        if option == OPTION_NICS and remote:
            return (
                f"@pytest.mark.nics: extra NICs join segments in the test process, which machines on the "
                f"remote hypervisor {remote[0]} cannot reach"
            )
        return cls.machine_option_refusal(option)

    @classmethod
    def collect_leftovers(cls, request: GarbageRequest) -> list[str]:
        return cls.collect_garbage(request)

    @classmethod
    def collect_garbage(cls, request: GarbageRequest) -> list[str]:
        """Domains (with NVRAM and volumes) whose owner process is gone, or older than `--older-than`."""
        uris = list(request.options.get("libvirt_uri") or [DEFAULT_URI])
        pool = str(request.options.get("libvirt_pool") or DEFAULT_POOL)
        lines: list[str] = []
        for uri in dict.fromkeys(uris):
            hypervisor = Hypervisor(parse_uri(uri), pool)
            try:
                lines += collect_on(hypervisor.conn, hypervisor.existing_pool(), uri, request)
            finally:
                hypervisor.close()
        return lines

    def _option(self, name: str) -> Any:
        return self.ctx.options.get(name)

    def validate(self) -> None:
        _libvirt()
        for hypervisor in self.hypervisors:
            address = hypervisor.address
            if not address.local and not address.over_ssh:
                # Its user-net forwards listen on that host's loopback, reached only through an SSH login there.
                raise ConfigError(
                    f"--libvirt-uri {hypervisor.uri}: machines on a remote hypervisor have SSH on that host's "
                    f"127.0.0.1, which the tests reach through an SSH login to {address.host or 'it'}: use an "
                    f"SSH transport (qemu+ssh://user@{address.host or 'HOST'}/system?keyfile=...)"
                )
            hypervisor.pool  # noqa: B018 - connect and make sure the pool exists, before any boot
            if hypervisor.jump is not None:
                try:
                    hypervisor.jump.transport()  # log in once before any boot: a bad key is one clear error
                except SSHError as exc:
                    raise ConfigError(
                        f"--libvirt-uri {hypervisor.uri}: the guests' SSH is reached through {address.host}, "
                        f"but {exc}; the URI's user@host:port, keyfile=, known_hosts= and no_verify=1 say "
                        f"how to log in there"
                    ) from exc
            log.info("libvirt: %s (pool %s)", hypervisor.uri, hypervisor.pool_name)

    def pick(self) -> Hypervisor:
        """The hypervisor of the next machine (round-robin)."""
        return self.hypervisors[next(self._next) % len(self.hypervisors)]

    def private_network(self) -> PrivateNetwork:
        """The same segment as QEMU's (an L2 hub in this process, which each domain's QEMU connects to), so
        it needs hypervisors on this host."""
        self._refuse_remote("a private network")
        return HubNetwork()

    def _refuse_remote(self, what: str) -> None:
        remote = [h.uri for h in self.hypervisors if not h.address.local]
        if remote:
            raise ConfigError(
                f"{what} is an L2 hub in the test process, which machines on the remote hypervisor "
                f"{remote[0]} cannot reach; use hypervisors on this host for such tests"
            )

    def nic_segment(self, number: int) -> NicSegment:
        """The same segments as QEMU's extra NICs (an L2 hub in this process), so also on this host only."""
        self._refuse_remote("an extra NIC's segment")
        return HubSegment(number)

    # -- boot --------------------------------------------------------------------------------------------

    def _boot(self, spec: MachineSpec) -> LibvirtMachine:
        if not spec.image.is_file():
            raise ConfigError(f"machine {spec.name}: image {spec.image} does not exist")
        spec.workdir.mkdir(parents=True, exist_ok=True)
        hypervisor = self.pick()
        if (spec.private_net is not None or spec.extra_nics) and not hypervisor.address.local:
            raise ConfigError(
                f"machine {spec.name}: a private network or extra NICs need a hypervisor on this host, "
                f"not {hypervisor.uri}"
            )
        libvirt = _libvirt()
        name = domain_name(self.ctx.run_id, spec.name)
        conn, pool = hypervisor.conn, hypervisor.pool
        image = inspect_image(spec.image)
        base = base_volume(conn, pool, hypervisor.uri, image)
        owner = OwnerRecord(
            run_id=self.ctx.run_id,
            machine=spec.name,
            owner_pid=os.getpid(),
            owner_host=self._host,
            owner_start=self._owner_start,
            created=time.time(),
            test=spec.test_id,
        )
        firmware = _firmware(spec.firmware)
        overlay_name, ignition_name, console_name = volume_names(name)
        # The domain is defined first: from then on its metadata records who owns the volumes made next.
        files = _predicted_files(pool, name, len(spec.extra_disks_mib))
        xml = domain_xml(spec, name=name, accel=self.ctx.accel, firmware=firmware, files=files, owner=owner)
        try:
            domain = conn.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise PlatformError(f"cannot define domain {name} on {hypervisor.uri}: {exc}") from exc
        try:
            overlay = create_overlay(pool, overlay_name, base, image)
            ignition = create_raw(conn, pool, ignition_name, spec.ignition.text.encode())
            console = create_raw(conn, pool, console_name, b"")
            disks = [
                create_blank(pool, disk_volume_name(name, index), size_mib)
                for index, size_mib in enumerate(spec.extra_disks_mib, start=1)
            ]
            actual = DomainFiles(
                Path(overlay.path()),
                Path(ignition.path()),
                Path(console.path()),
                tuple(Path(disk.path()) for disk in disks),
            )
            if actual != files:  # a pool type that names files its own way
                xml = domain_xml(spec, name=name, accel=self.ctx.accel, firmware=firmware, files=actual,
                                 owner=owner)  # fmt: skip
                domain = conn.defineXML(xml)
            (spec.workdir / "libvirt-domain.xml").write_text(xml)
            log.info("%s: starting domain %s on %s (%s, %s, %d MiB, %d vCPU)", spec.name, name, hypervisor.uri,
                     self.ctx.accel.name, spec.firmware, spec.memory_mib, spec.cpus)  # fmt: skip
            try:
                domain.create()
            except libvirt.libvirtError as exc:
                raise BootError(f"domain {name} did not start on {hypervisor.uri}: {exc}") from exc
            port = _ssh_port(domain, PORT_TIMEOUT)
        except BaseException:
            remove_domain(hypervisor.pool, domain, name, hypervisor.uri)
            raise
        machine = LibvirtMachine(
            spec, hypervisor=hypervisor, domain=domain, domain_name=name, ssh_port=port, xml=xml
        )
        log.info(
            "%s: domain %s on %s, SSH forwarded from %s:%d",
            spec.name,
            name,
            hypervisor.uri,
            hypervisor.where(),
            port,
        )
        return machine

    def _destroy(self, machine: Machine) -> None:
        if not isinstance(machine, LibvirtMachine):
            raise PlatformError(f"{machine!r} was not booted by the libvirt platform")
        try:
            machine.kill()
        finally:
            machine.sync_console(machine.spec.workdir / "console.txt")
            remove_domain(machine.hypervisor.pool, machine.domain, machine.domain_name, machine.uri)

    def close(self) -> None:
        try:
            super().close()
        finally:
            for hypervisor in self.hypervisors:
                hypervisor.close()


def _remote_uris(options: Mapping[str, Any]) -> list[str]:
    """The `--libvirt-uri`s of hypervisors on other hosts (a malformed one is left to `validate`)."""
    remote = []
    for uri in options.get("libvirt_uri") or [DEFAULT_URI]:
        try:
            if not parse_uri(str(uri)).local:
                remote.append(str(uri))
        except ConfigError:
            continue
    return remote


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


def _firmware(kind: str) -> LibvirtFirmware:
    if kind == "uefi":
        return LibvirtFirmware("uefi", OVMF_CODE, OVMF_VARS)
    if kind == "bios":
        return LibvirtFirmware("bios")
    raise ConfigError(f"unknown firmware {kind!r}: choose one of {', '.join(FIRMWARE_CHOICES)}")


def _predicted_files(pool: Any, name: str, disks: int = 0) -> DomainFiles:
    """Where a directory-like pool will put the volumes of domain `name` (with `disks` extra disks)."""
    directory = pool_directory(pool) or Path("/nonexistent")
    overlay, ignition, console = volume_names(name)
    extra = tuple(directory / disk_volume_name(name, index) for index in range(1, disks + 1))
    return DomainFiles(directory / overlay, directory / ignition, directory / console, extra)


def _ssh_port(domain: Any, timeout: float) -> int:
    """The host port QEMU bound for the SSH forward, asked over the monitor (`info usernet`)."""
    libvirt = _libvirt()
    libvirt_qemu = importlib.import_module("libvirt_qemu")
    deadline = time.monotonic() + timeout
    while True:
        try:
            usernet = libvirt_qemu.qemuMonitorCommand(
                domain, "info usernet", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
            )
            return forwarded_port(str(usernet))
        except (libvirt.libvirtError, PlatformError) as exc:
            if not domain.isActive():
                raise BootError(
                    f"domain {domain.name()} stopped before its SSH port was known: {exc}"
                ) from exc
            if time.monotonic() > deadline:
                raise BootError(
                    f"the SSH port of domain {domain.name()} is unknown after {timeout:.0f} s: {exc}"
                ) from exc
            time.sleep(0.2)
