"""Booted checkpoints of QEMU machines: a running machine frozen to files, and clones started from them.

A checkpoint is a directory of read-only files:

    disk.qcow2   the machine's overlay as it was when frozen (backed by the image it booted)
    disk<N>.qcow2  its extra disk N as it was when frozen (machines with extra disks)
    vars.qcow2   its UEFI variables (UEFI machines only)
    state        QEMU's migration stream: memory and device state
    qemu.json    what made it: QEMU version, sizes of the files above
    console.txt  the console of the boot that made it (a clone's console starts with it)

Freezing pauses the machine, streams its state to `state` (a migration to a file), copies its disks while
QEMU holds them inactive, and lets the machine run on. A clone gets fresh qcow2 overlays over the frozen disks,
its own console, QMP socket and SSH port, and starts with `-incoming`: it resumes where the frozen machine
stopped. Every machine has a `vmgenid` device whose generation id QEMU picks anew at each start, so a clone's
kernel sees a new id as it resumes and reseeds its random number generator (CONFIG_VMGENID).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.acceleration import Acceleration
from harness.errors import CheckpointError, PlatformError
from harness.qmp import QMPClient
from platforms.base import MachineSpec
from platforms.qemu.command import OVMF_CODE, Firmware, QemuPaths, qemu_command

log = logging.getLogger(__name__)

DISK = "disk.qcow2"
VARS = "vars.qcow2"
STATE = "state"
CONSOLE = "console.txt"
MANIFEST = "qemu.json"
__all__ = ["OVMF_CODE", "CheckpointFiles", "check", "freeze", "receive", "signature"]
EXIT_GRACE = 10.0  # seconds a QEMU whose QMP socket broke during a load gets to exit
POLL = 0.05


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """The files of one checkpoint directory."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / DISK

    @property
    def vars(self) -> Path:
        return self.directory / VARS

    def extra_disk(self, index: int) -> Path:
        """The frozen copy of extra disk `index` (1 for the first)."""
        return self.directory / f"disk{index}.qcow2"

    @property
    def state(self) -> Path:
        return self.directory / STATE

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST

    @property
    def console(self) -> Path:
        return self.directory / CONSOLE

    def clone_console(self) -> bytes:
        """What a clone's console starts with: the console of the boot that made the checkpoint, then a line
        saying where that boot ends and the clone begins."""
        try:
            before = self.console.read_bytes()
        except OSError:
            before = b""
        if before and not before.endswith(b"\n"):
            before += b"\n"
        return (
            before
            + f"[railyard: restored from checkpoint {self.directory.name}; above: the boot that made it]\n".encode()
        )


@functools.cache
def qemu_version(binary: str) -> str:
    """The first line of `binary --version` (e.g. `QEMU emulator version 7.2.22 (Debian ...)`)."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PlatformError(f"cannot read the version of {binary}: {exc}") from exc
    return done.stdout.splitlines()[0].strip() if done.stdout.strip() else "unknown"


def _identity(path: Path) -> dict[str, Any]:
    """A file as a checkpoint depends on it: where it is, its size and when it last changed."""
    resolved = path.resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def signature(spec: MachineSpec, *, accel: Acceleration, firmware: Firmware, binary: str) -> str:
    """What a machine restored from a checkpoint of `spec` depends on, as canonical JSON: the QEMU command
    line with the machine's own names, paths and hub ports left out (so it holds shape, firmware, devices and
    their MACs, extra kernel arguments, acceleration), the sizes of extra disks, the QEMU version, and the
    identity of the image and firmware files. The ports of the hubs that relay the private network and the
    extra NICs are left out too: each run has its own hubs, and a clone joins those of its own test."""
    private_net = spec.private_net
    anonymous = dataclasses.replace(
        spec,
        name="checkpoint",
        workdir=Path("/checkpoint"),
        test_id="",
        checkpoint_stage="",
        private_net=dataclasses.replace(private_net, hub_port=0) if private_net is not None else None,
        extra_nics=tuple(dataclasses.replace(nic, hub_port=0) for nic in spec.extra_nics),
    )
    paths = QemuPaths.layout(Path("/checkpoint"), Path("/checkpoint/runtime"))
    command = qemu_command(anonymous, accel=accel, paths=paths, firmware=firmware, binary="qemu")
    files = {"image": _identity(spec.image)}
    if firmware.code is not None:
        files["firmware-code"] = _identity(firmware.code)
    if firmware.vars_template is not None:
        files["firmware-vars"] = _identity(firmware.vars_template)
    about: dict[str, Any] = {
        "qemu": qemu_version(binary),
        "command": command[1:],
        "files": files,
        "user": spec.ssh_user,
    }
    if spec.extra_disks_mib:  # their files are in the command line, their sizes are not
        about["disks_mib"] = list(spec.extra_disks_mib)
    return json.dumps(about, sort_keys=True)


def _wait_migration(qmp: QMPClient, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise PlatformError(f"saving the machine's state failed: {info.get('error-desc', status)}")
        if time.monotonic() > deadline:
            qmp.execute("migrate_cancel")
            raise PlatformError(f"saving the machine's state took more than {timeout:.0f} s ({status})")
        time.sleep(POLL)


def freeze(
    qmp: QMPClient,
    paths: QemuPaths,
    files: CheckpointFiles,
    *,
    version: str,
    timeout: float,
    extra_disks: int = 0,
) -> None:
    """Save the running machine behind `qmp` (with `extra_disks` extra disks) into `files` and let it run on
    (see the module docstring)."""
    qmp.execute("stop")
    try:
        start = time.monotonic()
        qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(files.state))}"})
        info = _wait_migration(qmp, timeout)
        # The migration left QEMU's block devices flushed and inactive: the files are consistent to copy.
        shutil.copyfile(paths.overlay, files.disk)
        extra = [(paths.extra_disk(index), files.extra_disk(index)) for index in range(1, extra_disks + 1)]
        for source, copy in extra:
            shutil.copyfile(source, copy)
        shutil.copyfile(paths.console, files.console)
        uefi = paths.vars.exists()
        if uefi:
            shutil.copyfile(paths.vars, files.vars)
        manifest = {
            "qemu": version,
            "state_bytes": files.state.stat().st_size,
            "disk_bytes": files.disk.stat().st_size,
            "extra_disk_bytes": [copy.stat().st_size for _, copy in extra],
            "uefi": uefi,
            "saved_in_s": round(time.monotonic() - start, 3),
            "ram_transferred": info.get("ram", {}).get("transferred"),
        }
        files.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        for path in (
            files.disk,
            files.vars,
            files.state,
            files.manifest,
            files.console,
            *(c for _, c in extra),
        ):
            if path.exists():
                path.chmod(0o444)
    finally:
        qmp.execute("cont")  # takes the block devices back and resumes the guest


def check(files: CheckpointFiles, *, version: str) -> dict[str, Any]:
    """The manifest of a checkpoint that looks usable; CheckpointError saying why it is not."""
    try:
        manifest: dict[str, Any] = json.loads(files.manifest.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {files.directory} has no readable {MANIFEST}: {exc}") from exc
    if manifest.get("qemu") != version:
        raise CheckpointError(
            f"checkpoint {files.directory} was saved by {manifest.get('qemu')!r}, not by this {version!r}"
        )
    saved = [(files.state, manifest.get("state_bytes")), (files.disk, manifest.get("disk_bytes"))]
    saved += [(files.extra_disk(n), size) for n, size in enumerate(manifest.get("extra_disk_bytes") or [], 1)]
    for path, expected in saved:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise CheckpointError(f"checkpoint {files.directory}: {path.name} is missing ({exc})") from exc
        if size != expected:
            raise CheckpointError(
                f"checkpoint {files.directory}: {path.name} has {size} bytes, {expected} were saved "
                "(truncated or changed)"
            )
    if manifest.get("uefi") and not files.vars.is_file():
        raise CheckpointError(f"checkpoint {files.directory}: {VARS} is missing")
    return manifest


def incoming_args() -> list[str]:
    """What a clone's command line adds: start paused, waiting for the state `receive` streams in."""
    return ["-incoming", "defer"]


def receive(
    qmp: QMPClient, process: subprocess.Popen[bytes], files: CheckpointFiles, log_path: Path, timeout: float
) -> None:
    """Load the frozen state into the QEMU started with `incoming_args`, then resume it. CheckpointError
    when QEMU rejects the state (it exits then: truncated, or another QEMU's)."""
    try:
        qmp.execute("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(files.state))}"})
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                break
            status = qmp.execute("query-status").get("status")
            if status in ("paused", "prelaunch", "running"):
                if status != "running":
                    qmp.execute("cont")
                return
            if status not in ("inmigrate",):
                raise CheckpointError(f"checkpoint {files.directory}: QEMU is {status} after loading it")
            if time.monotonic() > deadline:
                raise CheckpointError(f"checkpoint {files.directory}: not loaded within {timeout:.0f} s")
            time.sleep(POLL)
    except CheckpointError:
        raise
    except PlatformError as exc:
        # A QEMU that rejects the stream closes its QMP socket while it exits: a reset connection is the first
        # sign of that exit, so give the process a moment to end before calling it anything else.
        try:
            process.wait(timeout=EXIT_GRACE)
        except subprocess.TimeoutExpired:
            raise CheckpointError(f"checkpoint {files.directory}: loading it failed: {exc}") from exc
    process.wait()
    raise CheckpointError(
        f"checkpoint {files.directory}: QEMU could not load it and exited ({process.returncode}): "
        f"{_tail(log_path)}"
    )


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip() or "(QEMU wrote nothing)"
    except OSError:
        return "(no QEMU log)"
