"""WireGuard interfaces made by networkd (kola: cl.network.wireguard): the kernel's wireguard device with the
key, port and peer a config gives, and two ends that complete a handshake with those keys and carry a ping
and its reply.

Two tunnel ends live on one machine, each in a VRF of its own, so the kernel never delivers packets between
their addresses locally: they leave through one end, encrypted, as UDP over the loopback, and come out of the
other decrypted. (With one end outside a VRF, its address is in the `local` table, which the kernel consults
before any VRF's: the other end's echo request is then a martian, from an address of this host, and its reply
goes straight back over the loopback.) The keys are fixed, so the config (and the machine's checkpoint) is the
same on every run. One machine serves the module; the tests only read."""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from harness.ignition import IgnitionConfig

# Fixed test keys (never a secret anywhere): 32 bytes each, as `wg genkey` prints them.
PRIVATE = {name: bytes(range(seed, seed + 32)) for name, seed in (("ry-wg0", 1), ("ry-wg1", 101))}
PORTS = {"ry-wg0": 51820, "ry-wg1": 51821}
ADDRESSES = {"ry-wg0": "10.77.0.1", "ry-wg1": "10.77.0.2"}
VRFS = {"ry-wg0": ("ry-vrf-wg0", 176), "ry-wg1": ("ry-vrf-wg1", 177)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_key(name: str) -> str:
    key = X25519PrivateKey.from_private_bytes(PRIVATE[name]).public_key()
    return b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def _config() -> dict:
    config = IgnitionConfig()
    for name, peer in (("ry-wg0", "ry-wg1"), ("ry-wg1", "ry-wg0")):
        key_file = f"/etc/systemd/network/{name}.key"
        config.add_file(key_file, b64(PRIVATE[name]) + "\n", mode=0o640, group="systemd-network")
        config.add_file(
            f"/etc/systemd/network/40-{name}.netdev",
            f"[NetDev]\nName={name}\nKind=wireguard\n\n"
            f"[WireGuard]\nPrivateKeyFile={key_file}\nListenPort={PORTS[name]}\n\n"
            f"[WireGuardPeer]\nPublicKey={public_key(peer)}\nAllowedIPs={ADDRESSES[peer]}/32\n"
            f"Endpoint=127.0.0.1:{PORTS[peer]}\n",
        )
        vrf, table = VRFS[name]
        config.add_file(
            f"/etc/systemd/network/40-{name}.network",
            f"[Match]\nName={name}\n\n[Network]\nAddress={ADDRESSES[name]}/32\nVRF={vrf}\n"
            f"LinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
            f"[Route]\nDestination={ADDRESSES[peer]}/32\n",
        )
        config.add_file(
            f"/etc/systemd/network/40-{vrf}.netdev",
            f"[NetDev]\nName={vrf}\nKind=vrf\n\n[VRF]\nTable={table}\n",
        )
        config.add_file(f"/etc/systemd/network/40-{vrf}.network", f"[Match]\nName={vrf}\n")
    return config.to_dict()


pytestmark = pytest.mark.ignition(_config())


@pytest.fixture(scope="module")
def tunnel(module_machine):
    module_machine.wait_for_links(*PORTS, *(vrf for vrf, _ in VRFS.values()))
    return module_machine


def test_networkd_makes_wireguard_devices_with_their_port_and_address(tunnel):
    """kola: cl.network.wireguard"""
    m = tunnel
    for name, port in PORTS.items():
        link = json.loads(m.succeed(f"ip -j -d address show dev {name}"))[0]
        assert link["linkinfo"]["info_kind"] == "wireguard", link
        assert [a["local"] for a in link["addr_info"]] == [ADDRESSES[name]], link
        assert f":{port} " in m.succeed(f"ss -Huln 'sport = :{port}'") + " "
        assert json.loads(m.succeed(f"ip -j -d link show dev {name}"))[0]["master"] == VRFS[name][0]


def test_the_two_ends_complete_a_handshake_and_carry_a_ping(tunnel):
    """A ping of ry-wg1's address makes ry-wg0 start a handshake over UDP; ry-wg1 answers only if the initiation
    decrypts with its private key and comes from the public key it has as a peer, and ry-wg0 takes the answer
    only if it comes from its own peer's key. Then the echo goes through the tunnel and its reply comes back
    through it."""
    m = tunnel

    def packets(name: str, which: str) -> int:
        return int(m.succeed(f"cat /sys/class/net/{name}/statistics/{which}_packets"))

    before = {(n, w): packets(n, w) for n in PORTS for w in ("rx", "tx")}
    replies = m.succeed(f"sudo ping -c 3 -W 10 -I {VRFS['ry-wg0'][0]} {ADDRESSES['ry-wg1']}")
    assert " 3 received" in replies, replies
    # Through the tunnel both ways: each end sent and took at least the three echoes or their replies (a
    # reply that went back over the loopback would leave ry-wg0's rx and ry-wg1's tx where they were).
    for name in PORTS:
        for which in ("rx", "tx"):
            assert packets(name, which) >= before[name, which] + 3, (name, which)
