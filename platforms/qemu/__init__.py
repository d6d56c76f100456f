"""The local QEMU platform: one QEMU process per machine, controlled over QMP.

The command line comes from the pure `qemu_command` (platforms.qemu.command). Disposable runtime files (overlay
disk, UEFI vars, QMP socket, pidfiles) live in `spec.workdir/runtime-*/`, which destroy removes (and `railyard
gc` after a crash); the console log, the Ignition config, QEMU's own log and the command line stay in
`spec.workdir`. When the workdir is too deep for a unix socket path, the QMP socket goes to a short temp dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import BootError, ConfigError, ImageError, PlatformError
from harness.qmp import QMPClient
from platforms.base import (
    CAP_BOOT_HOST_SERVICES,
    CAP_HARD_RESET,
    CAP_HOST_SERVICES,
    CAP_POWER_CYCLE,
    CAP_PRIVATE_NETWORK,
    CAP_SNAPSHOT,
    MACHINE_OPTIONS,
    GarbageRequest,
    Machine,
    MachineSpec,
    NicSegment,
    Platform,
    PlatformContext,
    PrivateNetwork,
    SSHEndpoint,
)
from platforms.qemu import checkpoint
from platforms.qemu.command import (
    OVMF_CODE,
    OVMF_VARS,
    QEMU_BINARY,
    QEMU_IMG,
    Firmware,
    QemuPaths,
    blank_disk_command,
    forwarded_port,
    overlay_command,
    qemu_command,
    socket_path_fits,
)
from platforms.qemu.l2hub import HubNetwork, HubSegment
from platforms.qemu.process import (
    RUNTIME_PREFIX,
    SOCKET_DIR_PREFIX,
    ProcessLauncher,
    gc_socket_dirs,
    gc_stale_runtime,
    remove_runtime,
    stale_runtime_dirs,
    write_owner,
)

__all__ = ["Firmware", "QemuMachine", "QemuPaths", "QemuPlatform", "gc_stale_runtime", "qemu_command"]

log = logging.getLogger(__name__)

QMP_START_TIMEOUT = 30.0
KILL_GRACE = 3.0
CHECKPOINT_TIMEOUT = 300.0

Launched = tuple[subprocess.Popen[bytes], QMPClient, int]
"""A started QEMU: its process, its connected QMP client, the host port SSH is forwarded from."""


class QemuMachine(Machine):
    live_console = True

    def __init__(
        self,
        spec: MachineSpec,
        *,
        process: subprocess.Popen[bytes],
        qmp: QMPClient,
        paths: QemuPaths,
        command: list[str],
        ssh_port: int,
        launch: Callable[[list[str], QemuPaths], Launched] | None = None,
    ) -> None:
        super().__init__(spec)
        self.process = process
        self.qmp = qmp
        self.paths = paths
        self.command = command
        self.ssh_port = ssh_port
        self._launch = launch
        self._diagnoses = 0

    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        return SSHEndpoint("127.0.0.1", self.ssh_port, self.spec.ssh_user)

    @property
    def console_path(self) -> Path:
        return self.paths.console

    def is_running(self) -> bool:
        return self.process.poll() is None

    def disk_path(self) -> Path | None:
        return self.paths.overlay if self.paths.overlay.exists() else None

    def _require_running(self, action: str) -> None:
        if not self.is_running():
            raise PlatformError(
                f"cannot {action} {self.name}: QEMU exited with status {self.process.returncode}; "
                f"see {self.paths.log} and {self.paths.console}"
            )

    def reset(self) -> None:
        self._require_running("reset")
        log.info("%s: hard reset", self.name)
        self.qmp.execute("system_reset")

    def power_cycle(self) -> None:
        """Quit QEMU and start it again with the same command: same overlay disk and UEFI variables, the
        console appended to, SSH forwarded from a new port. The guest sees a cold boot."""
        if self._launch is None:
            raise PlatformError(f"{self.name}: no launcher to start QEMU again")
        log.info("%s: power cycle (QEMU pid %d quits, a new one starts)", self.name, self.process.pid)
        self.kill()
        self.process, self.qmp, self.ssh_port = self._launch(self.command, self.paths)
        log.info(
            "%s: QEMU pid %d, SSH forwarded from 127.0.0.1:%d", self.name, self.process.pid, self.ssh_port
        )

    def poweroff(self, timeout: float) -> None:
        if not self.is_running():
            self.kill()
            return
        log.info("%s: ACPI power-off (up to %.0f s)", self.name, timeout)
        try:
            self.qmp.execute("system_powerdown")
            self.process.wait(timeout)
        except PlatformError as exc:
            log.warning("%s: power-off request failed (%s); killing QEMU", self.name, exc)
        except subprocess.TimeoutExpired:
            log.warning("%s: the guest did not power off within %.0f s; killing QEMU", self.name, timeout)
        self.kill()

    def kill(self) -> None:
        """Quit QEMU through QMP, SIGKILL it if that does not work within a few seconds, reap it."""
        if self.process.poll() is None:
            try:
                if self.qmp.connected:
                    self.qmp.execute("quit", timeout=KILL_GRACE)
            except PlatformError:
                pass  # QEMU closes the socket as it quits: no reply is the normal case too.
            try:
                self.process.wait(KILL_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("%s: QEMU did not quit; sending SIGKILL", self.name)
                self.process.kill()
                self.process.wait()
        self.qmp.close()

    def save_snapshot(self, tag: str, timeout: float = 120.0) -> None:
        """Save the whole VM state (disk, UEFI vars, RAM, devices) inside the qcow2 overlay as `tag`."""
        self._hmp_snapshot("savevm", tag, timeout)

    def load_snapshot(self, tag: str, timeout: float = 120.0) -> None:
        """Return the running VM to the state saved as `tag`."""
        self._hmp_snapshot("loadvm", tag, timeout)

    def _hmp_snapshot(self, verb: str, tag: str, timeout: float) -> None:
        self._require_running(verb)
        if not tag or any(c.isspace() or c == '"' for c in tag):
            raise PlatformError(f"bad snapshot tag {tag!r}: use letters, digits, '-' and '_'")
        # HMP reports failure as text, not as a QMP error.
        output = self.qmp.human_monitor(f"{verb} {tag}", timeout=timeout).strip()
        if output:
            raise PlatformError(f"{verb} {tag} failed on {self.name}: {output}")

    def artifacts(self) -> dict[str, str]:
        return {"qemu-cmdline.txt": shlex.join(self.command) + "\n"}

    def diagnose(self) -> str:
        """Run state and where the vCPUs are (RIP, mode, the first registers); the monitor's full view of the
        CPUs and the code at RIP goes to `hypervisor-<n>.txt` next to the console."""
        if not self.is_running():
            return f"QEMU exited with status {self.process.returncode}"
        try:
            status = self.qmp.execute("query-status")
            registers = self.qmp.human_monitor("info registers -a")
            code = self.qmp.human_monitor("x/12i $pc")
            lapic = self.qmp.human_monitor("info lapic")
        except PlatformError as exc:
            return f"QMP did not answer: {exc}"
        self._diagnoses += 1
        path = self.paths.console.parent / f"hypervisor-{self._diagnoses}.txt"
        path.write_text(
            f"query-status: {status}\n\n# info registers -a\n{registers}\n# x/12i $pc\n{code}\n"
            f"# info lapic\n{lapic}\n"
        )
        return f"run state {status.get('status')}; {register_summary(registers)}; full view in {path.name}"

    def __repr__(self) -> str:
        return f"<QemuMachine {self.name} pid={self.process.pid} ssh=127.0.0.1:{self.ssh_port}>"


class QemuPlatform(Platform):
    name: ClassVar[str] = "qemu"
    local: ClassVar[bool] = True
    machine_capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            CAP_HARD_RESET,
            CAP_POWER_CYCLE,
            CAP_SNAPSHOT,
            CAP_PRIVATE_NETWORK,
            CAP_HOST_SERVICES,
            CAP_BOOT_HOST_SERVICES,
        }
    )
    boot_host_address: ClassVar[str | None] = "10.0.2.2"  # the user network's gateway: the host's 127.0.0.1
    checkpoints: ClassVar[bool] = True
    machine_options: ClassVar[frozenset[str]] = MACHINE_OPTIONS

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self._launcher = ProcessLauncher()
        # A machine kept for a person to inspect must survive the test process, so it cannot die with it.
        self.die_with_parent = not ctx.options.get("keep_on_failure")

    def private_network(self) -> PrivateNetwork:
        """An L2 segment relayed by this process; each machine gets a second NIC with a static address."""
        return HubNetwork()

    def nic_segment(self, number: int) -> NicSegment:
        """A segment relayed by this process for the extra NICs number `number` of one test's machines."""
        return HubSegment(number)

    @classmethod
    def collect_leftovers(cls, request: GarbageRequest) -> list[str]:
        return cls.collect_garbage(request)

    @classmethod
    def collect_garbage(cls, request: GarbageRequest) -> list[str]:
        """Machines whose owning pytest process is gone: kill their QEMU, delete overlay disk and sockets.

        Liveness decides, not age: a runtime dir of a run still going is never touched.
        """
        if request.dry_run:
            return [f"would remove {path}" for path in stale_runtime_dirs(request.output_root)]
        return [f"removed {path}" for path in gc_stale_runtime(request.output_root)]

    @classmethod
    def add_options(cls, group: argparse._ArgumentGroup | Any) -> None:
        # A pytest OptionGroup has `addoption`; a plain argparse group has `add_argument`.
        add = getattr(group, "addoption", None) or group.add_argument
        add(
            "--qemu-binary", dest="qemu_binary", default=QEMU_BINARY, metavar="PATH",
            help=f"the QEMU system emulator (default: {QEMU_BINARY})",
        )  # fmt: skip

    # -- options -----------------------------------------------------------------------------------------

    def _option(self, name: str) -> Any:
        return self.ctx.options.get(name)

    @property
    def binary(self) -> str:
        return str(self._option("qemu_binary") or QEMU_BINARY)

    def validate(self) -> None:
        if shutil.which(self.binary) is None:
            raise ConfigError(
                f"QEMU not found ({self.binary}): apt-get install qemu-system-x86, or --qemu-binary"
            )
        if shutil.which(QEMU_IMG) is None:
            raise ConfigError(f"{QEMU_IMG} not found: apt-get install qemu-utils")
        firmware = self._option("machine_firmware")
        if firmware in (None, "uefi"):
            for path in (OVMF_CODE, OVMF_VARS):
                if not path.is_file():
                    raise ConfigError(f"UEFI firmware file {path} is missing: apt-get install ovmf")
        for leftover in gc_socket_dirs():
            log.debug("removed stale QMP socket dir %s", leftover)

    # -- boot --------------------------------------------------------------------------------------------

    def _boot(self, spec: MachineSpec) -> QemuMachine:
        return self._new_machine(spec)

    def _new_machine(
        self, spec: MachineSpec, frozen: checkpoint.CheckpointFiles | None = None
    ) -> QemuMachine:
        firmware = Firmware.named(spec.firmware)
        if not spec.image.is_file():
            raise ImageError(f"machine {spec.name}: image {spec.image} does not exist")
        for path in (firmware.code, firmware.vars_template):
            if path is not None and not path.is_file():  # UEFI asked for by a test, not by --firmware
                raise ConfigError(
                    f"machine {spec.name}: UEFI firmware file {path} is missing: apt-get install ovmf"
                )
        workdir = spec.workdir.absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        runtime_dir = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX, dir=workdir))
        socket_dir = None
        try:
            if not socket_path_fits(runtime_dir / "qmp.sock"):
                socket_dir = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
            write_owner(runtime_dir, socket_dir)
            return self._start(spec, firmware, QemuPaths.layout(workdir, runtime_dir, socket_dir), frozen)
        except BaseException:
            remove_runtime(runtime_dir)
            raise

    def _start(
        self,
        spec: MachineSpec,
        firmware: Firmware,
        paths: QemuPaths,
        frozen: checkpoint.CheckpointFiles | None = None,
    ) -> QemuMachine:
        """Create the machine's disks and start QEMU: a cold boot, or with `frozen` a clone of a checkpoint
        (overlays over its frozen disks, its state loaded before the guest runs on)."""
        if frozen is None:
            _run(overlay_command(spec.image, image_format(spec.image), paths.overlay))
        else:
            _run(overlay_command(frozen.disk, "qcow2", paths.overlay))
        if firmware.kind == "uefi" and frozen is not None:
            _run(overlay_command(frozen.vars, "qcow2", paths.vars))
        elif firmware.kind == "uefi":
            assert firmware.vars_template is not None
            # qcow2 vars so that savevm can snapshot every writable drive.
            _run([QEMU_IMG, "convert", "-q", "-f", "raw", "-O", "qcow2", str(firmware.vars_template),
                  str(paths.vars)])  # fmt: skip
        for index, size_mib in enumerate(spec.extra_disks_mib, start=1):
            if frozen is not None and frozen.extra_disk(index).is_file():  # what the saved machine wrote
                _run(overlay_command(frozen.extra_disk(index), "qcow2", paths.extra_disk(index)))
            else:
                _run(blank_disk_command(paths.extra_disk(index), size_mib))
        if not paths.ignition.is_file() or paths.ignition.read_text().strip() != spec.ignition.text.strip():
            paths.ignition.write_text(spec.ignition.text)
        command = qemu_command(spec, accel=self.ctx.accel, paths=paths, firmware=firmware, binary=self.binary)
        (paths.console.parent / "qemu-cmdline.txt").write_text(shlex.join(command) + "\n")
        # The command appends to the console, across power cycles.
        paths.console.write_bytes(b"" if frozen is None else frozen.clone_console())
        how = "starting QEMU" if frozen is None else f"restoring checkpoint {frozen.directory.name}"
        log.info("%s: %s (%s, %s, %d MiB, %d vCPU)", spec.name, how, self.ctx.accel.name, firmware.kind,
                 spec.memory_mib, spec.cpus)  # fmt: skip
        log.debug("%s: %s", spec.name, shlex.join(command))
        if frozen is None:
            process, qmp, port = self._launch(command, paths)
        else:
            process, qmp, port = self._launch([*command, *checkpoint.incoming_args()], paths)
            try:
                checkpoint.receive(qmp, process, frozen, paths.log, CHECKPOINT_TIMEOUT)
            except BaseException:
                qmp.close()
                _stop(process)
                raise
        machine = QemuMachine(
            spec, process=process, qmp=qmp, paths=paths, command=command, ssh_port=port, launch=self._launch
        )
        log.info("%s: QEMU pid %d, SSH forwarded from 127.0.0.1:%d", spec.name, process.pid, port)
        return machine

    # -- checkpoints --------------------------------------------------------------------------------------

    def checkpoint_signature(self, spec: MachineSpec) -> str:
        return checkpoint.signature(
            spec, accel=self.ctx.accel, firmware=Firmware.named(spec.firmware), binary=self.binary
        )

    def save_checkpoint(self, machine: Machine, directory: Path) -> None:
        if not isinstance(machine, QemuMachine):
            raise PlatformError(f"{machine!r} was not booted by the qemu platform")
        machine._require_running("save a checkpoint of")
        log.info("%s: saving a checkpoint in %s", machine.name, directory)
        checkpoint.freeze(
            machine.qmp,
            machine.paths,
            checkpoint.CheckpointFiles(directory),
            version=checkpoint.qemu_version(self.binary),
            timeout=CHECKPOINT_TIMEOUT,
            extra_disks=len(machine.spec.extra_disks_mib),
        )

    def _restore(self, spec: MachineSpec, directory: Path) -> QemuMachine:
        frozen = checkpoint.CheckpointFiles(directory)
        checkpoint.check(frozen, version=checkpoint.qemu_version(self.binary))
        return self._new_machine(spec, frozen)

    def _launch(self, command: list[str], paths: QemuPaths) -> Launched:
        """Start QEMU, connect QMP, read the forwarded SSH port; nothing is left running if that fails."""
        process = self._launcher.start(command, paths.log, die_with_parent=self.die_with_parent)
        qmp = QMPClient(paths.qmp_socket)
        try:
            _connect_qmp(qmp, process, paths, QMP_START_TIMEOUT)
            port = forwarded_port(qmp.human_monitor("info usernet"))
        except BaseException:
            qmp.close()
            _stop(process)
            raise
        return process, qmp, port

    def _destroy(self, machine: Machine) -> None:
        if not isinstance(machine, QemuMachine):
            raise PlatformError(f"{machine!r} was not booted by the qemu platform")
        try:
            machine.kill()
        finally:
            remove_runtime(machine.paths.runtime_dir)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._launcher.stop()


REGISTER = re.compile(r"\b(RIP|RAX|RBX|RCX|RDX|RSP|CR0|CR3|CR4|CPL|HLT|SMM)=(\S+)")


def register_summary(info_registers: str) -> str:
    """The registers that tell firmware from kernel and a spin from a halt, for each CPU of `info registers`."""
    summaries = []
    for block in re.split(r"(?m)^(?=CPU#\d+)", info_registers):
        if not block.strip():
            continue
        cpu = block.split(None, 1)[0]
        values = dict(REGISTER.findall(block))
        shown = " ".join(
            f"{k}={values[k]}"
            for k in ("RIP", "CPL", "HLT", "SMM", "CR0", "CR4", "RAX", "RBX", "RCX")
            if k in values
        )
        summaries.append(f"{cpu} {shown}")
    return "; ".join(summaries) or "no registers"


def image_format(image: Path) -> str:
    """The format of a disk image as qemu-img sees it (`qcow2`, `raw`...)."""
    try:
        out = _run([QEMU_IMG, "info", "-U", "--output=json", str(image)])
        fmt = json.loads(out)["format"]
    except (PlatformError, ValueError, KeyError) as exc:
        raise ImageError(f"cannot read the format of image {image}: {exc}") from exc
    if not isinstance(fmt, str):
        raise ImageError(f"qemu-img reports no format for {image}")
    return fmt


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"{shlex.join(argv)} failed: {exc}") from exc
    if done.returncode != 0:
        raise PlatformError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _connect_qmp(qmp: QMPClient, process: subprocess.Popen[bytes], paths: QemuPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not paths.qmp_socket.exists():
        if process.poll() is not None:
            raise BootError(
                f"QEMU exited at start with status {process.returncode}:\n{_tail(paths.log)}\n"
                f"(command line in {paths.console.parent / 'qemu-cmdline.txt'})"
            )
        if time.monotonic() > deadline:
            raise BootError(f"QEMU created no QMP socket within {timeout:.0f} s:\n{_tail(paths.log)}")
        time.sleep(0.05)
    try:
        qmp.connect(max(1.0, deadline - time.monotonic()))
    except PlatformError as exc:
        raise BootError(f"QMP connection to QEMU failed: {exc}\n{_tail(paths.log)}") from exc


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip() or "(QEMU wrote nothing)"
    except OSError:
        return "(no QEMU log)"
