"""The network of a fresh boot: networkd configures the NIC over DHCP, nothing but sshd listens (and
resolved's stub on loopback), and names resolve through resolved. One boot (the default config) serves the
module; the tests only read, except the last, which names a DNS server and takes it away again."""

import json
import shlex

import pytest

from harness.dns_server import DnsServer

ALLOWED = {
    ("tcp", "22"): {"sshd", "systemd"},  # sshd, or systemd holding its socket (socket activation)
    ("udp", "68"): {"systemd-network"},  # networkd's DHCPv4 client
    ("udp", "546"): {"systemd-network"},  # networkd's DHCPv6 client
}
# resolved's stub resolvers, on loopback only (LLMNR and mDNS are off in the image).
RESOLVED_STUBS = {"127.0.0.53", "127.0.0.54"}
# Clients whose UDP socket `ss -l` lists while a request is in flight: bound by the kernel to an ephemeral
# port (never a port a peer could know to send to), unconnected. timesyncd's NTP query is one.
UDP_CLIENTS = {"systemd-timesyn"}


def _listeners(text: str) -> list[tuple[str, str, str, str]]:
    """(protocol, address, port, process) of each line of `ss -Htulnp`."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        address, _, port = fields[4].rpartition(":")
        address = address.partition("%")[0]  # `127.0.0.53%lo`: bound to an interface too
        process = line.split('(("', 1)[1].split('"', 1)[0] if '(("' in line else "?"
        found.append((fields[0], address.strip("[]"), port, process))
    return found


def test_only_sshd_listens_on_a_fresh_boot(module_machine):
    """kola: cl.network.listeners"""
    listeners = _listeners(module_machine.succeed("sudo ss -Htulnp"))
    assert any(port == "22" for _, _, port, _ in listeners), listeners
    low, high = map(int, module_machine.succeed("cat /proc/sys/net/ipv4/ip_local_port_range").split())
    unexpected = [
        entry
        for entry in listeners
        if entry[3] not in ALLOWED.get((entry[0], entry[2]), set())
        # the harness's own reverse forwards: sshd on loopback
        and not (entry[3] == "sshd" and entry[1] in ("127.0.0.1", "::1"))
        and not (entry[3] == "systemd-resolve" and entry[2] == "53" and entry[1] in RESOLVED_STUBS)
        and not (entry[0] == "udp" and entry[3] in UDP_CLIENTS and low <= int(entry[2]) <= high)
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


@pytest.mark.requires("boot-host-services")  # the guest asks a DNS server the test runs on the host
def test_names_resolve_through_resolved_from_the_server_a_config_names(module_machine, platform):
    """kola: none (Flatcar documents resolved; DHCP's DNS servers are not used by the default image)"""
    m = module_machine
    assert m.succeed("readlink /etc/resolv.conf").strip().endswith("stub-resolv.conf")
    with DnsServer(("railyard.test",), {"web.railyard.test": "192.0.2.10"}) as server:
        dropin = f"[Resolve]\nDNS={platform.boot_host_address}:{server.port}\nDomains=~railyard.test\n"
        m.succeed(
            "sudo mkdir -p /etc/systemd/resolved.conf.d && printf %b "
            f"{shlex.quote(dropin)} | sudo tee /etc/systemd/resolved.conf.d/railyard-test.conf >/dev/null"
            " && sudo systemctl restart systemd-resolved.service"
        )
        try:
            assert "192.0.2.10" in m.succeed("resolvectl query --cache=no -4 web.railyard.test")
            # Through glibc and the stub in /etc/resolv.conf, as any program resolves.
            assert m.succeed("getent ahostsv4 web.railyard.test").split()[0] == "192.0.2.10"
            m.fail("getent ahostsv4 nope.railyard.test")
            asked = {(q.name, q.type) for q in server.asked()}
            assert ("web.railyard.test", "A") in asked, asked
            assert ("nope.railyard.test", "A") in asked, asked
        finally:
            m.succeed(
                "sudo rm -f /etc/systemd/resolved.conf.d/railyard-test.conf"
                " && sudo systemctl restart systemd-resolved.service"
            )
    # With no server named, nothing is asked anywhere: the name no longer resolves.
    m.fail("getent ahostsv4 web.railyard.test")
