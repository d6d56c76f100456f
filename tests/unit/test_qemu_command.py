from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.acceleration import Acceleration, Timeouts
from harness.errors import ConfigError, PlatformError
from platforms.base import ExtraNic, FirstBootConfig, MachineSpec, PlatformContext, PrivateNet
from platforms.qemu import QemuPlatform
from platforms.qemu.command import (
    Firmware,
    QemuPaths,
    blank_disk_command,
    forwarded_port,
    overlay_command,
    qemu_command,
    socket_path_fits,
)
from platforms.qemu.process import OWNER_FILE, SOCKET_DIR_FILE, gc_socket_dirs, gc_stale_runtime, write_owner

TCG = Acceleration("tcg", "test")
KVM = Acceleration("kvm", "test")


def make_spec(tmp_path: Path, **kw: object) -> MachineSpec:
    defaults: dict[str, object] = {
        "name": "m1",
        "image": tmp_path / "base.qcow2",
        "ignition": FirstBootConfig("{}", "3.3.0"),
        "ignition_fw_cfg": "opt/com.coreos/config",
        "workdir": tmp_path / "work",
    }
    defaults.update(kw)
    return MachineSpec(**defaults)  # type: ignore[arg-type]


def paths_for(tmp_path: Path, workdir: Path | None = None) -> QemuPaths:
    return QemuPaths.layout(workdir or tmp_path / "work", tmp_path / "run")


def test_a_first_boot_checkpoint_is_asked_for_through_fw_cfg(tmp_path):
    spec = make_spec(tmp_path, checkpoint_stage="firstboot")
    argv = qemu_command(spec, accel=TCG, paths=paths_for(tmp_path), firmware=Firmware.named("bios"))
    assert "name=opt/org.railyard/checkpoint,string=firstboot" in option_value(argv, "-fw_cfg")
    assert "vmgenid,guid=auto" in option_value(argv, "-device")


def option_value(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_tcg_uefi_command(tmp_path):
    spec = make_spec(tmp_path)
    paths = paths_for(tmp_path)
    argv = qemu_command(spec, accel=TCG, paths=paths, firmware=Firmware.named("uefi"))
    assert argv[0] == "qemu-system-x86_64"
    assert option_value(argv, "-machine") == ["q35"]
    assert option_value(argv, "-accel") == ["tcg,thread=multi,tb-size=128"]
    assert option_value(argv, "-cpu") == ["max"]
    assert option_value(argv, "-smp") == ["2"]
    assert option_value(argv, "-m") == ["1024"]
    for flag in ("-nodefaults", "-no-user-config"):
        assert flag in argv
    assert option_value(argv, "-vga") == ["none"]
    assert option_value(argv, "-display") == ["none"]
    # The console goes to a file, never to a socket nobody reads.
    assert option_value(argv, "-chardev") == [f"file,id=con,path={paths.console},append=on"]
    assert option_value(argv, "-serial") == ["chardev:con"]
    assert not any("socket" in a for a in argv)
    drives = option_value(argv, "-drive")
    assert drives[0] == "if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert drives[1] == f"if=pflash,unit=1,format=qcow2,file={paths.vars}"
    assert drives[2].startswith("if=none,id=disk0,format=qcow2,")
    assert drives[2].endswith(f"file={paths.overlay}")
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in option_value(argv, "-device")
    assert option_value(argv, "-fw_cfg") == [
        f"name=opt/com.coreos/config,file={paths.ignition}",
        "name=opt/org.railyard/checkpoint,string=none",  # no first-boot checkpoint asked for
    ]
    assert option_value(argv, "-netdev") == ["user,id=n0,hostfwd=tcp:127.0.0.1:0-:22"]
    devices = option_value(argv, "-device")
    assert "i6300esb" in devices
    assert "virtio-rng-pci" in devices
    assert any(d.startswith("virtio-net-pci,netdev=n0") for d in devices)
    assert option_value(argv, "-action") == ["watchdog=reset"]
    assert option_value(argv, "-qmp") == [f"unix:{paths.qmp_socket},server=on,wait=off"]
    assert option_value(argv, "-pidfile") == [str(paths.pidfile)]


def test_kvm_bios_command(tmp_path):
    spec = make_spec(tmp_path, cpus=4, memory_mib=2048, firmware="bios")
    argv = qemu_command(spec, accel=KVM, paths=paths_for(tmp_path), firmware=Firmware.named("bios"))
    assert option_value(argv, "-accel") == ["kvm"]
    assert option_value(argv, "-cpu") == ["host"]
    assert option_value(argv, "-smp") == ["4"]
    assert option_value(argv, "-m") == ["2048"]
    assert not any("pflash" in a for a in argv)


def test_commas_in_paths_are_escaped(tmp_path):
    workdir = tmp_path / "test_x[a,b]" / "m1"
    paths = paths_for(tmp_path, workdir)
    argv = qemu_command(
        make_spec(tmp_path, workdir=workdir), accel=TCG, paths=paths, firmware=Firmware.named("bios")
    )
    assert option_value(argv, "-chardev") == [
        f"file,id=con,path={str(paths.console).replace(',', ',,')},append=on"
    ]
    assert "test_x[a,,b]" in option_value(argv, "-fw_cfg")[0]


def test_binary_and_name(tmp_path):
    argv = qemu_command(
        make_spec(tmp_path, name="web-1"),
        accel=TCG,
        paths=paths_for(tmp_path),
        firmware=Firmware.named("bios"),
        binary="/opt/qemu/bin/qemu-system-x86_64",
    )
    assert argv[0] == "/opt/qemu/bin/qemu-system-x86_64"
    assert option_value(argv, "-name") == ["web-1"]


def test_command_is_pure(tmp_path):
    qemu_command(make_spec(tmp_path), accel=TCG, paths=paths_for(tmp_path), firmware=Firmware.named("uefi"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("field", "value"), [("cpus", 0), ("memory_mib", 16)])
def test_bad_sizes_rejected(tmp_path, field, value):
    with pytest.raises(ConfigError):
        qemu_command(
            make_spec(tmp_path, **{field: value}),
            accel=TCG,
            paths=paths_for(tmp_path),
            firmware=Firmware.named("bios"),
        )


def test_unknown_firmware():
    with pytest.raises(ConfigError, match="uefi"):
        Firmware.named("coreboot")


def test_overlay_command_uses_absolute_backing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = overlay_command(Path("base.img"), "raw", tmp_path / "o.qcow2")
    assert argv[:7] == ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw"]
    assert argv[argv.index("-b") + 1] == str(tmp_path / "base.img")


USERNET = """Hub -1 (n0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[ESTABLISHED]   22       127.0.0.1 40000       10.0.2.15    22     0     0
  TCP[HOST_FORWARD]  14       127.0.0.1 8080        10.0.2.15    80     0     0
  TCP[HOST_FORWARD]  13       127.0.0.1 35119       10.0.2.15    22     0     0
"""


def test_forwarded_port():
    assert forwarded_port(USERNET) == 35119
    assert forwarded_port(USERNET, guest_port=80) == 8080


def test_forwarded_port_missing():
    with pytest.raises(PlatformError, match="no host forward"):
        forwarded_port("Hub -1 (n0):\n  Protocol[State]    FD\n")


def make_ctx(tmp_path: Path, **options: object) -> PlatformContext:
    return PlatformContext("run", tmp_path, TCG, Timeouts.for_acceleration(TCG), options)


def test_the_platform_registers_only_its_own_options(tmp_path):
    parser = argparse.ArgumentParser()
    QemuPlatform.add_options(parser.add_argument_group("railyard"))
    defaults = parser.parse_args([])
    # The shape options (--cpus, --memory, --firmware) are the harness's, for every platform.
    assert vars(defaults) == {"qemu_binary": "qemu-system-x86_64"}
    platform = QemuPlatform(make_ctx(tmp_path, **vars(defaults)))
    assert platform.name == "qemu"
    assert platform.local


def test_validate_names_the_package(tmp_path):
    platform = QemuPlatform(make_ctx(tmp_path, qemu_binary="/nonexistent/qemu"))
    with pytest.raises(ConfigError, match="qemu-system-x86"):
        platform.validate()


def test_private_net_nic(tmp_path):
    net = PrivateNet(hub_port=40001, mac="52:54:00:cc:00:01", address="10.0.3.1/24")
    argv = qemu_command(
        make_spec(tmp_path, private_net=net),
        accel=TCG,
        paths=paths_for(tmp_path),
        firmware=Firmware.named("bios"),
    )
    assert option_value(argv, "-netdev") == [
        "user,id=n0,hostfwd=tcp:127.0.0.1:0-:22",
        "socket,id=p0,connect=127.0.0.1:40001",
    ]
    assert "virtio-net-pci,netdev=p0,mac=52:54:00:cc:00:01,romfile=" in option_value(argv, "-device")


def test_socket_dir_for_deep_workdirs(tmp_path):
    deep = Path("/x" * 60)
    assert not socket_path_fits(deep / "qmp.sock")
    assert socket_path_fits(Path("/tmp/railyard-qmp-abc/qmp.sock"))
    paths = QemuPaths.layout(deep, deep / "runtime-1", Path("/tmp/railyard-qmp-abc"))
    assert paths.qmp_socket == Path("/tmp/railyard-qmp-abc/qmp.sock")
    assert paths.overlay == deep / "runtime-1" / "disk.qcow2"
    assert paths.console == deep / "console.txt"


def runtime_dir(parent: Path, name: str, owner: int | None) -> Path:
    path = parent / name / f"runtime-{name}"
    path.mkdir(parents=True)
    if owner is not None:
        (path / OWNER_FILE).write_text(f"{owner}\n")
    (path / "disk.qcow2").write_bytes(b"")
    (path.parent / "console.txt").write_text("boot log")
    return path


def test_gc_stale_runtime(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = runtime_dir(tmp_path / "run1" / "test_a", "m1", dead.pid)
    live = runtime_dir(tmp_path / "run2" / "test_b", "m2", 1)  # pid 1 is alive
    fresh = runtime_dir(tmp_path / "run2" / "test_c", "m3", None)  # being created right now
    socket_dir = tmp_path / "railyard-qmp-x"
    socket_dir.mkdir()
    (stale / SOCKET_DIR_FILE).write_text(f"{socket_dir}\n")
    (tmp_path / "run-latest").symlink_to(tmp_path / "run1")
    assert gc_stale_runtime(tmp_path) == [stale]
    assert not stale.exists()
    assert not socket_dir.exists()
    assert (stale.parent / "console.txt").read_text() == "boot log"  # artifacts stay
    assert live.exists()
    assert fresh.exists()
    assert gc_stale_runtime(tmp_path / "missing") == []


def test_write_owner(tmp_path):
    write_owner(tmp_path)
    assert (tmp_path / OWNER_FILE).read_text().strip().isdigit()
    assert not (tmp_path / SOCKET_DIR_FILE).exists()


def test_gc_socket_dirs(tmp_path):
    import os
    import time

    old = time.time() - 3600
    unused = tmp_path / "railyard-qmp-old"
    unused.mkdir()
    (unused / "qmp.sock").write_text("")
    os.utime(unused, (old, old))
    recent = tmp_path / "railyard-qmp-new"
    recent.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    os.utime(other, (old, old))
    assert gc_socket_dirs(tmp_path) == [unused]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["railyard-qmp-new", "something-else"]


INFO_REGISTERS_TWO_CPUS = """
CPU#0
RAX=00000000fee00000 RBX=000000000000001b RCX=0000000000000000 RDX=000000003fe99b48
RSI=0000000000000000 RDI=0000000000000000 RBP=0000000000000000 RSP=000000003fe99b10
RIP=000000003feb1234 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
CR0=80010033 CR2=0000000000000000 CR3=000000003fc01000 CR4=00000668

CPU#1
RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000
RIP=ffffffff81c3f2ab RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
CR0=80050033 CR2=0000000000000000 CR3=0000000002a0e000 CR4=00350ef0
"""


def test_register_summary_names_each_cpus_position_and_state():
    from platforms.qemu import register_summary

    summary = register_summary(INFO_REGISTERS_TWO_CPUS)
    first, second = summary.split("; ")
    assert first.startswith("CPU#0 RIP=000000003feb1234 CPL=0 HLT=0 SMM=0 CR0=80010033")
    assert "RBX=000000000000001b" in first
    assert second.startswith("CPU#1 RIP=ffffffff81c3f2ab CPL=0 HLT=1")
    assert register_summary("") == "no registers"


# -- machine options (markers disks, nics, memory, firmware, kargs) --------------------------------------


def test_extra_disks_follow_the_boot_disk_with_serials_and_files_in_the_runtime_dir(tmp_path):
    spec = make_spec(tmp_path, extra_disks_mib=(64, 2048))
    paths = paths_for(tmp_path)
    argv = qemu_command(spec, accel=TCG, paths=paths, firmware=Firmware.named("bios"))
    drives = option_value(argv, "-drive")
    assert [d.split(",")[1] for d in drives] == ["id=disk0", "id=disk1", "id=disk2"]
    assert drives[1].endswith(f"file={tmp_path / 'run' / 'disk1.qcow2'}")
    assert paths.extra_disk(2) == tmp_path / "run" / "disk2.qcow2"
    disks = [d for d in option_value(argv, "-device") if d.startswith("virtio-blk-pci")]
    assert disks == [
        "virtio-blk-pci,drive=disk0,bootindex=1",
        "virtio-blk-pci,drive=disk1,serial=railyard-disk1",
        "virtio-blk-pci,drive=disk2,serial=railyard-disk2",
    ]


def test_no_machine_options_leave_the_command_as_it_was(tmp_path):
    argv = qemu_command(
        make_spec(tmp_path), accel=TCG, paths=paths_for(tmp_path), firmware=Firmware.named("bios")
    )
    assert len(option_value(argv, "-drive")) == 1
    assert "-smbios" not in argv
    assert option_value(argv, "-netdev") == ["user,id=n0,hostfwd=tcp:127.0.0.1:0-:22"]


def test_a_blank_disk_is_a_qcow2_of_the_asked_size(tmp_path):
    import json
    import subprocess

    path = tmp_path / "disk1.qcow2"
    argv = blank_disk_command(path, 64)
    assert argv == ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"]
    subprocess.run(argv, check=True)  # qemu-img only: nothing boots
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True,
                                     text=True, check=True).stdout)  # fmt: skip
    assert (info["format"], info["virtual-size"]) == ("qcow2", 64 << 20)


def test_extra_nics_are_on_hub_segments_on_loopback_only(tmp_path):
    nics = (ExtraNic(41001, "52:54:00:ee:01:01"), ExtraNic(41002, "52:54:00:ee:02:01"))
    net = PrivateNet(hub_port=40000, mac="52:54:00:cc:00:01", address="10.0.3.1/24")
    argv = qemu_command(make_spec(tmp_path, extra_nics=nics, private_net=net), accel=TCG,
                        paths=paths_for(tmp_path), firmware=Firmware.named("bios"))  # fmt: skip
    netdevs = option_value(argv, "-netdev")
    assert netdevs == [
        "user,id=n0,hostfwd=tcp:127.0.0.1:0-:22",
        "socket,id=p0,connect=127.0.0.1:40000",
        "socket,id=x1,connect=127.0.0.1:41001",
        "socket,id=x2,connect=127.0.0.1:41002",
    ]
    nic_devices = [d for d in option_value(argv, "-device") if d.startswith("virtio-net-pci")]
    assert nic_devices[2:] == [
        "virtio-net-pci,netdev=x1,mac=52:54:00:ee:01:01,romfile=",
        "virtio-net-pci,netdev=x2,mac=52:54:00:ee:02:01,romfile=",
    ]


def test_kernel_arguments_are_smbios_type_11_strings_with_commas_escaped(tmp_path):
    spec = make_spec(tmp_path, kernel_args=("console=ttyS0,115200", "foo=bar"))
    argv = qemu_command(spec, accel=TCG, paths=paths_for(tmp_path), firmware=Firmware.named("uefi"))
    assert option_value(argv, "-smbios") == [
        "type=11,value=io.systemd.boot.kernel-cmdline-extra=console=ttyS0,,115200 foo=bar",
        "type=11,value=io.systemd.stub.kernel-cmdline-extra=console=ttyS0,,115200 foo=bar",
    ]


def test_a_tests_memory_is_the_machines(tmp_path):
    argv = qemu_command(make_spec(tmp_path, memory_mib=1536), accel=TCG, paths=paths_for(tmp_path),
                        firmware=Firmware.named("bios"))  # fmt: skip
    assert option_value(argv, "-m") == ["1536"]


def test_uefi_asked_for_by_a_test_needs_the_firmware_files(tmp_path, monkeypatch):
    image = tmp_path / "base.qcow2"
    image.write_bytes(b"")
    platform = QemuPlatform(PlatformContext("r", tmp_path, TCG, Timeouts.for_acceleration(TCG), {}))
    missing = Firmware("uefi", tmp_path / "no-CODE.fd", tmp_path / "no-VARS.fd")
    monkeypatch.setattr(Firmware, "named", classmethod(lambda cls, kind: missing))
    try:
        with pytest.raises(ConfigError, match=r"UEFI firmware file .*no-CODE\.fd is missing"):
            platform.boot(make_spec(tmp_path, firmware="uefi"))
    finally:
        platform.close()
    assert not (tmp_path / "work").exists(), "refused before anything is made"
