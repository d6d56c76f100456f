"""Routing a config gives networkd: static routes in the main table and in a table of their own, a routing
policy rule that sends a source to that table, a blackhole route, and IP forwarding. A dummy device
stands in for a NIC. One machine serves the module; the tests only read."""

import pytest

from harness.ignition import IgnitionConfig

LINK, ADDRESS, TABLE = "ry-route0", "10.79.0.1", 179

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file(f"/etc/systemd/network/40-{LINK}.netdev", f"[NetDev]\nName={LINK}\nKind=dummy\n")
    .add_file(
        f"/etc/systemd/network/40-{LINK}.network",
        f"[Match]\nName={LINK}\n\n"
        f"[Network]\nAddress={ADDRESS}/24\nIPForward=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        "[Route]\nDestination=10.80.0.0/16\nGateway=10.79.0.254\n\n"
        f"[Route]\nDestination=10.81.0.0/16\nGateway=10.79.0.253\nTable={TABLE}\n\n"
        "[Route]\nDestination=10.82.0.0/16\nType=blackhole\n\n"
        f"[RoutingPolicyRule]\nFrom=10.79.0.128/25\nTable={TABLE}\nPriority=1790\n",
    )
    .to_dict()
)


@pytest.fixture(scope="module")
def routed(module_machine):
    module_machine.wait_for_links(LINK)
    return module_machine


def test_static_routes_in_the_main_table_and_in_their_own(routed):
    m = routed
    main = m.succeed("ip -4 route show table main")
    assert f"10.80.0.0/16 via 10.79.0.254 dev {LINK}" in main, main
    assert "10.81.0.0/16" not in main, main
    own = m.succeed(f"ip -4 route show table {TABLE}")
    assert f"10.81.0.0/16 via 10.79.0.253 dev {LINK}" in own, own


def test_a_policy_rule_sends_a_source_to_its_table(routed):
    m = routed
    assert f"1790:\tfrom 10.79.0.128/25 lookup {TABLE}" in m.succeed("ip -4 rule show"), "the rule is there"
    assert "via 10.79.0.253" in m.succeed(f"ip -4 route get 10.81.1.1 from 10.79.0.200 iif {LINK}")
    assert "via 10.79.0.253" not in m.execute("ip -4 route get 10.81.1.1").stdout


def test_a_blackhole_route(routed):
    assert "blackhole 10.82.0.0/16" in routed.succeed("ip -4 route show table main type blackhole")


def test_forwarding_a_network_file_turns_on(routed):
    """networkd turns IPv4 forwarding on for the whole host once a link's .network asks for it (as its manual
    says: the setting is propagated one way, to the global one)."""
    m = routed
    assert m.succeed(f"sysctl -n net.ipv4.conf.{LINK}.forwarding").strip() == "1"
    assert m.succeed("sysctl -n net.ipv4.ip_forward").strip() == "1"
