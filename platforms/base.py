"""The two small interfaces every platform implements.

`Platform` is session-scoped: it owns every resource it creates, tags it with the run id and deletes it in
`close()` (also after Ctrl-C or a timeout). `Machine` is one booted instance as the platform sees it: where to
reach its SSH, where its console goes, and how to power it. The guest API tests use lives in
`harness.machine`, on top of this.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.acceleration import Acceleration, Timeouts, detect
from harness.errors import ConfigError, PlatformError

log = logging.getLogger(__name__)

# Optional capabilities a test can require with @pytest.mark.requires("..."). A platform declares the ones its
# machines have in one place, `Platform.machine_capabilities`; its machines get them when booted.
CAP_HARD_RESET = "hard-reset"
"""`Machine.reset()`: the power is cut and the machine starts again at once (a warm reset)."""
CAP_POWER_CYCLE = "power-cycle"
"""`Machine.power_cycle()`: a cold boot on the same disks and firmware variables."""
CAP_SNAPSHOT = "snapshot"
"""The machine's state can be saved and restored (QEMU's savevm/loadvm)."""
CAP_PRIVATE_NETWORK = "private-network"
"""Machines booted together share a network on which `GuestMachine.private_address` reaches each other."""
CAP_HOST_SERVICES = "host-services"
"""A service the tests start on the host (the Omaha server) is reachable from the guest."""
CAP_BOOT_HOST_SERVICES = "boot-host-services"
"""A service on the host's 127.0.0.1 is reachable from the guest from its first boot on, Ignition in the
initramfs included, at `Platform.boot_host_address` (remote Ignition configs and files)."""
FIRSTBOOT_WAITING = "railyard: first-boot checkpoint: waiting before Ignition"
"""What the default image's initramfs prints when it waits for a first-boot checkpoint to be saved."""
FIRMWARE_CHOICES = ("uefi", "bios")
"""The firmware a machine boots with (`MachineSpec.firmware`, `--firmware`)."""
CAPABILITIES = frozenset(
    {
        CAP_HARD_RESET,
        CAP_POWER_CYCLE,
        CAP_SNAPSHOT,
        CAP_PRIVATE_NETWORK,
        CAP_HOST_SERVICES,
        CAP_BOOT_HOST_SERVICES,
    }
)
MIN_MEMORY_MIB = 128
"""The least guest memory a machine may have."""

# Machine options a test asks for with markers of the same names (see harness.machine_options). A platform
# declares the ones its machines honour in `Platform.machine_options`; a test asking for another is skipped.
OPTION_DISKS = "disks"
"""`MachineSpec.extra_disks_mib`: extra blank disks."""
OPTION_NICS = "nics"
"""`MachineSpec.extra_nics`: extra NICs."""
OPTION_MEMORY = "memory"
"""`MachineSpec.memory_mib` set by the test, not the run."""
OPTION_FIRMWARE = "firmware"
"""`MachineSpec.firmware` set by the test, not the run or the image."""
OPTION_KARGS = "kargs"
"""`MachineSpec.kernel_args`: extra kernel arguments from the first boot on."""
MACHINE_OPTIONS = frozenset({OPTION_DISKS, OPTION_NICS, OPTION_MEMORY, OPTION_FIRMWARE, OPTION_KARGS})

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
class SSHEndpoint:
    host: str
    port: int
    user: str


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


class NicSegment(ABC):
    """The segment the extra NICs of one number of one test's machines are on, made by
    `Platform.nic_segment()` and closed by whoever made it once its machines are gone."""

    @abstractmethod
    def attach(self, name: str) -> ExtraNic:
        """The NIC machine `name` gets on this segment (one of its `MachineSpec.extra_nics`)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the segment holds (a relay, a socket). Idempotent."""


class PrivateNetwork:
    """The network the machines of one request (`cluster(n)`) share, made by `Platform.private_network()`
    and closed by whoever made it once its machines are gone.

    This base class is the network a cloud's machines are already on (the run's subnet): a machine joins it
    with no NIC of its own, and its `Machine.private_address` is the address the cloud gave it. Local
    platforms return a segment of their own whose `join` gives each machine a second NIC.
    """

    def join(self, name: str) -> PrivateNet | None:
        """The NIC machine `name` gets on this network (its `MachineSpec.private_net`); None when the
        machine's own network is the shared one."""
        return None

    def close(self) -> None:
        """Release what the network holds (a relay, a socket). Idempotent."""


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


@dataclass(frozen=True)
class PlatformContext:
    """What a platform gets from the run: its id, where artifacts go, acceleration and options."""

    run_id: str
    output_dir: Path
    accel: Acceleration
    timeouts: Timeouts
    options: Mapping[str, Any]


@dataclass(frozen=True)
class GarbageRequest:
    """What `railyard gc` asks a platform to delete: leftovers of runs that did not clean up."""

    options: Mapping[str, Any]
    """The platform's own options (as `add_options` declared them), e.g. a region or a libvirt URI."""
    older_than: float | None
    """Only what was created at least this many seconds ago (None: the platform's own rule)."""
    output_root: Path
    """Where runs put their artifacts and local runtime files (`_railyard` by default)."""
    dry_run: bool = False
    """Report what would be deleted, delete nothing."""


@dataclass(frozen=True)
class UploadRequest:
    """What `railyard image upload` asks a platform to do: make a bootable image from a local disk file."""

    options: Mapping[str, Any]
    image: Path
    """A local disk image (qcow2 or raw); the platform converts it to the format it needs."""
    name: str
    """The name to register the image under (unique per platform account)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Tags to put on the image (os id, version, channel...)."""


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
        return f"ssh -p {ep.port} {ep.user}@{ep.host}"

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
        machine.capabilities = self.machine_capabilities
        with self._lock:
            self._machines.append(machine)
        return machine

    def _restore(self, spec: MachineSpec, directory: Path) -> Machine:
        raise PlatformError(f"platform {self.name!r} has no checkpoints")

    def boot(self, spec: MachineSpec) -> Machine:
        """Start a machine; returns once it is started (not yet reachable). Registered for cleanup."""
        machine = self._boot(spec)
        machine.capabilities = self.machine_capabilities
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
