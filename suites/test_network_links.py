"""networkd beyond DHCP, between two machines with three extra NICs each: a static address and an MTU on the
first extra NIC, a bond of the other two, and a VLAN on the bond.

One pair of machines serves the module (machines with extra NICs boot cold); the tests only read. Every file
is shared by both machines: the static addresses are told apart by the NICs' MACs, which the harness gives
as 52:54:00:ee:<segment>:<machine>, and the VLAN is reached over the IPv6 link-local addresses networkd
derives from each bond's MAC.
"""

import json

import pytest

from harness.ignition import IgnitionConfig

MACHINES = 2
STATIC_SEGMENT = 1
BOND_SEGMENTS = (2, 3)
STATIC_NET = "192.168.201"
MTU = 1400
BOND = "ry-bond0"
VLAN = "ry-vlan100"
VLAN_ID = 100


def mac(segment: int, machine: int) -> str:
    return f"52:54:00:ee:{segment:02x}:{machine:02x}"


def _config() -> dict:
    config = IgnitionConfig()
    for number in range(1, MACHINES + 1):
        config.add_file(
            f"/etc/systemd/network/30-ry-static-{number}.network",
            f"[Match]\nMACAddress={mac(STATIC_SEGMENT, number)}\n\n"
            f"[Link]\nMTUBytes={MTU}\n\n"
            f"[Network]\nAddress={STATIC_NET}.{number}/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
            mode=0o644,
        )
    primary, backup = (" ".join(mac(s, m) for m in range(1, MACHINES + 1)) for s in BOND_SEGMENTS)
    files = {
        # A port's MAC becomes the bond's once enslaved: match what it was made with. The first segment's port
        # is each bond's primary: an active-backup bond receives only on its active port, so both machines
        # must send and listen on the same segment (left to the order the ports come up in, they need not).
        "30-ry-bond-primary.network": f"[Match]\nPermanentMACAddress={primary}\n\n"
        f"[Network]\nBond={BOND}\nPrimarySlave=yes\n",
        "30-ry-bond-backup.network": f"[Match]\nPermanentMACAddress={backup}\n\n[Network]\nBond={BOND}\n",
        "25-ry-bond0.netdev": f"[NetDev]\nName={BOND}\nKind=bond\n\n"
        "[Bond]\nMode=active-backup\nMIIMonitorSec=1s\n",
        "30-ry-bond0.network": f"[Match]\nName={BOND}\n\n"
        f"[Network]\nVLAN={VLAN}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        "25-ry-vlan100.netdev": f"[NetDev]\nName={VLAN}\nKind=vlan\n\n[VLAN]\nId={VLAN_ID}\n",
        "30-ry-vlan100.network": f"[Match]\nName={VLAN}\n\n"
        "[Network]\nLinkLocalAddressing=ipv6\nIPv6AcceptRA=no\n",
    }
    for name, text in files.items():
        config.add_file(f"/etc/systemd/network/{name}", text, mode=0o644)
    return config.to_dict()


pytestmark = [pytest.mark.cluster(MACHINES), pytest.mark.nics(3), pytest.mark.ignition(_config())]


def link(machine, name: str) -> dict:
    return json.loads(machine.succeed(f"ip -j -d address show dev {name}"))[0]


def nic_named(machine, address: str) -> str:
    for entry in json.loads(machine.succeed("ip -j link show")):
        if entry.get("permaddr", entry.get("address")) == address:
            return str(entry["ifname"])
    raise AssertionError(f"no NIC with MAC {address} on {machine.name}")


def machine_number(machine) -> int:
    """Which of the pair this is, by the MAC its first extra NIC was given."""
    macs = machine.succeed("cat /sys/class/net/*/address").split()
    return next(m for m in range(1, MACHINES + 1) if mac(STATIC_SEGMENT, m) in macs)


@pytest.fixture(scope="module")
def pair(module_cluster):
    """The machines in the order of their number, once networkd has configured every link."""
    for m in module_cluster:
        m.wait_for_links(VLAN)
    return sorted(module_cluster, key=machine_number)


def test_a_static_address_on_a_second_nic(pair):
    """kola: cl.network.nics (static configuration by networkd)"""
    for number, m in enumerate(pair, start=1):
        nic = nic_named(m, mac(STATIC_SEGMENT, number))
        addresses = [a["local"] for a in link(m, nic)["addr_info"] if a["family"] == "inet"]
        assert addresses == [f"{STATIC_NET}.{number}"], (m.name, addresses)
    pair[0].succeed(f"sudo ping -c 1 -W 5 {STATIC_NET}.2")
    pair[1].succeed(f"sudo ping -c 1 -W 5 {STATIC_NET}.1")


def test_the_mtu_set_by_networkd_holds(pair):
    """kola: cl.network.mtu (the link's MTU, and a packet that size crosses without fragments)"""
    m = pair[0]
    nic = nic_named(m, mac(STATIC_SEGMENT, 1))
    assert link(m, nic)["mtu"] == MTU
    payload = MTU - 28  # IPv4 and ICMP headers
    m.succeed(f"sudo ping -c 1 -W 5 -M do -s {payload} {STATIC_NET}.2")
    too_big = m.execute(f"sudo ping -c 1 -W 5 -M do -s {payload + 1} {STATIC_NET}.2")
    assert too_big.status != 0, too_big.stdout


def test_a_bond_of_two_nics(pair):
    """kola: cl.network.bond (active-backup over two NICs, the primary port active)"""
    for number, m in enumerate(pair, start=1):
        bond = link(m, BOND)
        assert bond["linkinfo"]["info_kind"] == "bond", bond
        assert bond["linkinfo"]["info_data"]["mode"] == "active-backup", bond
        ports = sorted(nic_named(m, mac(segment, number)) for segment in BOND_SEGMENTS)
        enslaved = sorted(e["ifname"] for e in json.loads(m.succeed(f"ip -j link show master {BOND}")))
        assert enslaved == ports, (m.name, enslaved)
        assert "LOWER_UP" in bond["flags"], bond
        active = m.succeed(f"cat /sys/class/net/{BOND}/bonding/active_slave").strip()
        assert active == nic_named(m, mac(BOND_SEGMENTS[0], number)), (m.name, active)


def test_a_vlan_on_the_bond_reaches_the_other_machine(pair):
    """kola: cl.network.vlan"""
    for here, there in ((pair[0], pair[1]), (pair[1], pair[0])):
        vlan = link(there, VLAN)
        assert vlan["linkinfo"]["info_data"]["id"] == VLAN_ID, vlan
        peer = next(a["local"] for a in vlan["addr_info"] if a["scope"] == "link")
        here.wait_until_succeeds(f"sudo ping -6 -c 1 -W 5 {peer}%{VLAN}", timeout=60)  # after DAD
