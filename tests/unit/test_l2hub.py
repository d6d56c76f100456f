import socket
import struct

import pytest

from harness.acceleration import Timeouts, detect
from harness.errors import ConfigError
from harness.retry import poll
from platforms.base import CAP_PRIVATE_NETWORK, Platform, PlatformContext
from platforms.qemu.l2hub import HubNetwork, HubSegment, L2Hub

BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 50) -> bytes:
    body = dst + src + b"\x08\x00" + payload
    return struct.pack("!I", len(body)) + body


def recv_frame(sock: socket.socket) -> bytes:
    header = sock.recv(4, socket.MSG_WAITALL)
    (size,) = struct.unpack("!I", header)
    return sock.recv(size, socket.MSG_WAITALL)


def test_broadcast_reaches_others_and_unicast_is_learned():
    mac = [bytes([0x52, 0x54, 0, 0xCC, 0, i]) for i in range(3)]
    with L2Hub() as hub:
        peers = [socket.create_connection(("127.0.0.1", hub.port), timeout=5) for _ in range(3)]
        try:
            poll(lambda: hub.peer_count == 3 or None, timeout=5, interval=0.01, what="three peers")
            peers[0].sendall(frame(BROADCAST, mac[0]))
            assert recv_frame(peers[1])[6:12] == mac[0]
            assert recv_frame(peers[2])[6:12] == mac[0]
            # peer 2 announces itself; then a unicast to it reaches only peer 2
            peers[2].sendall(frame(BROADCAST, mac[2]))
            recv_frame(peers[0])
            recv_frame(peers[1])
            peers[0].sendall(frame(mac[2], mac[0], b"only-for-two" + b"\0" * 40))
            assert b"only-for-two" in recv_frame(peers[2])
            peers[1].settimeout(0.3)
            try:
                data = peers[1].recv(4)
            except TimeoutError:
                data = b""
            assert data == b"", "a unicast frame to a learned MAC leaked to another port"
            assert hub.frames == 3
        finally:
            for p in peers:
                p.close()


def test_hub_network_gives_each_machine_its_own_nic_on_one_hub():
    network = HubNetwork()
    first, second = network.join("m1"), network.join("m2")
    assert first.hub_port == second.hub_port
    assert (first.address, second.address) == ("10.0.3.1/24", "10.0.3.2/24")
    assert first.mac != second.mac
    with socket.create_connection(("127.0.0.1", first.hub_port), timeout=5):
        pass  # the hub listens while the network is open
    network.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", first.hub_port), timeout=5)
    network.close()  # twice is fine


def test_a_platform_without_the_capability_has_no_private_network(tmp_path):
    class Bare(Platform):
        name = "bare"

        def _boot(self, spec):  # pragma: no cover - never called
            raise AssertionError

        def _destroy(self, machine):  # pragma: no cover - never called
            raise AssertionError

    ctx = PlatformContext("run", tmp_path, detect("tcg"), Timeouts.for_acceleration(detect("tcg")), {})
    with pytest.raises(ConfigError, match="no private network"):
        Bare(ctx).private_network()

    class Cloudy(Bare):
        machine_capabilities = frozenset({CAP_PRIVATE_NETWORK})

    assert Cloudy(ctx).private_network().join("m1") is None, "a cloud's machines need no NIC of their own"


def test_extra_nic_segments_give_each_machine_a_mac_of_its_own_on_the_segments_hub():
    first, second = HubSegment(1), HubSegment(2)
    try:
        a1, b1 = first.attach("a"), first.attach("b")
        a2 = second.attach("a")
        assert a1.hub_port == b1.hub_port != a2.hub_port
        assert (a1.mac, b1.mac, a2.mac) == ("52:54:00:ee:01:01", "52:54:00:ee:01:02", "52:54:00:ee:02:01")
        with socket.create_connection(("127.0.0.1", a1.hub_port), timeout=5):
            pass  # the segment's hub listens on loopback while it is open
    finally:
        first.close()
        second.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", a1.hub_port), timeout=5)
    first.close()  # twice is fine


def test_extra_nic_macs_differ_from_the_private_networks():
    segment, network = HubSegment(1), HubNetwork()
    try:
        assert segment.attach("a").mac != network.join("a").mac
    finally:
        segment.close()
        network.close()


def test_a_platform_without_extra_nics_refuses_a_segment(tmp_path):
    class Bare(Platform):
        name = "bare"

        def _boot(self, spec):
            raise NotImplementedError

        def _destroy(self, machine):
            raise NotImplementedError

    ctx = PlatformContext("r", tmp_path, detect("tcg"), Timeouts.for_acceleration(detect("tcg")), {})
    with pytest.raises(ConfigError, match="no extra NICs"):
        Bare(ctx).nic_segment(1)
    assert Bare.machine_option_refusal("disks") == "@pytest.mark.disks: bare machines cannot have it"
