"""Booted checkpoints on QEMU, for real: one cold boot saved, clones restored from it.

Each clone must be a machine of its own: an RNG reseeded at resume (vmgenid), the host's time, disks (the
boot disk and an extra one) that hold what the saved machine wrote, and whose writes reach neither the
checkpoint nor another clone. A damaged checkpoint is refused before or while QEMU
loads it, and leaves no QEMU behind. (The plugin's use of checkpoints is in test_warm_plugin.py: its child
runs need admission slots, which this module's machine holds until its last test.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.acceleration import Timeouts, detect
from harness.admission import BootSlots
from harness.distros import Distro, get_distro
from harness.errors import CheckpointError
from harness.image_choice import resolve_image
from harness.machine import GuestMachine
from harness.provisioning import base_ignition
from harness.ssh import KeyPair, generate_keypair
from platforms.base import FirstBootConfig, MachineSpec, PlatformContext
from platforms.qemu import QemuPlatform
from platforms.qemu.checkpoint import CheckpointFiles
from tests.integration.helpers import qemu_processes_under

RESEEDED = "crng reseeded due to virtual machine fork"
EXTRA_DISK = "/dev/disk/by-id/virtio-railyard-disk1"
# One worker runs this module, so that its machine boots once (the plugin schedules by xdist group).
pytestmark = pytest.mark.xdist_group("warm-pool-checkpoint")


@dataclass
class Frozen:
    """A platform, a machine booted cold, and the checkpoint saved of it."""

    platform: QemuPlatform
    distro: Distro
    keypair: KeyPair
    timeouts: Timeouts
    root: Path
    image: Path
    original: GuestMachine
    checkpoint: Path

    def spec(self, name: str) -> MachineSpec:
        config = FirstBootConfig.render(base_ignition(self.distro, self.keypair.public_line))
        return MachineSpec(
            name=name, image=self.image, ignition=config, ignition_fw_cfg=self.distro.ignition_fw_cfg,
            workdir=self.root / name, ssh_user=self.distro.default_user, cpus=1, extra_disks_mib=(64,),
        )  # fmt: skip

    def guest(self, vm: object) -> GuestMachine:
        return GuestMachine(
            vm,  # type: ignore[arg-type]
            pkey=self.keypair.pkey,
            timeouts=self.timeouts,
            distro=self.distro,
            channel="stable",
        )

    def restore(self, name: str, checkpoint: Path | None = None) -> GuestMachine:
        guest = self.guest(self.platform.restore(self.spec(name), checkpoint or self.checkpoint))
        guest.wait_for_ssh()
        return guest


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Frozen]:
    root = tmp_path_factory.mktemp("warm")
    accel = detect("auto")
    timeouts = Timeouts.for_acceleration(accel)
    distro = get_distro("railyard")
    image = resolve_image("stable", explicit=None, metadata=None, distro=None, local=True).path
    platform = QemuPlatform(PlatformContext("warm-test", root, accel, timeouts, {}))
    platform.validate()
    keypair = generate_keypair(root / "keys")
    # One host core for this module's machines, shared with every other run's admission (harness.admission).
    slot = BootSlots(os.cpu_count() or 1).slot("warm-pool test", timeout=4 * 3600.0).acquire()
    try:
        made = Frozen(platform, distro, keypair, timeouts, root, image, None, root / "checkpoint")  # type: ignore[arg-type]
        made.original = made.guest(platform.boot(made.spec("original")))
        made.original.wait_for_ssh()
        made.original.settle()
        made.original.succeed(f"printf saved | sudo dd of={EXTRA_DISK} conv=fsync status=none")
        made.original.close()
        made.checkpoint.mkdir()
        platform.save_checkpoint(made.original.vm, made.checkpoint)
        yield made
    finally:
        platform.close()
        slot.release()
    assert qemu_processes_under(root) == []


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_the_original_runs_on_after_its_checkpoint_is_saved(frozen: Frozen) -> None:
    files = CheckpointFiles(frozen.checkpoint)
    assert all(p.stat().st_mode & 0o222 == 0 for p in frozen.checkpoint.iterdir()), (
        "checkpoint files are read-only"
    )
    assert files.state.stat().st_size > 1 << 20
    assert frozen.original.succeed("systemctl is-system-running").strip() == "running"
    # It was never resumed from the file: its kernel saw no new generation id.
    assert RESEEDED not in frozen.original.succeed("sudo dmesg")


def test_clones_resume_booted_each_with_a_reseeded_rng_and_the_hosts_time(frozen: Frozen) -> None:
    first_boot = frozen.original.boot_id()
    clones = [frozen.restore(f"clone-{n}") for n in (1, 2)]
    try:
        for clone in clones:
            behind = -clone.sync_clock()
            assert behind > 0.5, "a clone resumes with the clock of the moment the checkpoint was saved"
            guest_time = float(clone.succeed("date +%s.%N"))
            assert abs(guest_time - time.time()) < 2.0
            # The same boot as the original's, not a new one: booted, settled, nothing started again.
            assert clone.boot_id() == first_boot
            assert clone.succeed("systemctl is-system-running").strip() == "running"
            assert RESEEDED in clone.succeed("sudo dmesg")
        streams = [c.succeed("head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'") for c in clones]
        assert len(streams[0]) == 64
        assert streams[0] != streams[1]
        # A clone's console starts with the console of the boot that made the checkpoint, as it was when saved.
        before, marker, _ = clones[0].console_text().partition("[railyard: restored from checkpoint")
        assert marker, "a clone's console says where the boot that made the checkpoint ends"
        assert "Ignition finished successfully" in before
        assert frozen.original.console_text().startswith(before.rstrip("\n"))
    finally:
        for clone in clones:
            clone.close()
            frozen.platform.destroy(clone.vm)


def test_a_clones_writes_reach_neither_the_checkpoint_nor_another_clone(frozen: Frozen) -> None:
    before = digest(frozen.checkpoint)
    writer = frozen.restore("writer")
    try:
        assert writer.succeed(f"sudo head -c 5 {EXTRA_DISK}") == "saved"  # what the saved machine wrote
        writer.succeed(f"printf clone | sudo dd of={EXTRA_DISK} conv=fsync status=none")
        writer.succeed("echo mine | sudo tee /var/lib/clone-marker >/dev/null && sync")
        writer.succeed("sudo dd if=/dev/urandom of=/var/tmp/filler bs=1M count=8 status=none && sync")
    finally:
        writer.close()
        frozen.platform.destroy(writer.vm)
    reader = frozen.restore("reader")
    try:
        assert reader.execute("test -e /var/lib/clone-marker").status == 1
        assert reader.execute("test -e /var/tmp/filler").status == 1
        assert reader.succeed(f"sudo head -c 5 {EXTRA_DISK}") == "saved"
    finally:
        reader.close()
        frozen.platform.destroy(reader.vm)
    assert frozen.original.execute("test -e /var/lib/clone-marker").status == 1
    assert digest(frozen.checkpoint) == before


def damaged_copy(frozen: Frozen, name: str) -> CheckpointFiles:
    copy = frozen.root / name
    shutil.copytree(frozen.checkpoint, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    return CheckpointFiles(copy)


def test_a_truncated_or_foreign_checkpoint_is_refused_before_qemu_runs(frozen: Frozen) -> None:
    truncated = damaged_copy(frozen, "truncated")
    with truncated.state.open("r+b") as state:
        state.truncate(truncated.state.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="truncated"):
        frozen.platform.restore(frozen.spec("from-truncated"), truncated.directory)
    foreign = damaged_copy(frozen, "foreign")
    foreign.manifest.write_text(foreign.manifest.read_text().replace("QEMU emulator version", "QEMU 1.0 was"))
    with pytest.raises(CheckpointError, match="saved by"):
        frozen.platform.restore(frozen.spec("from-foreign"), foreign.directory)
    assert [vm.name for vm in frozen.platform.machines] == ["original"]


def test_a_state_qemu_cannot_load_is_refused_and_leaves_no_qemu(frozen: Frozen) -> None:
    garbled = damaged_copy(frozen, "garbled")
    size = garbled.state.stat().st_size
    with garbled.state.open("r+b") as state:  # the same size, but the stream's header is gone
        state.write(b"\0" * min(size, 4096))
    with pytest.raises(CheckpointError, match="could not load it"):
        frozen.platform.restore(frozen.spec("from-garbled"), garbled.directory)
    assert [vm.name for vm in frozen.platform.machines] == ["original"]
    assert qemu_processes_under(frozen.root / "from-garbled") == []
    assert not list((frozen.root / "from-garbled").glob("runtime-*"))
