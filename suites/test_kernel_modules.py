"""The kernel's module policy from /etc/modprobe.d and /etc/modules-load.d: options a module is loaded with, a
module that must never load, and a blacklist that stops loading on demand but not by name. One machine serves
the module; the tests load nothing the policy allows but the blacklisted module, by name, last."""

import pytest

from harness.ignition import IgnitionConfig

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file("/etc/modules-load.d/railyard-dummy.conf", "dummy\n")
    .add_file(
        "/etc/modprobe.d/zz-railyard.conf",  # after systemd.conf (numdummies=0): the last option wins
        "options dummy numdummies=3\n"
        "install sctp /bin/false\n"  # never loaded, by name or on demand
        "blacklist vxlan\n",  # not loaded on demand (a link of its kind); by name, yes
    )
    .to_dict()
)


def test_a_module_loaded_at_boot_with_its_options(module_machine):
    m = module_machine
    m.wait_until_succeeds("systemctl is-active systemd-modules-load.service")
    m.succeed("test -d /sys/module/dummy")  # numdummies is not in sysfs: its devices show it
    links = m.succeed("ip -o link show type dummy")
    assert sorted(line.split(":")[1].strip() for line in links.splitlines()) == ["dummy0", "dummy1", "dummy2"]


@pytest.mark.distros("railyard", reason="the socket is opened by python3, which Flatcar does not have")
def test_an_install_rule_keeps_a_module_out(module_machine):
    m = module_machine
    assert not m.execute("sudo modprobe sctp").ok
    m.succeed("test ! -e /sys/module/sctp")
    # Asking for it through a socket of its protocol does not load it either.
    m.execute("python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)'")
    m.succeed("test ! -e /sys/module/sctp")


def test_a_blacklisted_module_loads_by_name_only(module_machine):
    m = module_machine
    m.succeed("test ! -e /sys/module/vxlan")
    refused = m.execute("sudo ip link add ry-vx0 type vxlan id 42 dstport 4789 dev lo")
    assert not refused.ok, refused
    m.succeed("test ! -e /sys/module/vxlan")
    m.succeed("sudo modprobe vxlan")
    m.succeed("sudo ip link add ry-vx0 type vxlan id 42 dstport 4789 dev lo && sudo ip link del ry-vx0")
