"""Virtual network devices networkd makes from .netdev files a config writes: a bridge with two ports, a
macvlan on a third device, a VRF with its own routing table. Dummy devices stand in for NICs (they are always
up), so the machine needs no extra NIC. One machine serves the module; the tests only read."""

import json

import pytest

from harness.ignition import IgnitionConfig

BRIDGE, BRIDGE_ADDRESS = "ry-br0", "10.78.0.1"
PORTS = ("ry-port0", "ry-port1")
LOWER, MACVLAN, MACVLAN_ADDRESS = "ry-lower0", "ry-mv0", "10.78.1.1"
VRF, VRF_TABLE, VRF_PORT, VRF_ADDRESS = "ry-vrf0", 178, "ry-vrfport0", "10.78.2.1"
NETWORK_OFF = "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"


def _config() -> dict:
    files = {
        f"40-{BRIDGE}.netdev": f"[NetDev]\nName={BRIDGE}\nKind=bridge\n\n[Bridge]\nSTP=no\n",
        f"40-{BRIDGE}.network": f"[Match]\nName={BRIDGE}\n\n[Network]\nAddress={BRIDGE_ADDRESS}/24\n"
        + NETWORK_OFF,
        f"40-{LOWER}.netdev": f"[NetDev]\nName={LOWER}\nKind=dummy\n",
        f"40-{LOWER}.network": f"[Match]\nName={LOWER}\n\n[Network]\nMACVLAN={MACVLAN}\n" + NETWORK_OFF,
        f"40-{MACVLAN}.netdev": f"[NetDev]\nName={MACVLAN}\nKind=macvlan\n\n[MACVLAN]\nMode=bridge\n",
        f"40-{MACVLAN}.network": f"[Match]\nName={MACVLAN}\n\n[Network]\nAddress={MACVLAN_ADDRESS}/24\n"
        + NETWORK_OFF,
        f"40-{VRF}.netdev": f"[NetDev]\nName={VRF}\nKind=vrf\n\n[VRF]\nTable={VRF_TABLE}\n",
        f"40-{VRF}.network": f"[Match]\nName={VRF}\n",
        f"40-{VRF_PORT}.netdev": f"[NetDev]\nName={VRF_PORT}\nKind=dummy\n",
        f"40-{VRF_PORT}.network": f"[Match]\nName={VRF_PORT}\n\n[Network]\nVRF={VRF}\n"
        f"Address={VRF_ADDRESS}/24\n" + NETWORK_OFF,
    }
    for port in PORTS:
        files[f"40-{port}.netdev"] = f"[NetDev]\nName={port}\nKind=dummy\n"
        files[f"40-{port}.network"] = f"[Match]\nName={port}\n\n[Network]\nBridge={BRIDGE}\n" + NETWORK_OFF
    config = IgnitionConfig()
    for name, text in files.items():
        config.add_file(f"/etc/systemd/network/{name}", text)
    return config.to_dict()


pytestmark = pytest.mark.ignition(_config())


@pytest.fixture(scope="module")
def netdevs(module_machine):
    module_machine.wait_for_links(BRIDGE, *PORTS, LOWER, MACVLAN, VRF, VRF_PORT)
    return module_machine


def link(machine, name: str) -> dict:
    return json.loads(machine.succeed(f"ip -j -d address show dev {name}"))[0]


def addresses(entry: dict) -> list[str]:
    return [a["local"] for a in entry["addr_info"] if a["family"] == "inet"]


def test_a_bridge_with_two_ports(netdevs):
    m = netdevs
    bridge = link(m, BRIDGE)
    assert bridge["linkinfo"]["info_kind"] == "bridge", bridge
    assert bridge["linkinfo"]["info_data"]["stp_state"] == 0, bridge
    assert addresses(bridge) == [BRIDGE_ADDRESS]
    assert "LOWER_UP" in bridge["flags"], bridge
    for port in PORTS:
        entry = link(m, port)
        assert entry.get("master") == BRIDGE, entry
        assert entry["linkinfo"]["info_slave_kind"] == "bridge", entry


def test_a_macvlan_on_its_lower_device(netdevs):
    m = netdevs
    macvlan = link(m, MACVLAN)
    assert macvlan["linkinfo"]["info_kind"] == "macvlan", macvlan
    assert macvlan["linkinfo"]["info_data"]["mode"] == "bridge", macvlan
    assert macvlan["link"] == LOWER, macvlan
    assert addresses(macvlan) == [MACVLAN_ADDRESS]
    assert macvlan["address"] != link(m, LOWER)["address"]


def test_a_vrf_keeps_its_routes_in_its_own_table(netdevs):
    m = netdevs
    assert link(m, VRF_PORT).get("master") == VRF
    assert link(m, VRF)["linkinfo"]["info_data"]["table"] == VRF_TABLE
    table = m.succeed(f"ip -4 route show table {VRF_TABLE}")
    assert f"10.78.2.0/24 dev {VRF_PORT}" in table, table
    main = m.succeed("ip -4 route show table main")
    assert "10.78.2.0/24" not in main, main
    # A lookup in the VRF finds its own route; one outside it does not.
    assert f"dev {VRF_PORT}" in m.succeed(f"ip -4 route get 10.78.2.9 vrf {VRF}")
    assert f"dev {VRF_PORT}" not in m.execute("ip -4 route get 10.78.2.9").stdout
