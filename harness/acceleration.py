"""Honest detection of hardware acceleration, and timeouts that scale with it.

`auto` means KVM only when the CPU advertises vmx/svm *and* a kvm_intel/kvm_amd module is loaded:
/dev/kvm alone is not enough (a nested PVM hypervisor exposes /dev/kvm but cannot boot a stock kernel).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import ConfigError

log = logging.getLogger(__name__)

AccelName = Literal["kvm", "tcg", "cloud"]
"""`kvm`/`tcg`: how a local QEMU runs guests; `cloud`: a hypervisor that is not ours (EC2, Azure)."""
ACCEL_CHOICES = ("auto", "kvm", "tcg")

# TCG is roughly ten times slower than KVM; waits are sized for the slower one.
TCG_FACTOR = 10.0


@dataclass(frozen=True)
class Acceleration:
    name: AccelName
    reason: str

    @property
    def factor(self) -> float:
        """How much slower than KVM a guest runs; multiply KVM-sized timeouts by this."""
        return TCG_FACTOR if self.name == "tcg" else 1.0

    def scale(self, kvm_seconds: float) -> float:
        return float(kvm_seconds) * self.factor


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _kvm_modules(modules: str) -> set[str]:
    return {line.split()[0] for line in modules.splitlines() if line.strip()} & {"kvm_intel", "kvm_amd"}


def kvm_usable(
    cpuinfo: str | None = None, modules: str | None = None, dev_kvm: bool | None = None
) -> tuple[bool, str]:
    """Whether KVM can boot a stock kernel here, and why (or why not)."""
    if cpuinfo is None:
        cpuinfo = _read("/proc/cpuinfo")
    if modules is None:
        modules = _read("/proc/modules")
    if dev_kvm is None:
        dev_kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    flags = _cpu_flags(cpuinfo)
    if not flags & {"vmx", "svm"}:
        return False, "the CPU advertises neither vmx nor svm"
    loaded = _kvm_modules(modules)
    if not loaded:
        return False, "neither kvm_intel nor kvm_amd is loaded"
    if not dev_kvm:
        return False, "/dev/kvm is missing or not read-writable"
    return True, f"{'/'.join(sorted(loaded))} loaded and the CPU has {'vmx' if 'vmx' in flags else 'svm'}"


def detect(requested: str) -> Acceleration:
    """Resolve `auto|kvm|tcg` to what QEMU will use."""
    if requested not in ACCEL_CHOICES:
        raise ConfigError(f"unknown acceleration {requested!r}: choose one of {', '.join(ACCEL_CHOICES)}")
    if requested == "tcg":
        return Acceleration("tcg", "requested")
    ok, why = kvm_usable()
    if requested == "kvm":
        if not ok:
            raise ConfigError(f"--qemu-accel=kvm was requested but KVM is not usable: {why}; use auto or tcg")
        return Acceleration("kvm", why)
    accel = Acceleration("kvm", why) if ok else Acceleration("tcg", f"KVM not usable: {why}")
    log.info("acceleration: %s (%s)", accel.name, accel.reason)
    return accel


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


CLOUD = Acceleration("cloud", "the cloud's own hypervisor runs the machines")
"""What cloud platforms report: nothing on the runner says how fast their machines are."""


@dataclass(frozen=True)
class Timeouts:
    """Default waits, in seconds, for one acceleration. Sized for KVM and scaled by the accel factor."""

    boot: float
    reboot: float
    command: float
    settle: float
    restart: float = 90.0
    """How long a machine may print nothing after the kernel's restart line before it counts as stuck."""

    @classmethod
    def for_acceleration(cls, accel: Acceleration, boot: float | None = None) -> Timeouts:
        # Boots under TCG vary by 20-30 s when the host starves vCPUs: these are ceilings, not estimates.
        return cls(
            boot=boot if boot is not None else accel.scale(30.0),
            reboot=boot if boot is not None else accel.scale(24.0),
            command=accel.scale(30.0),
            settle=accel.scale(12.0),
            restart=accel.scale(9.0),
        )

    @classmethod
    def fixed(
        cls, boot: float, reboot: float, command: float, settle: float, restart: float, given: float | None
    ) -> Timeouts:
        """Timeouts of a platform that knows its own (a cloud); `given` (--boot-timeout) overrides boots."""
        return cls(
            boot=given if given is not None else boot,
            reboot=given if given is not None else reboot,
            command=command,
            settle=settle,
            restart=restart,
        )
