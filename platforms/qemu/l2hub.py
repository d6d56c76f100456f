"""The private network and the extra NICs of QEMU and libvirt machines: Ethernet segments relayed over 127.0.0.1.

QEMU's `-netdev socket,connect=127.0.0.1:PORT` sends each frame as a 4-byte big-endian length and the frame.
The hub learns which connection each source MAC lives behind and forwards unicast frames there; broadcast,
multicast and unknown destinations go to every other connection. Guest-to-guest traffic never leaves this
process: the host sees only loopback connections.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from types import TracebackType

from harness.errors import ConfigError
from platforms.base import ExtraNic, NicSegment, PrivateNet, PrivateNetwork

log = logging.getLogger(__name__)

MAX_FRAME = 65536 + 18
SEGMENT_PREFIX = "10.0.3"
"""The /24 of a segment's static addresses (distinct from QEMU user networking's 10.0.2.0/24)."""
MAX_MEMBERS = 250
EXTRA_NIC_MAC = "52:54:00:ee:{number:02x}:{member:02x}"
"""The MAC of an extra NIC: its number (1 for a machine's first extra NIC), the machine's place on the segment."""


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


class L2Hub:
    """A learning Ethernet switch for QEMU socket netdevs. Context manager."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._peers: list[socket.socket] = []
        self._macs: dict[bytes, socket.socket] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.frames = 0
        self._thread = threading.Thread(target=self._accept, name=f"l2hub-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> L2Hub:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def peer_count(self) -> int:
        with self._lock:
            return len(self._peers)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._peers.append(conn)
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            while True:
                header = _recv_exact(conn, 4)
                if header is None:
                    return
                (size,) = struct.unpack("!I", header)
                if size > MAX_FRAME:
                    log.warning("l2hub: dropping a peer that sent a %d-byte frame", size)
                    return
                frame = _recv_exact(conn, size)
                if frame is None:
                    return
                self._forward(conn, header + frame, frame)
        except OSError:
            return
        finally:
            with self._lock:
                if conn in self._peers:
                    self._peers.remove(conn)
                for mac in [m for m, c in self._macs.items() if c is conn]:
                    del self._macs[mac]
            conn.close()

    def _forward(self, source: socket.socket, packet: bytes, frame: bytes) -> None:
        if len(frame) < 12:
            return
        dst, src = frame[0:6], frame[6:12]
        with self._lock:
            self.frames += 1
            self._macs[src] = source
            target = self._macs.get(dst) if not dst[0] & 1 else None
            targets = [target] if target is not None else [p for p in self._peers if p is not source]
        for peer in targets:
            try:
                peer.sendall(packet)
            except OSError:
                continue

    def close(self) -> None:
        self._closed.set()
        # Wake the accept thread and let it finish before the descriptor is freed: a closed descriptor
        # number is reused at once, and a thread still in accept() would serve someone else's socket.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5.0)
        self._server.close()
        with self._lock:
            peers, self._peers = self._peers, []
        for peer in peers:
            with contextlib.suppress(OSError):
                peer.shutdown(socket.SHUT_RDWR)
            peer.close()


class _SharedHub:
    """An L2Hub started when the first machine joins, and how many have joined."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._lock = threading.Lock()
        self._hub: L2Hub | None = None
        self._members = 0

    def add(self, name: str) -> tuple[int, int]:
        """The hub's port and the new member's number (1 for the first)."""
        with self._lock:
            if self._members >= MAX_MEMBERS:
                raise ConfigError(f"{name}: {self._what} holds at most {MAX_MEMBERS} machines")
            if self._hub is None:
                self._hub = L2Hub()
            self._members += 1
            return self._hub.port, self._members

    def close(self) -> None:
        with self._lock:
            hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()


class HubNetwork(PrivateNetwork):
    """A private network of local machines: a second NIC each (`-netdev socket` to an L2Hub of this
    process), with the static addresses 10.0.3.1, .2, ... in the order the machines join."""

    def __init__(self) -> None:
        self._shared = _SharedHub("a private network")

    def join(self, name: str) -> PrivateNet:
        port, index = self._shared.add(name)
        return PrivateNet(port, f"52:54:00:cc:00:{index:02x}", f"{SEGMENT_PREFIX}.{index}/24")

    def close(self) -> None:
        self._shared.close()


class HubSegment(NicSegment):
    """The segment of the extra NICs number `number` of one test's machines: `-netdev socket` to an L2Hub of
    this process, MACs 52:54:00:ee:NN:MM (NN the NIC's number, MM the machine's place), no addresses."""

    def __init__(self, number: int) -> None:
        if not 1 <= number <= 0xFF:
            raise ConfigError(f"extra NIC number {number} is out of range (1 to 255)")
        self.number = number
        self._shared = _SharedHub(f"the segment of extra NICs number {number}")

    def attach(self, name: str) -> ExtraNic:
        port, member = self._shared.add(name)
        return ExtraNic(port, EXTRA_NIC_MAC.format(number=self.number, member=member))

    def close(self) -> None:
        self._shared.close()
