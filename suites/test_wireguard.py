"""WireGuard interfaces made by networkd (kola: cl.network.wireguard): the kernel's wireguard device with the
key, port and peer a config gives, and two ends that complete a handshake with those keys.

Two tunnel ends live on one machine. The second end is in a VRF of its own, so the kernel does not deliver the
first end's packets to it locally: they leave through ry-wg0, encrypted, as UDP over the loopback, and come out
of ry-wg1 decrypted (the test asserts the handshake between the two ends, not the reply path of an end inside
a VRF). The keys are fixed, so the config (and the machine's checkpoint) is the same on every run.
One machine serves the module; the tests only read."""

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
VRF, VRF_TABLE = "ry-vrf-wg", 177


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
        vrf = f"VRF={VRF}\n" if name == "ry-wg1" else ""
        config.add_file(
            f"/etc/systemd/network/40-{name}.network",
            f"[Match]\nName={name}\n\n[Network]\nAddress={ADDRESSES[name]}/32\n{vrf}"
            f"LinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
            f"[Route]\nDestination={ADDRESSES[peer]}/32\n",
        )
    config.add_file(
        f"/etc/systemd/network/40-{VRF}.netdev",
        f"[NetDev]\nName={VRF}\nKind=vrf\n\n[VRF]\nTable={VRF_TABLE}\n",
    )
    config.add_file(f"/etc/systemd/network/40-{VRF}.network", f"[Match]\nName={VRF}\n")
    return config.to_dict()


pytestmark = pytest.mark.ignition(_config())


@pytest.fixture(scope="module")
def tunnel(module_machine):
    module_machine.wait_for_links(*PORTS, VRF)
    return module_machine


def test_networkd_makes_wireguard_devices_with_their_port_and_address(tunnel):
    """kola: cl.network.wireguard"""
    m = tunnel
    for name, port in PORTS.items():
        link = json.loads(m.succeed(f"ip -j -d address show dev {name}"))[0]
        assert link["linkinfo"]["info_kind"] == "wireguard", link
        assert [a["local"] for a in link["addr_info"]] == [ADDRESSES[name]], link
        assert f":{port} " in m.succeed(f"ss -Huln 'sport = :{port}'") + " "
    assert json.loads(m.succeed("ip -j -d link show dev ry-wg1"))[0]["master"] == VRF


def test_the_two_ends_complete_a_handshake_with_the_configured_keys(tunnel):
    """A datagram for the peer makes ry-wg0 start a handshake over UDP; ry-wg1 answers only if the initiation
    decrypts with its private key and comes from the public key it has as a peer, and ry-wg0 takes the answer
    only if it comes from its own peer's key."""
    m = tunnel

    def counter(name: str, which: str) -> str:
        return f"/sys/class/net/{name}/statistics/{which}_packets"

    def packets(name: str, which: str) -> int:
        return int(m.succeed(f"cat {counter(name, which)}"))

    before = {(n, w): packets(n, w) for n in PORTS for w in ("rx", "tx")}
    m.succeed(f"bash -c 'echo railyard > /dev/udp/{ADDRESSES['ry-wg1']}/9'")
    m.wait_until_succeeds(
        f"test $(cat {counter('ry-wg0', 'rx')}) -gt {before['ry-wg0', 'rx']}", timeout=60
    )  # the response, taken
    assert packets("ry-wg0", "tx") > before["ry-wg0", "tx"]  # the initiation
    assert packets("ry-wg1", "tx") > before["ry-wg1", "tx"]  # the response, sent
