"""The libvirt domain and volume XML, rendered without libvirt and read back as XML."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.acceleration import Acceleration
from harness.errors import ConfigError
from platforms.base import ExtraNic, FirstBootConfig, MachineSpec, PrivateNet
from platforms.libvirt.gc import disk_volume_name, disk_volumes, owner_alive, pid_start_time, why_garbage
from platforms.libvirt.storage import parse_uri
from platforms.libvirt.xml import (
    METADATA_NS,
    QEMU_NS,
    DomainFiles,
    LibvirtFirmware,
    OwnerRecord,
    domain_name,
    domain_xml,
    extra_disk_target,
    parse_owner,
    pool_xml,
    volume_xml,
)

TCG = Acceleration("tcg", "test")
KVM = Acceleration("kvm", "test")
UEFI = LibvirtFirmware("uefi", Path("/fw/CODE.fd"), Path("/fw/VARS.fd"))
FILES = DomainFiles(Path("/pool/d.qcow2"), Path("/pool/d.ign"), Path("/pool/d.console"))
OWNER = OwnerRecord("20250101-000000-abcd", "m1", 4242, "host-a", 777, 1700000000.0, "suite/test_x.py::t")


def spec(**changes: object) -> MachineSpec:
    values: dict[str, object] = {
        "name": "m1",
        "image": Path("/images/base.qcow2"),
        "ignition": FirstBootConfig.parse('{"ignition": {"version": "3.3.0"}}'),
        "ignition_fw_cfg": "opt/com.coreos/config",
        "workdir": Path("/out/m1"),
        "memory_mib": 768,
        "cpus": 3,
    }
    values.update(changes)
    return MachineSpec(**values)  # type: ignore[arg-type]


def render(accel: Acceleration = TCG, firmware: LibvirtFirmware = UEFI, **changes: object) -> ET.Element:
    text = domain_xml(spec(**changes), name="railyard-r-m1", accel=accel, firmware=firmware, files=FILES,
                      owner=OWNER)  # fmt: skip
    return ET.fromstring(text)


def qemu_args(domain: ET.Element) -> list[str]:
    return [arg.attrib["value"] for arg in domain.iter(f"{{{QEMU_NS}}}arg")]


@pytest.mark.parametrize(
    ("accel", "domain_type", "cpu_mode"), [(TCG, "qemu", "maximum"), (KVM, "kvm", "host-passthrough")]
)
def test_domain_type_follows_acceleration(accel, domain_type, cpu_mode):
    domain = render(accel)
    assert domain.attrib["type"] == domain_type
    assert domain.find("cpu").attrib["mode"] == cpu_mode


def test_memory_cpus_and_name_come_from_the_spec():
    domain = render()
    assert domain.findtext("name") == "railyard-r-m1"
    assert domain.find("memory").attrib["unit"] == "MiB"
    assert domain.findtext("memory") == "768"
    assert domain.findtext("vcpu") == "3"
    assert domain.find("os/type").attrib["machine"] == "q35"


def test_ignition_goes_to_fw_cfg_under_the_distro_name():
    domain = render(ignition_fw_cfg="opt/org.flatcar-linux/config")
    [entry] = domain.findall("sysinfo[@type='fwcfg']/entry")
    assert entry.attrib == {"name": "opt/org.flatcar-linux/config", "file": "/pool/d.ign"}


def test_fw_cfg_name_outside_opt_is_refused():
    with pytest.raises(ConfigError, match="opt/"):
        render(ignition_fw_cfg="etc/config")


def test_ssh_is_forwarded_on_loopback_only_with_a_port_qemu_picks():
    args = qemu_args(render())
    netdevs = [args[i + 1] for i, arg in enumerate(args) if arg == "-netdev"]
    assert netdevs == ["user,id=railyard-net0,hostfwd=tcp:127.0.0.1:0-:22"]
    devices = [args[i + 1] for i, arg in enumerate(args) if arg == "-device"]
    # q35: an explicit slot on the root bus, away from libvirt's own root ports.
    assert devices == ["virtio-net-pci,netdev=railyard-net0,bus=pcie.0,addr=0x10,romfile="]
    assert render().find("devices/interface") is None, "no libvirt network interface"


def test_private_net_is_a_second_nic_to_the_hub_on_loopback():
    net = PrivateNet(hub_port=40000, mac="52:54:00:cc:00:01", address="10.0.3.1/24")
    args = qemu_args(render(private_net=net))
    assert "socket,id=railyard-net1,connect=127.0.0.1:40000" in args
    assert "virtio-net-pci,netdev=railyard-net1,mac=52:54:00:cc:00:01,bus=pcie.0,addr=0x11,romfile=" in args


def test_uefi_has_read_only_code_and_a_per_domain_nvram_from_the_template():
    os_element = render().find("os")
    loader = os_element.find("loader")
    assert loader.text == "/fw/CODE.fd"
    assert loader.attrib["readonly"] == "yes"
    assert loader.attrib["type"] == "pflash"
    nvram = os_element.find("nvram")
    assert nvram.attrib["template"] == "/fw/VARS.fd"
    assert not (nvram.text or "").strip(), "libvirt picks the per-domain NVRAM path (removed on undefine)"


def test_bios_has_no_loader():
    os_element = render(firmware=LibvirtFirmware("bios")).find("os")
    assert os_element.find("loader") is None
    assert os_element.find("nvram") is None


def test_disk_is_the_overlay_volume_as_qcow2():
    [disk] = render().findall("devices/disk")
    assert disk.find("source").attrib["file"] == "/pool/d.qcow2"
    assert disk.find("driver").attrib["type"] == "qcow2"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}


def test_overlay_volume_is_backed_by_the_base_volume():
    volume = ET.fromstring(
        volume_xml("d.qcow2", capacity=4 << 30, fmt="qcow2", backing=Path("/pool/base.qcow2"), mode="0600")
    )
    assert volume.findtext("name") == "d.qcow2"
    assert volume.findtext("capacity") == str(4 << 30)
    assert volume.find("target/format").attrib["type"] == "qcow2"
    assert volume.findtext("backingStore/path") == "/pool/base.qcow2"
    assert volume.find("backingStore/format").attrib["type"] == "qcow2"
    assert volume.findtext("target/permissions/mode") == "0600"


def test_raw_volume_has_no_backing():
    volume = ET.fromstring(volume_xml("d.ign", capacity=12))
    assert volume.find("target/format").attrib["type"] == "raw"
    assert volume.find("backingStore") is None


def test_serial_console_is_logged_to_the_console_volume():
    [serial] = render().findall("devices/serial")
    assert serial.attrib["type"] == "pty"
    assert serial.find("log").attrib == {"file": "/pool/d.console", "append": "on"}


def test_metadata_records_the_owner_and_reads_back():
    [element] = render().find("metadata")
    assert element.tag == f"{{{METADATA_NS}}}run"
    assert element.attrib["id"] == OWNER.run_id
    assert element.attrib["owner_pid"] == "4242"
    assert parse_owner(ET.tostring(element, encoding="unicode")) == OWNER


@pytest.mark.parametrize("text", ["", "<other/>", "<run id='x'/>", "not xml"])
def test_foreign_or_broken_metadata_is_not_an_owner(text):
    assert parse_owner(text) is None


def test_domain_names_carry_run_and_machine_and_are_file_safe():
    assert domain_name("20250101-000000-abcd", "test_x-1") == "railyard-20250101-000000-abcd-test_x-1"
    assert "/" not in domain_name("r", "a/b c")
    assert len(domain_name("r", "x" * 200)) <= 80


def test_too_little_memory_is_refused():
    with pytest.raises(ConfigError, match="too little"):
        render(memory_mib=64)


def test_pool_is_a_directory_pool():
    pool = ET.fromstring(pool_xml("railyard", Path("/var/lib/libvirt/images/railyard")))
    assert pool.attrib["type"] == "dir"
    assert pool.findtext("target/path") == "/var/lib/libvirt/images/railyard"


@pytest.mark.parametrize(
    ("uri", "local", "session"),
    [
        ("qemu:///system", True, False),
        ("qemu:///session", True, True),
        ("qemu+unix:///session?socket=/run/u/libvirt/libvirt-sock", True, True),
        ("qemu+ssh://root@hv1/system", False, False),
        ("qemu+tcp://hv2/session", False, True),
    ],
)
def test_uri_says_where_the_hypervisor_is(uri, local, session):
    address = parse_uri(uri)
    assert (address.local, address.session) == (local, session)


@pytest.mark.parametrize("uri", ["xen:///system", "qemu:///elsewhere", "not a uri"])
def test_unsupported_uris_are_config_errors(uri):
    with pytest.raises(ConfigError, match="--libvirt-uri"):
        parse_uri(uri)


def test_gc_rule_liveness_then_age():
    now = OWNER.created + 60
    gone = OwnerRecord("r", "m", 999999999, "host-a", 1, OWNER.created)
    assert owner_alive(gone, host="host-a") is False
    assert why_garbage(gone, None, now, host="host-a") == "owner pid 999999999 is gone"
    me = OwnerRecord("r", "m", os.getpid(), "host-a", pid_start_time(os.getpid()), OWNER.created)
    assert why_garbage(me, None, now, host="host-a") is None
    reused = OwnerRecord("r", "m", os.getpid(), "host-a", pid_start_time(os.getpid()) + 1, OWNER.created)
    assert why_garbage(reused, None, now, host="host-a") == f"owner pid {os.getpid()} is gone"
    assert why_garbage(me, 30.0, now, host="host-a") == "created 1 min ago"
    foreign = OwnerRecord("r", "m", os.getpid(), "elsewhere", 1, OWNER.created)
    assert owner_alive(foreign, host="host-a") is None
    assert why_garbage(foreign, None, now, host="host-a") is None
    assert "elsewhere" in (why_garbage(foreign, None, OWNER.created + 7 * 3600, host="host-a") or "")


def platform(uris: list[str]):
    from harness.acceleration import Timeouts
    from platforms.base import PlatformContext
    from platforms.libvirt import LibvirtPlatform

    ctx = PlatformContext("r", Path("/out"), TCG, Timeouts.for_acceleration(TCG), {"libvirt_uri": uris})
    return LibvirtPlatform(ctx)


def test_machines_go_round_robin_and_each_worker_starts_elsewhere(monkeypatch):
    uris = ["qemu:///system", "qemu:///session"]
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    first = platform(uris)
    assert [first.pick().uri for _ in range(3)] == [uris[0], uris[1], uris[0]]
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert platform(uris).pick().uri == uris[1]


@pytest.mark.parametrize("uri", ["qemu+tcp://hv1/system", "qemu+tls://hv1/system", "qemu://hv1/system"])
def test_remote_hypervisors_without_ssh_are_refused_before_any_connection(uri):
    pytest.importorskip("libvirt")
    with pytest.raises(ConfigError, match=r"SSH transport \(qemu\+ssh://user@hv1/system"):
        platform([uri]).validate()


def test_a_qemu_ssh_uri_names_the_jump_to_its_guests_as_libvirt_reads_it():
    address = parse_uri(
        "qemu+ssh://ops@hv1:2222/system?keyfile=/k/id_ed25519&known_hosts=/k/known&no_verify=1"
    )
    jump = address.jump_address()
    assert jump is not None
    assert (jump.host, jump.user, jump.port) == ("hv1", "ops", 2222)
    assert (jump.key_file, jump.known_hosts, jump.verify_host_key) == (
        Path("/k/id_ed25519"),
        Path("/k/known"),
        False,
    )
    assert jump.known_hosts_files() == [Path("/k/known")]


def test_a_qemu_ssh_uri_defaults_to_this_user_port_22_and_checked_host_keys():
    import getpass

    jump = parse_uri("qemu+ssh://hv1/system").jump_address()
    assert jump is not None
    assert (jump.user, jump.port, jump.key_file, jump.verify_host_key) == (getpass.getuser(), 22, None, True)
    assert parse_uri("qemu:///system").jump_address() is None
    assert parse_uri("qemu+tcp://hv1/system").jump_address() is None


def test_the_jump_reads_as_an_openssh_proxy_command():
    import shlex

    jump = parse_uri("qemu+ssh://ops@hv1:2222/system?keyfile=/k/id&known_hosts=/k/known").jump_address()
    assert jump is not None
    option, command = jump.ssh_options()
    assert option == "-o"
    assert command.startswith("ProxyCommand=")
    assert shlex.split(command.removeprefix("ProxyCommand=")) == [
        "ssh", "-p", "2222", "-i", "/k/id", "-o", "UserKnownHostsFile=/k/known", "-W", "%h:%p", "ops@hv1"
    ]  # fmt: skip


def test_a_remote_hypervisor_takes_away_private_networks_and_extra_nics():
    from platforms.base import CAP_PRIVATE_NETWORK, OPTION_DISKS, OPTION_NICS
    from platforms.libvirt import LibvirtPlatform

    local = {"libvirt_uri": ["qemu:///system"]}
    remote = {"libvirt_uri": ["qemu:///system", "qemu+ssh://root@hv1/system"]}
    assert CAP_PRIVATE_NETWORK in LibvirtPlatform.run_capabilities(local)
    assert CAP_PRIVATE_NETWORK in LibvirtPlatform.run_capabilities({})
    assert CAP_PRIVATE_NETWORK not in LibvirtPlatform.run_capabilities(remote)
    assert LibvirtPlatform.run_option_refusal(local, OPTION_NICS) is None
    assert "qemu+ssh://root@hv1/system" in (LibvirtPlatform.run_option_refusal(remote, OPTION_NICS) or "")
    assert LibvirtPlatform.run_option_refusal(remote, OPTION_DISKS) is None
    with pytest.raises(ConfigError, match="remote hypervisor qemu\\+ssh://root@hv1/system"):
        platform(remote["libvirt_uri"]).private_network()


# -- machine options (markers disks, nics, memory, firmware, kargs) --------------------------------------

DISK_FILES = DomainFiles(
    Path("/pool/d.qcow2"),
    Path("/pool/d.ign"),
    Path("/pool/d.console"),
    (Path("/pool/d.disk1.qcow2"), Path("/pool/d.disk2.qcow2")),
)


def render_with(files: DomainFiles, **changes: object) -> ET.Element:
    text = domain_xml(
        spec(**changes), name="railyard-r-m1", accel=TCG, firmware=UEFI, files=files, owner=OWNER
    )
    return ET.fromstring(text)


def test_extra_disks_are_virtio_volumes_with_serials_after_the_boot_disk():
    boot, first, second = render_with(DISK_FILES, extra_disks_mib=(64, 128)).findall("devices/disk")
    assert boot.find("boot") is not None
    assert first.find("boot") is None
    assert first.find("source").attrib["file"] == "/pool/d.disk1.qcow2"
    assert first.find("driver").attrib["type"] == "qcow2"
    assert first.find("target").attrib == {"dev": "vdb", "bus": "virtio"}
    assert first.findtext("serial") == "railyard-disk1"
    assert second.find("target").attrib["dev"] == "vdc"
    assert second.findtext("serial") == "railyard-disk2"


def test_extra_disks_and_their_volumes_must_agree():
    with pytest.raises(ConfigError, match="1 extra disks asked for, 2 volumes given"):
        render_with(DISK_FILES, extra_disks_mib=(64,))


def test_extra_disk_volumes_are_named_after_the_domain():
    assert disk_volume_name("railyard-r-m1", 2) == "railyard-r-m1.disk2.qcow2"
    assert extra_disk_target(1) == "vdb"
    with pytest.raises(ConfigError):
        extra_disk_target(26)


def test_extra_disk_volumes_are_removed_with_their_domain():
    class Volume:
        def __init__(self, name: str) -> None:
            self._name = name

        def name(self) -> str:
            return self._name

    class Pool:
        def listAllVolumes(self, flags: int) -> list[Volume]:
            names = ["railyard-r-m1.qcow2", "railyard-r-m1.disk1.qcow2", "railyard-r-m1.disk12.qcow2",
                     "railyard-r-m10.disk1.qcow2", "railyard-r-m1.disk1.qcow2.bak"]  # fmt: skip
            return [Volume(n) for n in names]

        def name(self) -> str:
            return "railyard"

    assert disk_volumes(Pool(), "railyard-r-m1") == [
        "railyard-r-m1.disk1.qcow2",
        "railyard-r-m1.disk12.qcow2",
    ]


def test_extra_nics_go_to_their_hub_segments_at_fixed_slots():
    nics = (ExtraNic(41001, "52:54:00:ee:01:01"), ExtraNic(41002, "52:54:00:ee:02:01"))
    args = qemu_args(render(extra_nics=nics))
    assert "socket,id=railyard-extra1,connect=127.0.0.1:41001" in args
    assert "virtio-net-pci,netdev=railyard-extra1,mac=52:54:00:ee:01:01,bus=pcie.0,addr=0x12,romfile=" in args
    assert "socket,id=railyard-extra2,connect=127.0.0.1:41002" in args
    assert "virtio-net-pci,netdev=railyard-extra2,mac=52:54:00:ee:02:01,bus=pcie.0,addr=0x13,romfile=" in args
    netdevs = [args[i + 1] for i, arg in enumerate(args) if arg == "-netdev"]
    assert all(n.startswith("user,") or "connect=127.0.0.1:" in n for n in netdevs)


def test_kernel_arguments_are_smbios_oem_strings():
    domain = render(kernel_args=("foo=bar", "quiet"))
    entries = [e.text for e in domain.findall("sysinfo[@type='smbios']/oemStrings/entry")]
    assert entries == [
        "io.systemd.boot.kernel-cmdline-extra=foo=bar quiet",
        "io.systemd.stub.kernel-cmdline-extra=foo=bar quiet",
    ]
    assert domain.find("os/smbios").attrib == {"mode": "sysinfo"}
    assert domain.find("sysinfo[@type='fwcfg']") is not None, "the Ignition config still goes by fw_cfg"


def test_without_kernel_arguments_there_are_no_smbios_strings():
    domain = render()
    assert domain.find("sysinfo[@type='smbios']") is None
    assert domain.find("os/smbios") is None
