"""A small SNTP server (RFC 4330) on the host's 127.0.0.1, for tests of the guest's clock synchronisation: it
answers every client request with the host's clock as a stratum-1 source, and remembers who asked.

NTP clients talk to port 123 and most (systemd-timesyncd among them) cannot be told another port, so the
server binds 127.0.0.1:123: that takes root (or a lowered `net.ipv4.ip_unprivileged_port_start`), and only one
server per host at a time; a second one waits for the port (`wait`) instead of failing at once. Guests reach
it where the platform lets them reach the host from boot on (`Platform.boot_host_address`, QEMU's 10.0.2.2,
which QEMU's user network maps to the host's loopback)."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import ConfigError

NTP_PORT = 123
# Seconds from the NTP era's start (1900-01-01) to the Unix epoch.
NTP_UNIX_OFFSET = 2_208_988_800
PACKET = struct.Struct("!BBbb4s4s4s8s8s8s8s")
MODE_CLIENT = 3
MODE_SERVER = 4
STRATUM = 1
PRECISION = -20  # about a microsecond, as log2 seconds
REFERENCE_ID = b"RLYD"
ROOT_DISPERSION = struct.pack("!HH", 0, 0x0100)  # 16.16 fixed point: about 4 ms


def ntp_timestamp(unix_seconds: float) -> bytes:
    """A 64-bit NTP timestamp (seconds since 1900 and a binary fraction) for a Unix time."""
    seconds = int(unix_seconds)
    fraction = int((unix_seconds - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!II", (seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF, fraction)


def unix_time(timestamp: bytes) -> float:
    """The Unix time of a 64-bit NTP timestamp (era 0)."""
    seconds, fraction = struct.unpack("!II", timestamp)
    return float(seconds - NTP_UNIX_OFFSET + fraction / (1 << 32))


def answer(request: bytes, received: float, clock: Callable[[], float] = time.time) -> bytes | None:
    """The server's reply to one request (None for what is not an NTP client request).

    The reply's originate timestamp is the request's transmit timestamp, copied byte for byte: that is how a
    client matches a reply to its request (timesyncd's transmit field is not even a proper NTP fraction)."""
    if len(request) < PACKET.size:
        return None
    first, _stratum, poll, _precision, *_rest, transmit = PACKET.unpack_from(request)
    version, mode = (first >> 3) & 0x7, first & 0x7
    if mode != MODE_CLIENT or not 1 <= version <= 4:
        return None
    now = clock()
    return PACKET.pack(
        (0 << 6) | (version << 3) | MODE_SERVER,  # leap indicator 0: no warning, in sync
        STRATUM,
        poll,
        PRECISION,
        b"\0\0\0\0",  # root delay: the reference clock is this host's
        ROOT_DISPERSION,
        REFERENCE_ID,
        ntp_timestamp(now),  # reference: when the clock was last set (it is the host's, always current)
        transmit,
        ntp_timestamp(received),
        ntp_timestamp(now),
    )


@dataclass(frozen=True)
class Request:
    peer: str  # the client's address as the host sees it (127.0.0.1 through QEMU's user network)
    at: float  # host time of arrival


class NtpServer:
    """`with NtpServer() as server:` serves 127.0.0.1:123 until the block ends; `server.requests()` lists
    what was asked. `wait` seconds are spent waiting for another server on the host to give the port up."""

    def __init__(self, port: int = NTP_PORT, wait: float = 300.0) -> None:
        self.port = port
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._sock = self._bind(port, wait)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="railyard-ntp", daemon=True)

    @staticmethod
    def _bind(port: int, wait: float) -> socket.socket:
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("127.0.0.1", port))
                return sock
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EACCES:
                    raise ConfigError(
                        f"an NTP server needs 127.0.0.1:{port}, which only root may bind here"
                    ) from exc
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise ConfigError(f"cannot serve NTP on 127.0.0.1:{port}: {exc}") from exc
            time.sleep(0.5)  # another run's server holds the port; it is released when that test ends

    def __enter__(self) -> NtpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self._sock.close()

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            received = time.time()
            reply = answer(wire, received)
            if reply is None:
                continue
            with self._lock:
                self._requests.append(Request(peer[0], received))
            try:
                self._sock.sendto(reply, peer)
            except OSError:
                return


__all__ = ["NTP_PORT", "NtpServer", "Request", "answer", "ntp_timestamp", "unix_time"]
