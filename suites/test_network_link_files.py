"""systemd .link files a config writes, applied by udev as it sets up a NIC: an alternative name, an MTU and a
description for the NIC of a MAC. The harness gives the machine's NIC QEMU's default MAC. One machine serves
the module; the tests only read."""

import json

import pytest

from harness.ignition import IgnitionConfig

MAC = "52:54:00:12:34:56"
ALTNAME, MTU = "ry-uplink", 1400

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file(
        "/etc/systemd/network/10-railyard-uplink.link",
        f"[Match]\nMACAddress={MAC}\n\n"
        f"[Link]\nDescription=Railyard uplink\nAlternativeName={ALTNAME}\nMTUBytes={MTU}\n"
        "NamePolicy=keep kernel database onboard slot path\n",
    )
    .to_dict()
)


def uplink(machine) -> dict:
    links = json.loads(machine.succeed("ip -j link show"))
    return next(link for link in links if link.get("address") == MAC)


def test_the_nic_gets_its_alternative_name_and_mtu(module_machine):
    m = module_machine
    link = uplink(m)
    assert ALTNAME in link.get("altnames", []), link
    assert link["mtu"] == MTU, link
    assert json.loads(m.succeed(f"ip -j link show dev {ALTNAME}"))[0]["ifname"] == link["ifname"]


def test_udev_says_which_link_file_applied(module_machine):
    m = module_machine
    name = uplink(m)["ifname"]
    properties = m.succeed(f"udevadm info --query=property /sys/class/net/{name}").splitlines()
    assert "ID_NET_LINK_FILE=/etc/systemd/network/10-railyard-uplink.link" in properties, properties
    # The link still carries the harness's SSH: DHCP configured it with the smaller MTU.
    assert "State: routable (configured)" in m.succeed(f"networkctl status {name} --no-pager")
