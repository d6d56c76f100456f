"""The two small interfaces every platform implements.

`Platform` is session-scoped: it owns every resource it creates, tags it with the run id and deletes it in
`close()` (also after Ctrl-C or a timeout). `Machine` is one booted instance as the platform sees it: where to
reach its SSH, where its console goes, and how to power it. The guest API tests use lives in
`harness.machine`, on top of this. What they exchange lives beside them and is importable from here too:
capabilities and machine options (`platforms.capabilities`), machine specs (`platforms.machine_spec`),
networks (`platforms.networks`), a platform's context and requests (`platforms.context`).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.acceleration import Acceleration, Timeouts, detect
from harness.errors import ConfigError, PlatformError
from platforms.capabilities import (
    CAP_BOOT_HOST_SERVICES,
    CAP_HARD_RESET,
    CAP_HOST_SERVICES,
    CAP_POWER_CYCLE,
    CAP_PRIVATE_NETWORK,
    CAP_SNAPSHOT,
    CAPABILITIES,
    MACHINE_OPTIONS,
    OPTION_DISKS,
    OPTION_FIRMWARE,
    OPTION_KARGS,
    OPTION_MEMORY,
    OPTION_NICS,
)
from platforms.context import GarbageRequest, PlatformContext, UploadRequest

if TYPE_CHECKING:
    from harness.ssh_jump import SSHJump
from platforms.machine_spec import (
    DISK_SERIAL_PREFIX,
    FIRMWARE_CHOICES,
    FIRSTBOOT_WAITING,
    MIN_MEMORY_MIB,
    SMBIOS_BOOT_CMDLINE,
    SMBIOS_STUB_CMDLINE,
    ExtraNic,
    FirstBootConfig,
    MachineSpec,
    PrivateNet,
    disk_serial,
    kernel_args_smbios_strings,
)
from platforms.networks import NicSegment, PrivateNetwork

__all__ = [
    "CAPABILITIES",
    "CAP_BOOT_HOST_SERVICES",
    "CAP_HARD_RESET",
    "CAP_HOST_SERVICES",
    "CAP_POWER_CYCLE",
    "CAP_PRIVATE_NETWORK",
    "CAP_SNAPSHOT",
    "DISK_SERIAL_PREFIX",
    "FIRMWARE_CHOICES",
    "FIRSTBOOT_WAITING",
    "MACHINE_OPTIONS",
    "MIN_MEMORY_MIB",
    "OPTION_DISKS",
    "OPTION_FIRMWARE",
    "OPTION_KARGS",
    "OPTION_MEMORY",
    "OPTION_NICS",
    "SMBIOS_BOOT_CMDLINE",
    "SMBIOS_STUB_CMDLINE",
    "ExtraNic",
    "FirstBootConfig",
    "GarbageRequest",
    "Machine",
    "MachineSpec",
    "NicSegment",
    "Platform",
    "PlatformContext",
    "PrivateNet",
    "PrivateNetwork",
    "SSHEndpoint",
    "UploadRequest",
    "disk_serial",
    "kernel_args_smbios_strings",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SSHEndpoint:
    """Where the harness logs in to a machine: `host:port` from this host, or as `via` (an SSH jump, e.g. a
    remote hypervisor whose loopback the port is forwarded from) sees it."""

    host: str
    port: int
    user: str
    via: SSHJump | None = None


class Machine(ABC):
    """One instance booted by a platform."""

    live_console: ClassVar[bool] = False
    """Whether `console_path` grows as the guest prints (a serial port logged on this host), so that the
    harness may wait for what it shows (e.g. the kernel's restart line at the end of a reboot's shutdown)."""

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        self.capabilities: frozenset[str] = frozenset()
        """What this machine can do (CAP_*): its platform's `machine_capabilities`, set by `Platform.boot`."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    @abstractmethod
    def ssh_endpoint(self) -> SSHEndpoint:
        """Where SSH of this machine is reachable from the host running the tests."""

    @property
    def console_path(self) -> Path:
        """The serial console log, appended to across reboots."""
        return self.spec.workdir / "console.txt"

    @property
    def private_address(self) -> str | None:
        """The address the other machines of its private network reach this one at: the static address of
        its private NIC here; a cloud's machines override this with the address the cloud gave them."""
        net = self.spec.private_net
        return net.address.split("/")[0] if net is not None else None

    @abstractmethod
    def is_running(self) -> bool: ...

    @abstractmethod
    def reset(self) -> None:
        """Hard reset: the power is cut and the machine starts again at once."""

    def power_cycle(self) -> None:
        """Stop the machine's hypervisor process and start a new one on the same disks and firmware
        variables: a cold boot, where `reset` is a warm one. Only with CAP_POWER_CYCLE."""
        raise PlatformError(f"{self.name}: this platform cannot power-cycle a machine")

    def save_snapshot(self, tag: str, timeout: float = 120.0) -> None:
        """Save the machine's whole state (disks, memory, devices) as `tag`. Only with CAP_SNAPSHOT."""
        raise PlatformError(f"{self.name}: this platform cannot snapshot a machine")

    def load_snapshot(self, tag: str, timeout: float = 120.0) -> None:
        """Return the running machine to the state saved as `tag`. Only with CAP_SNAPSHOT."""
        raise PlatformError(f"{self.name}: this platform cannot restore a machine's snapshot")

    @abstractmethod
    def poweroff(self, timeout: float) -> None:
        """Ask the guest to power off; force it off after `timeout` seconds."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the machine at once, without asking the guest. Idempotent."""

    def access_hint(self) -> str:
        """How a person reaches this machine by hand (printed by --keep-on-failure)."""
        ep = self.ssh_endpoint
        jump = f"{shlex.join(ep.via.address.ssh_options())} " if ep.via is not None else ""
        return f"ssh {jump}-p {ep.port} {ep.user}@{ep.host}"

    def artifacts(self) -> Mapping[str, str]:
        """Extra files (name -> text) worth keeping with the test's artifacts, e.g. the command line."""
        return {}

    def disk_path(self) -> Path | None:
        """The machine's own writable disk as a file on this host (an overlay of the image), which the
        harness reads after the machine stops (its journal, when SSH never came); None where the disk is not
        on this host."""
        return None

    def diagnose(self) -> str:
        """What the hypervisor can tell about a machine that seems stuck (run state, CPU registers)."""
        return ""


class Platform(ABC):
    """A place machines boot. Owns and cleans up every resource it creates."""

    name: ClassVar[str]
    max_cluster_size: ClassVar[int] = 8
    # Whether machines of this platform share the host's cores (and so need boot admission).
    local: ClassVar[bool] = False
    # Whether machines boot a local disk image (the default image is built for them when no --image is given).
    # Cloud platforms boot an image registered with the cloud and leave MachineSpec.image unused.
    uses_local_image: ClassVar[bool] = True
    # Capabilities every machine of this platform has (see CAP_*), for @pytest.mark.requires: the one place
    # a platform says what its machines can do.
    machine_capabilities: ClassVar[frozenset[str]] = frozenset()
    boot_host_address: ClassVar[str | None] = None
    """Where a guest reaches the host's 127.0.0.1 from its first boot on (CAP_BOOT_HOST_SERVICES), e.g. QEMU's
    user network's 10.0.2.2; None where it cannot."""

    # Machine options (OPTION_*, markers of the same names) this platform's machines honour.
    machine_options: ClassVar[frozenset[str]] = frozenset()

    @classmethod  # noqa: B027
    def check_shape(cls, given: list[str]) -> None:
        """Refuse shape options (`--cpus`, `--memory`, `--firmware`: `given`) this platform cannot honour,
        with a ConfigError that says what to use instead. Local platforms honour them all."""

    @classmethod
    def machine_option_refusal(cls, option: str) -> str | None:
        """Why this platform's machines cannot have machine option `option` (OPTION_*), for the skip reason
        of a test that asks for it; None when they can."""
        if option in cls.machine_options:
            return None
        return f"@pytest.mark.{option}: {cls.name} machines cannot have it"

    @classmethod
    def run_capabilities(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The capabilities of this platform's machines in a run with these options: `machine_capabilities`,
        less what the options take away (a remote libvirt hypervisor has no private network)."""
        return cls.machine_capabilities

    @classmethod
    def run_option_refusal(cls, options: Mapping[str, Any], option: str) -> str | None:
        """`machine_option_refusal` in a run with these options."""
        return cls.machine_option_refusal(option)

    @classmethod
    def acceleration(cls, requested: str) -> Acceleration:
        """How this platform's machines are accelerated. Local platforms detect KVM/TCG on this host
        (`requested` is --qemu-accel); a cloud's machines do not run here, so it overrides this."""
        return detect(requested)

    @classmethod
    def default_timeouts(cls, accel: Acceleration, boot: float | None) -> Timeouts:
        """This platform's waits: scaled by acceleration here, fixed by a cloud. `boot` is --boot-timeout."""
        return Timeouts.for_acceleration(accel, boot=boot)

    def __init__(self, ctx: PlatformContext) -> None:
        self.ctx = ctx
        self._machines: list[Machine] = []
        self._lock = threading.Lock()

    @classmethod  # noqa: B027
    def add_options(cls, group: argparse._ArgumentGroup | Any) -> None:
        """Register platform-specific command-line options (the pytest `railyard` group)."""

    @classmethod
    def collect_garbage(cls, request: GarbageRequest) -> list[str]:
        """Delete what earlier runs leaked (found by their run tag), returning a line per thing deleted."""
        raise ConfigError(f"platform {cls.name!r} has nothing to collect")

    @classmethod
    def collect_leftovers(cls, request: GarbageRequest) -> list[str]:
        """At the end of a run, in its main process: delete what the run's own processes left when they were
        killed (an xdist worker ended by SIGKILL cannot clean up). Local platforms find such machines by
        their dead owner; a cloud's leftovers wait for `railyard gc`. Returns a line per thing deleted."""
        return []

    @classmethod
    def upload_image(cls, request: UploadRequest) -> str:
        """Upload a local disk image and register it; returns the platform's id of the new image."""
        raise ConfigError(f"platform {cls.name!r} cannot upload images")

    def private_network(self) -> PrivateNetwork:
        """A network for machines booted together (`cluster(n)`); only with CAP_PRIVATE_NETWORK."""
        if CAP_PRIVATE_NETWORK not in self.machine_capabilities:
            raise ConfigError(f"platform {self.name!r} gives its machines no private network")
        return PrivateNetwork()

    def nic_segment(self, number: int) -> NicSegment:
        """The segment of the extra NICs number `number` of one test's machines; only with OPTION_NICS."""
        raise ConfigError(f"platform {self.name!r} gives its machines no extra NICs")

    def validate(self) -> None:  # noqa: B027
        """Check options and host requirements before anything boots; raise ConfigError if unusable."""

    # -- booted checkpoints (the warm pool) -------------------------------------------------------------
    # A platform that can freeze a booted machine and start clones of it declares `checkpoints = True` and
    # implements the three methods below; the harness (harness.warm) decides when to use them.

    checkpoints: ClassVar[bool] = False

    def checkpoint_signature(self, spec: MachineSpec) -> str:
        """Everything of `spec` and of this host that a restored machine depends on, besides the Ignition
        config (which the harness adds): image identity, hypervisor version, machine shape, firmware,
        devices. Two specs with the same signature can share a checkpoint. Only with `checkpoints`."""
        raise PlatformError(f"platform {self.name!r} has no checkpoints")

    def save_checkpoint(self, machine: Machine, directory: Path) -> None:
        """Freeze `machine` into the empty `directory` (its disks and its memory and device state) and let
        it run on. Nobody may be connected to the machine while it is saved. Only with `checkpoints`."""
        raise PlatformError(f"platform {self.name!r} has no checkpoints")

    def restore(self, spec: MachineSpec, directory: Path) -> Machine:
        """Start a machine from the checkpoint in `directory`, running where the frozen one stopped, with a
        disk of its own (its writes never reach the checkpoint), its own console and SSH port. Registered
        for cleanup like `boot`. Raises CheckpointError when the checkpoint cannot be used."""
        machine = self._restore(spec, directory)
        machine.capabilities = self.run_capabilities(self.ctx.options)
        with self._lock:
            self._machines.append(machine)
        return machine

    def _restore(self, spec: MachineSpec, directory: Path) -> Machine:
        raise PlatformError(f"platform {self.name!r} has no checkpoints")

    def boot(self, spec: MachineSpec) -> Machine:
        """Start a machine; returns once it is started (not yet reachable). Registered for cleanup."""
        machine = self._boot(spec)
        machine.capabilities = self.run_capabilities(self.ctx.options)
        with self._lock:
            self._machines.append(machine)
        return machine

    @abstractmethod
    def _boot(self, spec: MachineSpec) -> Machine: ...

    def destroy(self, machine: Machine) -> None:
        """Stop a machine and delete what the platform created for it. Idempotent."""
        try:
            self._destroy(machine)
        finally:
            with self._lock:
                if machine in self._machines:
                    self._machines.remove(machine)

    @abstractmethod
    def _destroy(self, machine: Machine) -> None: ...

    def release(self, machine: Machine) -> None:
        """Stop tracking a machine without stopping it, so that `close()` leaves it running (a machine kept
        for a person to inspect). Whoever releases it owns its cleanup from then on."""
        with self._lock:
            if machine in self._machines:
                self._machines.remove(machine)

    @property
    def machines(self) -> list[Machine]:
        with self._lock:
            return list(self._machines)

    def close(self) -> None:
        """Destroy every machine still alive. Safe to call more than once.

        Tries every machine, then raises PlatformError naming each one whose cleanup failed and why (what
        may be left behind), so that a leak is an error, not only a log line.
        """
        failures: list[str] = []
        for machine in reversed(self.machines):
            try:
                self.destroy(machine)
            except Exception as exc:
                log.exception("cleanup of %s failed", machine.name)
                failures.append(f"{machine.name}: {exc}")
        if failures:
            raise PlatformError(
                f"{self.name}: cleanup failed and may have left behind: {'; '.join(failures)} "
                f"(`railyard gc --platform={self.name}` removes leftovers)"
            )
