"""The network of a fresh boot: networkd configures the NIC over DHCP, and nothing but sshd listens.
One boot (the default config) serves the module; the tests only read."""

import json

ALLOWED = {
    ("tcp", "22"): {"sshd", "systemd"},  # sshd, or systemd holding its socket (socket activation)
    ("udp", "68"): {"systemd-network"},  # networkd's DHCPv4 client
    ("udp", "546"): {"systemd-network"},  # networkd's DHCPv6 client
}


def _listeners(text: str) -> list[tuple[str, str, str, str]]:
    """(protocol, address, port, process) of each line of `ss -Htulnp`."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        address, _, port = fields[4].rpartition(":")
        process = line.split('(("', 1)[1].split('"', 1)[0] if '(("' in line else "?"
        found.append((fields[0], address.strip("[]"), port, process))
    return found


def test_only_sshd_listens_on_a_fresh_boot(module_machine):
    """kola: cl.network.listeners"""
    listeners = _listeners(module_machine.succeed("sudo ss -Htulnp"))
    assert any(port == "22" for _, _, port, _ in listeners), listeners
    unexpected = [
        entry
        for entry in listeners
        if entry[3] not in ALLOWED.get((entry[0], entry[2]), set())
        # the harness's own reverse forwards: sshd on loopback
        and not (entry[3] == "sshd" and entry[1] in ("127.0.0.1", "::1"))
    ]
    assert unexpected == [], f"listening besides sshd: {unexpected}"


def test_networkd_configures_the_nic_over_dhcp(module_machine):
    links = module_machine.succeed("networkctl list --no-legend --no-pager").splitlines()
    configured = [
        line.split()[1] for line in links if line.split()[2:5] == ["ether", "routable", "configured"]
    ]
    assert configured, links
    addresses = json.loads(module_machine.succeed(f"ip -j -4 address show dev {configured[0]}"))
    dynamic = [a for a in addresses[0]["addr_info"] if a.get("dynamic")]
    assert dynamic, f"no address from DHCP on {configured[0]}: {addresses}"
    routes = json.loads(module_machine.succeed("ip -j route show default"))
    assert routes, "no default route"
    assert routes[0].get("gateway"), routes
    assert routes[0].get("dev") == configured[0], routes
