"""Booted checkpoints on QEMU, for real: one cold boot saved, clones restored from it.

Each clone must be a machine of its own: an RNG reseeded at resume (vmgenid), the host's time, a disk whose
writes reach neither the checkpoint nor another clone. A damaged checkpoint is refused before or while QEMU
loads it, and leaves no QEMU behind.
"""

from __future__ import annotations

import hashlib
import os
import re
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
from tests.integration.helpers import qemu_processes_under, run_inner

RESEEDED = "crng reseeded due to virtual machine fork"


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
            workdir=self.root / name, ssh_user=self.distro.default_user, cpus=1,
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
        console = clones[0].console_text()
        assert " login: " in console.split("[railyard: restored from checkpoint")[0]
    finally:
        for clone in clones:
            clone.close()
            frozen.platform.destroy(clone.vm)


def test_a_clones_writes_reach_neither_the_checkpoint_nor_another_clone(frozen: Frozen) -> None:
    before = digest(frozen.checkpoint)
    writer = frozen.restore("writer")
    try:
        writer.succeed("echo mine | sudo tee /var/lib/clone-marker >/dev/null && sync")
        writer.succeed("sudo dd if=/dev/urandom of=/var/tmp/filler bs=1M count=8 status=none && sync")
    finally:
        writer.close()
        frozen.platform.destroy(writer.vm)
    reader = frozen.restore("reader")
    try:
        assert reader.execute("test -e /var/lib/clone-marker").status == 1
        assert reader.execute("test -e /var/tmp/filler").status == 1
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


PROPERTY = re.compile(r'<property name="start (?P<machine>[^"]+)" value="(?P<value>[^"]+)"')


def starts(xml: Path) -> dict[str, str]:
    return {m["machine"]: m["value"] for m in PROPERTY.finditer(xml.read_text())}


def test_the_plugin_restores_machines_and_boots_cold_past_a_damaged_checkpoint(
    pytester: pytest.Pytester,
) -> None:
    """A machine of a config seen before boots cold and saves the checkpoint; the next is restored from it; a
    checkpoint QEMU refuses is dropped, and the machine boots cold (and saves it anew) with a note."""
    pytester.makepyfile(
        test_two="""
        def test_first(machine):
            assert machine.succeed("systemctl is-system-running").strip() == "running"

        def test_second(machine):
            assert machine.succeed("systemctl is-system-running").strip() == "running"
        """
    )
    store = pytester.path / "checkpoints"
    xml = pytester.path / "report.xml"
    warm = ("--warm=booted", "--checkpoint-dir", str(store), f"--junitxml={xml}")
    result = run_inner(pytester, *warm, "-k", "first", "test_two.py")
    result.assert_outcomes(passed=1, deselected=1)
    once = starts(xml)["test_first-1"]
    assert once.startswith("cold in "), once
    assert "saved" not in once, "a config seen once is not worth a checkpoint"
    result = run_inner(pytester, *warm, "test_two.py")
    result.assert_outcomes(passed=2)
    first = starts(xml)
    assert first["test_first-1"].startswith("cold in "), first
    assert "saved as checkpoint" in first["test_first-1"], "it came back: now it is worth one"
    [made] = [p for p in store.iterdir() if not p.name.startswith(".")]
    assert (
        first["test_second-1"] == f"restored-booted in {first['test_second-1'].split()[2]} s from {made.name}"
    )

    state = made / "state"
    state.chmod(0o644)
    with state.open("r+b") as stream:  # the same size, unreadable to QEMU
        stream.write(b"\0" * 4096)
    result = run_inner(pytester, *warm, "-k", "first", "test_two.py")
    result.assert_outcomes(passed=1, deselected=1)
    again = starts(xml)["test_first-1"]
    assert again.startswith("cold in "), again
    assert "checkpoint dropped:" in again
    assert "could not load it" in again
    assert (made / "state").read_bytes()[:4096] != b"\0" * 4096, "the checkpoint was saved anew"


def test_first_boot_checkpoints_run_ignition_with_each_machines_own_config(pytester: pytest.Pytester) -> None:
    """Machines restored from the first-boot checkpoint (taken in the initramfs before Ignition) get their
    own config, machine id and host keys, not those of the boot that made the checkpoint."""
    pytester.makepyfile(
        test_own="""
        import pytest
        from harness.ignition import IgnitionConfig

        def config(text):
            return IgnitionConfig().add_file("/etc/railyard/which", text + "\\n").to_dict()

        def identity(machine):
            return {
                "which": machine.succeed("cat /etc/railyard/which").strip(),
                "machine-id": machine.succeed("cat /etc/machine-id").strip(),
                "host-key": machine.succeed("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1],
                "ignition": machine.succeed("sudo journalctl -b -o cat -u ignition-files.service"),
                "console": machine.console_text(),
            }

        SEEN = []

        @pytest.mark.ignition(config("one"))
        def test_one(machine):
            SEEN.append(identity(machine))
            assert SEEN[-1]["which"] == "one"

        @pytest.mark.ignition(config("two"))
        def test_two(machine):
            SEEN.append(identity(machine))
            one, two = SEEN
            assert two["which"] == "two"
            assert one["machine-id"] != two["machine-id"]
            assert one["host-key"] != two["host-key"]
            # Ignition ran in this boot, after the resume, with this machine's own config.
            assert 'writing file "/sysroot/etc/railyard/which"' in two["ignition"]
            before, after = two["console"].split("[railyard: restored from checkpoint", 1)
            assert "first-boot checkpoint: waiting before Ignition" in before
            assert "first-boot checkpoint: resumed as none" in after
        """
    )
    store = pytester.path / "checkpoints"
    xml = pytester.path / "report.xml"
    result = run_inner(
        pytester, "--warm=firstboot", "--checkpoint-dir", str(store), f"--junitxml={xml}", "test_own.py"
    )
    result.assert_outcomes(passed=2)
    made = starts(xml)
    assert made["test_one-1"].startswith("restored-firstboot in "), made
    assert "first-boot checkpoint made in" in made["test_one-1"]
    assert made["test_two-1"].startswith("restored-firstboot in "), made
    [checkpoint] = [p for p in store.iterdir() if not p.name.startswith(".")]
    assert '"kind": "firstboot"' in (checkpoint / "checkpoint.json").read_text()
