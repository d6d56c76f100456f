"""One run of the boot benchmark on a real machine: a first boot with Ignition, one or more reboots, and the
restore of a checkpoint of the booted machine; each boot measured to an SSH login and split into phases."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.boot_phases import (
    AnalyzeTimes,
    BootRecord,
    ChainLink,
    Phases,
    boot_phases,
    console_marks,
    lines_between,
    parse_analyze,
    parse_blame,
    parse_critical_chain,
    parse_unit_jobs,
    plain,
    qmp_reset,
)
from bench.console_tail import ConsoleTail
from harness.acceleration import Acceleration, Timeouts
from harness.distros import get_distro
from harness.ignition import IgnitionConfig
from harness.machine import GuestMachine
from harness.ssh import generate_keypair
from harness.starts import make_firstboot_checkpoint
from images.build import ensure_image
from images.metadata import FEATURE_FIRSTBOOT_CHECKPOINT, FEATURE_SSH_READY_LINE, read_metadata
from platforms.base import FirstBootConfig, Machine, MachineSpec, PlatformContext
from platforms.qemu import QemuPlatform

log = logging.getLogger(__name__)

JOURNAL_JOBS = "sudo journalctl -b 0 -o json --output-fields=UNIT,JOB_TYPE,JOB_RESULT --no-pager _PID=1"
PREVIOUS_JOURNAL = "sudo journalctl -b -1 -o short-monotonic --no-pager"


@dataclass
class BootMeasure:
    """One boot to an SSH login: its wall time, its phases and what the guest said about it."""

    seconds: float
    phases: Phases
    analyze: AnalyzeTimes | None
    blame: list[tuple[str, float]]
    chain: list[ChainLink]
    shutdown_console: list[tuple[float, str]] = field(default_factory=list)
    """For a reboot: the console lines from the request to the restart, seconds after the request."""
    marks: dict[str, float | None] = field(default_factory=dict)
    """Instants seen on the host, in seconds after the start (the request of a reboot)."""


@dataclass
class RunResult:
    first: BootMeasure
    reboots: list[BootMeasure]
    restore_s: float | None
    firstboot_restore_s: float | None = None
    """A restore of the image's first-boot checkpoint with a config of its own, to an SSH login."""


def parse_uptime(text: str) -> float:
    """Seconds since the guest's kernel started, from `/proc/uptime`."""
    return float(text.split()[0])


def machine_reset(vm: Machine, after: float) -> float | None:
    """When QEMU reset the machine (its QMP `RESET` event) at or after `after`, on the host's monotonic clock;
    None on a platform without QMP or when no reset was reported. The events are read, not taken."""
    qmp = getattr(vm, "qmp", None)
    if qmp is None:
        return None
    try:
        events = qmp.events(clear=False)
    except Exception as error:  # a diagnostic read: the measurement goes on without it
        log.warning("%s: QMP events not readable: %s", vm.name, error)
        return None
    return qmp_reset(events, after, time.time() - time.monotonic())


BENCH_CPUS = 2
"""The vCPUs of the bench's machines unless told otherwise (the README's tables were measured with two)."""


class BootBench:
    """Boots the default image on QEMU, once per `run()`, and takes it apart; `close()` ends everything."""

    def __init__(
        self, accel: Acceleration, workdir: Path, artifacts: Path | None = None, cpus: int = BENCH_CPUS
    ) -> None:
        self.accel = accel
        self.cpus = cpus
        """The machines' vCPUs (a test's machine has `harness.shape.cpus`: one under TCG)."""
        self.workdir = workdir
        self.artifacts = artifacts
        self.timeouts = Timeouts.for_acceleration(accel)
        self.image = ensure_image().path
        metadata = read_metadata(self.image)
        self.features: tuple[str, ...] = metadata.features if metadata is not None else ()
        self.distro = get_distro("railyard")
        self.keys = generate_keypair(workdir)
        self.ignition = FirstBootConfig.render(
            IgnitionConfig().add_user("core", ssh_keys=[self.keys.public_line], groups=["sudo"]).to_dict()
        )
        self.platform = QemuPlatform(PlatformContext("bench", workdir, accel, self.timeouts, {}))
        self.platform.validate()
        self._firstboot: Path | None = None
        """The image's first-boot checkpoint, made by the first run that measures a first-boot restore."""

    def close(self) -> None:
        self.platform.close()

    @property
    def restore_supported(self) -> bool:
        """Whether the platform can save and restore checkpoints (`save_checkpoint`, `restore`)."""
        return bool(getattr(self.platform, "checkpoints", False)) and all(
            callable(getattr(self.platform, name, None)) for name in ("save_checkpoint", "restore")
        )

    @property
    def firstboot_supported(self) -> bool:
        """Whether the image can wait for a first-boot checkpoint before Ignition (and the platform save it)."""
        return self.restore_supported and FEATURE_FIRSTBOOT_CHECKPOINT in self.features

    def _spec(self, name: str, ignition: FirstBootConfig | None = None) -> MachineSpec:
        workdir = self.workdir / f"{name}-{time.monotonic_ns()}"
        workdir.mkdir(parents=True)
        return MachineSpec(
            name=name, image=self.image, ignition=ignition or self.ignition,
            ignition_fw_cfg=self.distro.ignition_fw_cfg, workdir=workdir, cpus=self.cpus,
        )  # fmt: skip

    def _guest(self, vm: Machine) -> GuestMachine:
        return GuestMachine(
            vm, pkey=self.keys.pkey, timeouts=self.timeouts, distro=self.distro, channel="stable",
            ready_line=FEATURE_SSH_READY_LINE in self.features,
        )  # fmt: skip

    def run(self, index: int, reboots: int = 1) -> RunResult:
        """A first boot, `reboots` reboots, then (where the platform can) a restore of the booted machine."""
        start = time.monotonic()
        vm = self.platform.boot(self._spec(f"bench{index}"))
        measured: list[BootMeasure] = []
        with ConsoleTail(vm.console_path) as tail:
            guest = self._guest(vm)
            guest.wait_for_ssh(booting=True)
            login = time.monotonic()
            first = self._measure(guest, tail, start, login, since=0, reboot=False)
            self._keep(index, "first-boot", guest)
            for number in range(1, reboots + 1):
                mark, noted = tail.count(), len(guest.notes)
                request = time.monotonic()
                guest.reboot()
                login = time.monotonic()
                boot = self._measure(guest, tail, request, login, since=mark, reboot=True)
                # What the harness did meanwhile (e.g. power-cycled a restart that stayed silent).
                boot.phases.notes += [f"harness: {note}" for note in guest.notes[noted:]]
                measured.append(boot)
                self._keep(index, f"reboot{number}", guest, previous=True)
            self._keep_console(index, tail, start)
        restore_s = self._restore(vm, guest) if self.restore_supported else None
        self.platform.destroy(vm)
        firstboot_s = self._firstboot_restore(index) if self.firstboot_supported else None
        return RunResult(first, measured, restore_s, firstboot_s)

    def _measure(
        self, guest: GuestMachine, tail: ConsoleTail, start: float, login: float, since: int, reboot: bool
    ) -> BootMeasure:
        before = time.monotonic()
        uptime = parse_uptime(guest.succeed("cat /proc/uptime"))
        offset = (before + time.monotonic()) / 2 - uptime
        guest.settle()
        analyze_text = guest.execute("systemd-analyze").stdout
        try:
            analyze: AnalyzeTimes | None = parse_analyze(analyze_text)
        except ValueError as error:
            log.warning("%s", error)
            analyze = None
        # Device units' times say when udev announced a device, not what it cost: leave them out.
        blame_text = guest.execute("systemd-analyze blame --no-pager").stdout
        blame = [item for item in parse_blame(blame_text, top=1000) if not item[0].endswith(".device")][:8]
        chain = parse_critical_chain(guest.execute("systemd-analyze critical-chain --no-pager").stdout)
        units = parse_unit_jobs(guest.succeed(JOURNAL_JOBS))
        lines = tail.lines(since)
        marks = console_marks(lines)
        reset = machine_reset(guest.vm, start) if reboot else None
        record = BootRecord(start, login, offset, marks, analyze, units, reboot, reset)
        shutdown = lines_between(lines, start, marks.restart) if reboot else []
        seen = {
            "restart line": marks.restart,
            "QEMU reset": reset,
            "boot loader started": marks.loader,
            "kernel clock zero": offset,
        }
        relative = {name: None if at is None else round(at - start, 3) for name, at in seen.items()}
        return BootMeasure(login - start, boot_phases(record), analyze, blame, chain, shutdown, relative)

    def _keep(self, index: int, what: str, guest: GuestMachine, previous: bool = False) -> None:
        """With --artifacts: the guest's view of the boot (and the journal of the boot before it)."""
        if self.artifacts is None:
            return
        folder = self.artifacts / f"run{index}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, command in [
            ("analyze", "systemd-analyze; systemd-analyze blame --no-pager; "
                        "systemd-analyze critical-chain --no-pager"),
            ("journal", "sudo journalctl -b 0 -o short-monotonic --no-pager"),
            *([("previous-journal", PREVIOUS_JOURNAL)] if previous else []),
        ]:  # fmt: skip
            (folder / f"{what}-{name}.txt").write_text(guest.execute(command).stdout)

    def _keep_console(self, index: int, tail: ConsoleTail, start: float) -> None:
        """With --artifacts: the console with each line's host time, in seconds after QEMU started."""
        if self.artifacts is None:
            return
        folder = self.artifacts / f"run{index}"
        folder.mkdir(parents=True, exist_ok=True)
        stamped = "".join(f"{line.at - start:8.2f}  {plain(line.text)}\n" for line in tail.lines())
        (folder / "console.txt").write_text(stamped)

    def _restore(self, vm: Machine, guest: GuestMachine) -> float:
        """Save a checkpoint of the booted `vm`, stop it, restore a new machine from it: seconds from the
        restore call to an SSH login on the new machine."""
        save = cast(Callable[[Machine, Path], None], getattr(self.platform, "save_checkpoint"))  # noqa: B009
        restore = cast(Callable[[MachineSpec, Path], Any], getattr(self.platform, "restore"))  # noqa: B009
        guest.close()
        with tempfile.TemporaryDirectory(prefix="checkpoint-", dir=self.workdir) as directory:
            save(vm, Path(directory))
            self.platform.destroy(vm)  # one machine at a time on this host
            start = time.monotonic()
            clone = cast(Machine, restore(self._spec("restored"), Path(directory)))
            try:
                restored = self._guest(clone)
                restored.wait_for_ssh()
                seconds = time.monotonic() - start
                sync_clock = getattr(restored, "sync_clock", None)
                if callable(sync_clock):
                    sync_clock()
                restored.close()
            finally:
                self.platform.destroy(clone)
        return seconds

    def _firstboot_checkpoint(self) -> Path:
        """The image's first-boot checkpoint (harness.starts), made once, by the first run that needs it."""
        if self._firstboot is None:
            directory = self.workdir / "firstboot-checkpoint"
            directory.mkdir()
            make_firstboot_checkpoint(self.platform, self._spec("bench"), directory, self.timeouts.boot)
            self._firstboot = directory
        return self._firstboot

    def _firstboot_restore(self, index: int) -> float:
        """Restore the first-boot checkpoint with a config of this run's own: seconds from the restore call to
        an SSH login. The config writes a file the maker's config did not; reading it back proves that
        Ignition ran with the restored machine's config."""
        checkpoint = self._firstboot_checkpoint()
        token = f"bench run {index} {time.time_ns()}\n"
        config = FirstBootConfig.render(
            IgnitionConfig()
            .add_user("core", ssh_keys=[self.keys.public_line], groups=["sudo"])
            .add_file("/etc/railyard-bench", token)
            .to_dict()
        )
        start = time.monotonic()
        clone = self.platform.restore(self._spec(f"firstboot{index}", ignition=config), checkpoint)
        try:
            restored = self._guest(clone)
            restored.wait_for_ssh(booting=True)
            seconds = time.monotonic() - start
            written = restored.succeed("cat /etc/railyard-bench")
            if written != token:
                raise RuntimeError(
                    f"the restored machine read another config: /etc/railyard-bench = {written!r}"
                )
            restored.close()
        finally:
            self.platform.destroy(clone)
        return seconds
