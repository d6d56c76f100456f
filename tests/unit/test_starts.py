"""Which way a machine comes up under each `--warm` mode, and what it leaves for the next (no VM: a platform
that records what it is asked, and guests that answer at once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from harness.acceleration import Acceleration, Timeouts
from harness.errors import CheckpointError, PlatformError
from harness.starts import FIRSTBOOT_KEY, PREWARM, MachineStarter, StartPolicy
from harness.warm import CheckpointStore, StartRecord, checkpoint_key
from platforms.base import FIRSTBOOT_WAITING, FirstBootConfig, Machine, MachineSpec, SSHEndpoint

TIMEOUTS = Timeouts.for_acceleration(Acceleration("kvm", "test"))


class FakeVM(Machine):
    def __init__(self, spec: MachineSpec, console: str = "") -> None:
        super().__init__(spec)
        spec.workdir.mkdir(parents=True, exist_ok=True)
        self.console_path.write_text(console)
        self.running = True

    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        return SSHEndpoint("127.0.0.1", 22, "core")

    def is_running(self) -> bool:
        return self.running

    def reset(self) -> None: ...

    def poweroff(self, timeout: float) -> None:
        self.running = False

    def kill(self) -> None:
        self.running = False


class FakePlatform:
    """What the starter asks of a platform, recorded; checkpoints are directories with a `made` file."""

    def __init__(self, refuse: bool = False, maker_waits: bool = True, save_fails: bool = False) -> None:
        self.calls: list[str] = []
        self.refuse = refuse
        self.maker_waits = maker_waits
        self.save_fails = save_fails

    def checkpoint_signature(self, spec: MachineSpec) -> str:
        return "signature"

    def boot(self, spec: MachineSpec) -> FakeVM:
        self.calls.append(f"boot {spec.name} {spec.checkpoint_stage or '-'}")
        waiting = spec.checkpoint_stage == "firstboot" and self.maker_waits
        return FakeVM(spec, FIRSTBOOT_WAITING + "\n" if waiting else "")

    def restore(self, spec: MachineSpec, directory: Path) -> FakeVM:
        self.calls.append(f"restore {spec.name} {(directory / 'made').read_text()}")
        if self.refuse:
            raise CheckpointError("QEMU could not load it")
        return FakeVM(spec, "boot that made it\n[railyard: restored]\n")

    def save_checkpoint(self, machine: Machine, directory: Path) -> None:
        self.calls.append(f"save {machine.name}")
        if self.save_fails:
            raise PlatformError("disk full")
        (directory / "made").write_text(machine.spec.checkpoint_stage or "booted")

    def destroy(self, machine: Machine) -> None:
        self.calls.append(f"destroy {machine.name}")


@dataclasses.dataclass
class FakeGuest:
    vm: FakeVM
    start: StartRecord | None = None
    log: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.vm.name

    def wait_for_ssh(self, booting: bool = False) -> None:
        self.log.append("ssh, booting" if booting else "ssh")

    def settle(self) -> None:
        self.log.append("settle")

    def close(self) -> None:
        self.log.append("close")

    def execute(self, command: str) -> None:
        self.log.append(f"execute {command}")

    def sync_clock(self) -> float:
        self.log.append("clock")
        return 0.0

    def console_text(self) -> str:
        return self.vm.console_path.read_text()


def spec(
    tmp_path: Path, name: str = "t-1", config: str = '{"ignition": {"version": "3.3.0"}}'
) -> MachineSpec:
    return MachineSpec(
        name=name, image=tmp_path / "image.qcow2", ignition=FirstBootConfig(config, "3.3.0"),
        ignition_fw_cfg="opt/com.coreos/config", workdir=tmp_path / "out" / name,
    )  # fmt: skip


def starter(platform: FakePlatform, skipped: list[str]) -> MachineStarter:
    def skip(guest: Any) -> None:
        skipped.append(guest.name)

    return MachineStarter(platform, TIMEOUTS, FakeGuest, skip)  # type: ignore[arg-type]


def seen(store: CheckpointStore, *specs: MachineSpec) -> CheckpointStore:
    """Mark the configs of `specs` as having come up before (so their next machine saves a checkpoint)."""
    for s in specs:
        store.wanted(checkpoint_key("signature", s.ignition.text))
    return store


def policy(store: CheckpointStore | None, mode: str) -> StartPolicy:
    return StartPolicy(store=store, booted=mode in ("booted", "all"), firstboot=mode in ("firstboot", "all"))


def test_booted_a_config_that_comes_back_is_saved_and_then_restored(tmp_path: Path) -> None:
    platform, skipped = FakePlatform(), []
    store = CheckpointStore(tmp_path / "ckpt")
    once: Any = starter(platform, skipped).start(spec(tmp_path, "a-1"), policy(store, "booted"))
    first: Any = starter(platform, skipped).start(spec(tmp_path, "b-1"), policy(store, "booted"))
    second: Any = starter(platform, skipped).start(spec(tmp_path, "c-1"), policy(store, "booted"))
    assert platform.calls == ["boot a-1 -", "boot b-1 -", "save b-1", "restore c-1 booted"]
    assert once.start.note == ""  # seen once: not worth a checkpoint yet
    assert first.start.kind == "cold"
    assert "saved as checkpoint" in first.start.note
    # Warmed (what clones run first), closed while saved, clock set after.
    assert first.log == ["ssh, booting", "settle", f"execute {PREWARM}", "close", "clock"]
    assert second.start.kind == "restored-booted"
    assert second.log == ["ssh", "clock"]  # resumed settled and up: only the clock is set
    assert skipped == ["c-1"]  # the checkpoint's boot in its console is not checked again


def test_another_config_is_another_checkpoint(tmp_path: Path) -> None:
    platform, skipped = FakePlatform(), []
    other = spec(tmp_path, "b-1", '{"ignition": {"version": "3.3.0"}, "storage": {}}')
    store = seen(CheckpointStore(tmp_path / "ckpt"), spec(tmp_path), other)
    starter(platform, skipped).start(spec(tmp_path, "a-1"), policy(store, "booted"))
    starter(platform, skipped).start(other, policy(store, "booted"))
    assert platform.calls == ["boot a-1 -", "save a-1", "boot b-1 -", "save b-1"]


def test_off_or_exempt_boots_cold_and_saves_nothing(tmp_path: Path) -> None:
    platform, skipped = FakePlatform(), []
    guest: Any = starter(platform, skipped).start(spec(tmp_path), policy(None, "all"))
    assert platform.calls == ["boot t-1 -"]
    assert guest.start.kind == "cold"
    assert guest.start.note == ""


def test_a_refused_checkpoint_is_dropped_and_the_machine_boots_cold_and_saves_it_anew(tmp_path: Path) -> None:
    store = seen(CheckpointStore(tmp_path / "ckpt"), spec(tmp_path))
    starter(FakePlatform(), []).start(spec(tmp_path, "a-1"), policy(store, "booted"))
    platform = FakePlatform(refuse=True)
    guest: Any = starter(platform, []).start(spec(tmp_path, "b-1"), policy(store, "booted"))
    assert platform.calls == ["restore b-1 booted", "boot b-1 -", "save b-1"]
    assert guest.start.kind == "cold"
    assert guest.start.note.startswith("checkpoint dropped: QEMU could not load it; saved as checkpoint")


def test_a_failed_save_is_a_note_not_a_failure(tmp_path: Path) -> None:
    store = seen(CheckpointStore(tmp_path / "ckpt"), spec(tmp_path))
    platform = FakePlatform(save_fails=True)
    guest: Any = starter(platform, []).start(spec(tmp_path), policy(store, "booted"))
    assert guest.start.note == "its checkpoint could not be saved: disk full"
    assert guest.log[-1] == "clock"
    assert sorted(p.name for p in store.root.iterdir()) == [".locks", ".seen"]


def test_firstboot_a_maker_is_saved_and_thrown_away_then_each_machine_is_restored(tmp_path: Path) -> None:
    platform, skipped = FakePlatform(), []
    store = CheckpointStore(tmp_path / "ckpt")
    one: Any = starter(platform, skipped).start(spec(tmp_path, "a-1"), policy(store, "firstboot"))
    other = spec(tmp_path, "b-1", '{"ignition": {"version": "3.3.0"}, "storage": {}}')
    two: Any = starter(platform, skipped).start(other, policy(store, "firstboot"))
    assert platform.calls == [
        "boot a-1-firstboot firstboot",
        "save a-1-firstboot",
        "destroy a-1-firstboot",
        "restore a-1 firstboot",
        "restore b-1 firstboot",  # another config, the same first-boot checkpoint
    ]
    assert (one.start.kind, two.start.kind) == ("restored-firstboot", "restored-firstboot")
    assert one.start.note.startswith("first-boot checkpoint made in")
    assert one.log == ["ssh, booting", "settle"]  # Ignition and the whole boot run after the resume
    assert two.start.note == ""
    assert one.start.checkpoint == two.start.checkpoint != ""


def test_all_restores_first_boot_then_saves_booted_for_the_same_config(tmp_path: Path) -> None:
    platform, skipped = FakePlatform(), []
    store = seen(CheckpointStore(tmp_path / "ckpt"), spec(tmp_path))
    first: Any = starter(platform, skipped).start(spec(tmp_path, "a-1"), policy(store, "all"))
    second: Any = starter(platform, skipped).start(spec(tmp_path, "b-1"), policy(store, "all"))
    assert platform.calls == [
        "boot a-1-firstboot firstboot",
        "save a-1-firstboot",
        "destroy a-1-firstboot",
        "restore a-1 firstboot",
        "save a-1",
        "restore b-1 booted",
    ]
    assert first.start.kind == "restored-firstboot"
    assert second.start.kind == "restored-booted"


def test_an_image_that_never_waits_for_a_checkpoint_boots_cold(tmp_path: Path) -> None:
    platform = FakePlatform(maker_waits=False)
    store = CheckpointStore(tmp_path / "ckpt")
    timeouts = dataclasses.replace(TIMEOUTS, boot=0.3)
    guest: Any = MachineStarter(platform, timeouts, FakeGuest, lambda g: None).start(  # type: ignore[arg-type]
        spec(tmp_path), policy(store, "firstboot")
    )
    assert platform.calls == ["boot t-1-firstboot firstboot", "destroy t-1-firstboot", "boot t-1 -"]
    assert guest.start.kind == "cold"
    assert guest.start.note.startswith("no first-boot checkpoint:")


@pytest.mark.parametrize("mode", ["booted", "all"])
def test_no_save_when_another_process_is_making_the_checkpoint(tmp_path: Path, mode: str) -> None:
    platform = FakePlatform(maker_waits=False)
    store = CheckpointStore(tmp_path / "ckpt")
    timeouts = dataclasses.replace(TIMEOUTS, boot=0.3)
    s = MachineStarter(platform, timeouts, FakeGuest, lambda g: None)  # type: ignore[arg-type]
    booted_key = checkpoint_key("signature", spec(tmp_path).ignition.text)
    firstboot_key = checkpoint_key("signature", FIRSTBOOT_KEY)
    with store.making(booted_key, {}) as a, store.making(firstboot_key, {}) as b:
        assert a is not None
        assert b is not None
        guest: Any = s.start(spec(tmp_path), policy(store, mode))
    assert platform.calls == ["boot t-1 -"]
    assert guest.start.kind == "cold"
