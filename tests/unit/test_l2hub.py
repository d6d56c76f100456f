import socket
import struct

from harness.l2hub import L2Hub
from harness.retry import poll

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
