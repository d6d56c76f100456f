"""The host's test NTP server, asked over real UDP by ntplib's client and by hand-made packets."""

from __future__ import annotations

import socket
import struct
import time

import ntplib
import pytest

from harness.errors import ConfigError
from harness.ntp_server import PACKET, NtpServer, answer, ntp_timestamp, unix_time


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_client_gets_the_hosts_time_from_a_stratum_one_server() -> None:
    with NtpServer(port=free_udp_port(), wait=0) as server:
        reply = ntplib.NTPClient().request("127.0.0.1", port=server.port, version=4, timeout=5)
        assert reply.stratum == 1
        assert reply.leap == 0
        assert reply.mode == 4
        assert abs(reply.offset) < 0.5
        assert abs(reply.tx_time - time.time()) < 2
        assert [r.peer for r in server.requests()] == ["127.0.0.1"]


def test_the_reply_echoes_the_requests_transmit_field_byte_for_byte() -> None:
    transmit = b"\x12\x34\x56\x78\x9a\xbc\xde\xf0"  # not a time at all: the client only matches it
    request = PACKET.pack(0x23, 0, 6, 0, b"", b"", b"", b"\0" * 8, b"\0" * 8, b"\0" * 8, transmit)
    reply = answer(request, received=1_000_000_000.25, clock=lambda: 1_000_000_000.5)
    assert reply is not None
    fields = PACKET.unpack(reply)
    assert fields[0] == 0x24  # leap 0, version 4, mode 4 (server)
    assert fields[2] == 6  # the client's poll interval
    assert fields[8] == transmit
    assert unix_time(fields[9]) == pytest.approx(1_000_000_000.25, abs=1e-6)
    assert unix_time(fields[10]) == pytest.approx(1_000_000_000.5, abs=1e-6)


def test_what_is_not_a_client_request_gets_no_answer() -> None:
    server_mode = PACKET.pack(0x24, 1, 6, 0, b"", b"", b"", *(b"\0" * 8,) * 4)
    assert answer(server_mode, received=0.0) is None
    assert answer(b"\x23short", received=0.0) is None


def test_timestamps_round_trip() -> None:
    assert unix_time(ntp_timestamp(1_700_000_000.75)) == pytest.approx(1_700_000_000.75, abs=1e-6)
    assert struct.unpack("!I", ntp_timestamp(0.0)[:4])[0] == 2_208_988_800


def test_a_port_in_use_is_waited_for_then_one_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            NtpServer(port=port, wait=1.0)
        assert time.monotonic() - started >= 1.0
