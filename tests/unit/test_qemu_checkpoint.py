"""What a QEMU checkpoint depends on (its signature) and how a damaged one is recognised before QEMU runs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from harness.acceleration import Acceleration
from harness.errors import CheckpointError, PlatformError
from platforms.base import ExtraNic, FirstBootConfig, MachineSpec, PrivateNet
from platforms.qemu import checkpoint
from platforms.qemu.checkpoint import CheckpointFiles, check, signature
from platforms.qemu.command import Firmware

TCG = Acceleration("tcg", "test")
VERSION = "QEMU emulator version 7.2.22"


@pytest.fixture(autouse=True)
def fixed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "qemu_version", lambda binary: VERSION)


def spec_in(tmp_path: Path, **kw: object) -> MachineSpec:
    image = tmp_path / "image.qcow2"
    if not image.exists():
        image.write_bytes(b"image")
    values: dict[str, object] = {
        "name": "m1",
        "image": image,
        "ignition": FirstBootConfig("{}", "3.3.0"),
        "ignition_fw_cfg": "opt/com.coreos/config",
        "workdir": tmp_path / "m1",
    }
    values.update(kw)
    return MachineSpec(**values)  # type: ignore[arg-type]


def sig(spec: MachineSpec, firmware: str = "bios") -> str:
    return signature(spec, accel=TCG, firmware=Firmware.named(firmware), binary="qemu-system-x86_64")


def test_the_signature_leaves_out_what_is_the_machines_own(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    other = dataclasses.replace(spec, name="another-test-1", workdir=tmp_path / "elsewhere", test_id="t::x")
    assert sig(spec) == sig(other)
    assert "elsewhere" not in sig(other)
    assert "another-test" not in sig(other)


@pytest.mark.parametrize(
    "change",
    [
        {"memory_mib": 2048},
        {"cpus": 1},
        {"ssh_user": "root"},
        {"ignition_fw_cfg": "opt/org.flatcar-linux/config"},
    ],
)
def test_the_signature_changes_with_the_machine_shape(tmp_path: Path, change: dict[str, object]) -> None:
    spec = spec_in(tmp_path)
    assert sig(spec) != sig(dataclasses.replace(spec, **change))  # type: ignore[arg-type]


def test_the_signature_changes_with_the_image_firmware_and_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_in(tmp_path)
    before = sig(spec)
    if checkpoint.OVMF_CODE.exists():
        assert sig(spec, "uefi") != before
    spec.image.write_bytes(b"a rebuilt image")
    assert sig(spec) != before
    rebuilt = sig(spec)
    monkeypatch.setattr(checkpoint, "qemu_version", lambda binary: "QEMU emulator version 8.2.0")
    assert sig(spec) != rebuilt
    # The vmgenid device is part of every machine, so every checkpoint resumes with a new generation id.
    assert "vmgenid,guid=auto" in json.loads(before)["command"]


def saved(tmp_path: Path, uefi: bool = False) -> CheckpointFiles:
    files = CheckpointFiles(tmp_path / "ckpt")
    files.directory.mkdir()
    files.state.write_bytes(b"s" * 100)
    files.disk.write_bytes(b"d" * 10)
    if uefi:
        files.vars.write_bytes(b"v")
    manifest = {"qemu": VERSION, "state_bytes": 100, "disk_bytes": 10, "uefi": uefi}
    files.manifest.write_text(json.dumps(manifest))
    return files


def test_a_whole_checkpoint_passes(tmp_path: Path) -> None:
    assert check(saved(tmp_path, uefi=True), version=VERSION)["state_bytes"] == 100


def test_a_truncated_state_is_refused(tmp_path: Path) -> None:
    files = saved(tmp_path)
    files.state.write_bytes(b"s" * 40)
    with pytest.raises(CheckpointError, match="state has 40 bytes, 100 were saved"):
        check(files, version=VERSION)


def test_a_checkpoint_of_another_qemu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"saved by 'QEMU emulator version 7\.2\.22'"):
        check(saved(tmp_path), version="QEMU emulator version 8.2.0")


def test_missing_parts_are_refused(tmp_path: Path) -> None:
    files = saved(tmp_path, uefi=True)
    files.vars.unlink()
    with pytest.raises(CheckpointError, match=r"vars\.qcow2 is missing"):
        check(files, version=VERSION)
    files.manifest.unlink()
    with pytest.raises(CheckpointError, match=r"no readable qemu\.json"):
        check(files, version=VERSION)


@pytest.mark.parametrize(
    "change",
    [
        {"extra_disks_mib": (64,)},
        {"kernel_args": ("foo=bar",)},
        {"extra_nics": (ExtraNic(4000, "52:54:00:ee:01:01"),)},
    ],
)
def test_the_signature_changes_with_the_tests_machine_options(
    tmp_path: Path, change: dict[str, object]
) -> None:
    spec = spec_in(tmp_path)
    assert sig(spec) != sig(dataclasses.replace(spec, **change))  # type: ignore[arg-type]


def test_the_signature_holds_the_sizes_of_extra_disks(tmp_path: Path) -> None:
    spec = spec_in(tmp_path, extra_disks_mib=(64,))
    assert sig(spec) != sig(dataclasses.replace(spec, extra_disks_mib=(128,)))
    assert json.loads(sig(spec))["disks_mib"] == [64]
    assert "disks_mib" not in json.loads(sig(spec_in(tmp_path))), "a plain machine's key is what it was"


def test_the_signature_leaves_out_the_hub_port_of_extra_nics(tmp_path: Path) -> None:
    spec = spec_in(tmp_path, extra_nics=(ExtraNic(4000, "52:54:00:ee:01:01"),))
    assert sig(spec) == sig(dataclasses.replace(spec, extra_nics=(ExtraNic(5000, "52:54:00:ee:01:01"),)))
    assert sig(spec) != sig(dataclasses.replace(spec, extra_nics=(ExtraNic(4000, "52:54:00:ee:01:02"),)))


def test_the_signature_leaves_out_the_hub_port_of_the_private_network(tmp_path: Path) -> None:
    spec = spec_in(tmp_path, private_net=PrivateNet(4000, "52:54:00:cc:00:01", "10.0.3.1/24"))
    other_run = dataclasses.replace(spec, private_net=PrivateNet(5000, "52:54:00:cc:00:01", "10.0.3.1/24"))
    assert sig(spec) == sig(other_run)
    assert sig(spec) != sig(
        dataclasses.replace(spec, private_net=PrivateNet(4000, "52:54:00:cc:00:02", "10.0.3.2/24"))
    )
    assert sig(spec) != sig(spec_in(tmp_path))


class _SavingQmp:
    """A QMP client that saves a machine as QEMU does: `migrate` writes the state where its URI says."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def execute(self, command: str, arguments: dict[str, object] | None = None) -> dict[str, object]:
        self.commands.append(command)
        if command == "migrate":
            assert arguments is not None
            Path(str(arguments["uri"]).split("> ", 1)[1].strip("'")).write_bytes(b"state")
        return {"status": "completed"} if command == "query-migrate" else {}


def test_a_machines_extra_disks_are_saved_with_it_and_checked(tmp_path: Path) -> None:
    from platforms.qemu.command import QemuPaths

    paths = QemuPaths.layout(tmp_path / "m1", tmp_path / "m1" / "runtime")
    paths.overlay.parent.mkdir(parents=True)
    for path, data in ((paths.overlay, b"root"), (paths.console, b"console"), (paths.extra_disk(1), b"one"),
                       (paths.extra_disk(2), b"two!")):  # fmt: skip
        path.write_bytes(data)
    files = CheckpointFiles(tmp_path / "ckpt")
    files.directory.mkdir()
    qmp = _SavingQmp()
    checkpoint.freeze(qmp, paths, files, version=VERSION, timeout=5, extra_disks=2)  # type: ignore[arg-type]
    assert qmp.commands[0] == "stop"
    assert qmp.commands[-1] == "cont"
    assert files.extra_disk(1).read_bytes() == b"one"
    assert files.extra_disk(2).read_bytes() == b"two!"
    assert check(files, version=VERSION)["extra_disk_bytes"] == [3, 4]
    files.extra_disk(2).chmod(0o644)
    files.extra_disk(2).write_bytes(b"tw")
    with pytest.raises(CheckpointError, match=r"disk2\.qcow2 has 2 bytes, 4 were saved"):
        check(files, version=VERSION)
    files.extra_disk(2).unlink()
    with pytest.raises(CheckpointError, match=r"disk2\.qcow2 is missing"):
        check(files, version=VERSION)


class _BrokenQmp:
    """A QMP client whose socket is reset, as it is when QEMU exits while it rejects a stream."""

    def execute(self, command: str, arguments: dict[str, object] | None = None) -> dict[str, object]:
        raise PlatformError(f"QMP: {command}: connection reset by peer")


def test_a_qmp_reset_while_qemu_exits_is_reported_as_a_refused_state(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path / "cp")
    log = tmp_path / "qemu.log"
    log.write_text("qemu-system-x86_64: load of migration failed: Invalid argument\n")
    exiting = subprocess.Popen(["sh", "-c", "sleep 0.3; exit 1"])
    with pytest.raises(CheckpointError, match=r"could not load it and exited \(1\).*Invalid argument"):
        checkpoint.receive(_BrokenQmp(), exiting, files, log, timeout=5)  # type: ignore[arg-type]


def test_a_qmp_failure_of_a_qemu_that_lives_on_is_reported_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "EXIT_GRACE", 0.2)
    living = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(CheckpointError, match="loading it failed: QMP: migrate-incoming"):
            files = CheckpointFiles(tmp_path / "cp")
            checkpoint.receive(_BrokenQmp(), living, files, tmp_path / "log", timeout=5)  # type: ignore[arg-type]
    finally:
        living.kill()
        living.wait()
