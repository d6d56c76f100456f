from __future__ import annotations

import pytest

from harness import acceleration
from harness.acceleration import Acceleration, Timeouts, detect, kvm_usable
from harness.errors import ConfigError

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx sse sse2\n"
NO_VIRT = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr sse sse2 hypervisor\n"
AMD = "processor\t: 0\nflags\t\t: fpu svm sse\n"
KVM_INTEL = "kvm_intel 409600 0 - Live 0x0\nkvm 1142784 1 kvm_intel, Live 0x0\n"
KVM_PVM = "kvm_pvm 61440 0 - Live 0x0\nkvm 1142784 1 kvm_pvm, Live 0x0\n"


def test_vmx_and_kvm_intel_is_usable():
    ok, why = kvm_usable(INTEL, KVM_INTEL, dev_kvm=True)
    assert ok
    assert "kvm_intel" in why
    assert "vmx" in why


def test_svm_and_kvm_amd_is_usable():
    assert kvm_usable(AMD, "kvm_amd 1 0 - Live 0x0\n", dev_kvm=True)[0]


def test_no_vmx_means_tcg_with_reason():
    ok, why = kvm_usable(NO_VIRT, KVM_INTEL, dev_kvm=True)
    assert not ok
    assert "vmx" in why


def test_pvm_module_is_not_enough():
    ok, why = kvm_usable(INTEL, KVM_PVM, dev_kvm=True)
    assert not ok
    assert "kvm_intel" in why


def test_missing_dev_kvm():
    ok, why = kvm_usable(INTEL, KVM_INTEL, dev_kvm=False)
    assert not ok
    assert "/dev/kvm" in why


def fake_host(monkeypatch, cpuinfo: str, modules: str, dev_kvm: bool) -> None:
    files = {"/proc/cpuinfo": cpuinfo, "/proc/modules": modules}
    monkeypatch.setattr(acceleration, "_read", lambda path: files[path])
    monkeypatch.setattr(acceleration.os, "access", lambda path, mode: dev_kvm)


def test_auto_picks_kvm(monkeypatch):
    fake_host(monkeypatch, INTEL, KVM_INTEL, True)
    accel = detect("auto")
    assert accel.name == "kvm"
    assert accel.factor == 1.0


def test_auto_falls_back_to_tcg_with_reason(monkeypatch):
    fake_host(monkeypatch, NO_VIRT, "", True)
    accel = detect("auto")
    assert accel.name == "tcg"
    assert "vmx" in accel.reason
    assert accel.factor == 10.0


def test_kvm_requested_but_unusable(monkeypatch):
    fake_host(monkeypatch, INTEL, KVM_PVM, True)
    with pytest.raises(ConfigError, match="not usable"):
        detect("kvm")


def test_tcg_requested_never_probes(monkeypatch):
    monkeypatch.setattr(acceleration, "_read", lambda path: pytest.fail("probed"))
    assert detect("tcg") == Acceleration("tcg", "requested")


def test_unknown_choice():
    with pytest.raises(ConfigError, match="auto"):
        detect("hvf")


def test_timeouts_scale():
    kvm = Timeouts.for_acceleration(Acceleration("kvm", ""))
    tcg = Timeouts.for_acceleration(Acceleration("tcg", ""))
    assert tcg.boot == pytest.approx(kvm.boot * 10)
    assert tcg.command == pytest.approx(kvm.command * 10)
    assert Timeouts.for_acceleration(Acceleration("tcg", ""), boot=90.0).boot == 90.0
