"""Reverse forwards against a small paramiko SSH server that refuses a port while a stale session holds it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest

from harness import forward as forward_module
from harness.errors import SSHError
from harness.forward import RemoteForward, request


class PortHoldingServer(paramiko.ServerInterface):
    """Lets anyone in and refuses a port forward `refusals` times (as sshd does while another session
    listens on the port), then grants it."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.asked = 0

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_port_forward_request(self, address: str, port: int) -> int | bool:
        self.asked += 1
        return False if self.asked <= self.refusals else port


@pytest.fixture
def connect() -> Iterator[object]:
    host_key = paramiko.RSAKey.generate(2048)
    listener = socket.create_server(("127.0.0.1", 0))
    transports: list[paramiko.Transport] = []

    def make(refusals: int) -> tuple[paramiko.Transport, PortHoldingServer]:
        server = PortHoldingServer(refusals)

        def serve() -> None:
            conn, _ = listener.accept()
            side = paramiko.Transport(conn)
            side.add_server_key(host_key)
            side.start_server(server=server)
            transports.append(side)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = paramiko.Transport(socket.create_connection(listener.getsockname(), timeout=10))
        client.connect()
        client.auth_none("core")
        thread.join(10)
        transports.append(client)
        return client, server

    yield make
    listener.close()
    for transport in transports:
        transport.close()


def test_a_refused_forward_is_asked_again_until_the_port_is_free(connect, monkeypatch):
    monkeypatch.setattr(forward_module, "DENIED_INTERVAL", 0.01)
    transport, server = connect(refusals=3)
    request(transport, RemoteForward(guest_port=40001, host_port=40000), patience=30.0)
    assert server.asked == 4


def test_a_port_held_for_good_is_an_error_naming_the_forward(connect, monkeypatch):
    monkeypatch.setattr(forward_module, "DENIED_INTERVAL", 0.01)
    transport, server = connect(refusals=10**6)
    with pytest.raises(
        SSHError, match=r"refused the port forward guest 127.0.0.1:40001 -> host 127.0.0.1:40000"
    ):
        request(transport, RemoteForward(guest_port=40001, host_port=40000), patience=0.2)
    assert server.asked > 1
