"""The QMP client against a tiny fake QMP server on a unix socket."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from harness.errors import PlatformError
from harness.qmp import QMPClient

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}


class FakeQMP:
    """Speaks just enough QMP: greeting, capabilities, a few commands, events before replies."""

    def __init__(self, path: Path, *, negotiate: bool = True, listening: bool = True) -> None:
        self.path = path
        self.negotiate = negotiate
        self.received: list[dict] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))  # the path exists from here on, as QEMU's does before it listens
        if listening:
            self.listen()

    def listen(self) -> None:
        self.server.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def send(self, conn: socket.socket, obj: dict) -> None:
        conn.sendall(json.dumps(obj).encode() + b"\r\n")

    def serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            self.send(conn, GREETING)
            for line in conn.makefile("rb"):
                msg = json.loads(line)
                self.received.append(msg)
                cmd, ident = msg["execute"], msg.get("id")
                if cmd == "qmp_capabilities":
                    if self.negotiate:
                        self.send(conn, {"return": {}, "id": ident})
                    else:
                        self.send(conn, {"error": {"class": "CommandNotFound", "desc": "nope"}, "id": ident})
                elif cmd == "query-status":
                    self.send(conn, {"event": "RESET", "data": {"guest": False}, "timestamp": {}})
                    self.send(conn, {"return": {"status": "running", "running": True}, "id": ident})
                elif cmd == "human-monitor-command":
                    text = f"you said: {msg['arguments']['command-line']}\r\n"
                    # A reply split over two writes, as a stream may deliver it.
                    data = json.dumps({"return": text, "id": ident}).encode() + b"\n"
                    conn.sendall(data[:10])
                    conn.sendall(data[10:])
                elif cmd == "hang":
                    pass
                elif cmd == "quit":
                    self.send(conn, {"return": {}, "id": ident})
                    self.send(conn, {"event": "SHUTDOWN", "data": {"guest": False}, "timestamp": {}})
                    return
                else:
                    self.send(
                        conn, {"error": {"class": "CommandNotFound", "desc": f"{cmd} unknown"}, "id": ident}
                    )

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake(tmp_path):
    server = FakeQMP(tmp_path / "qmp.sock")
    yield server
    server.close()


def test_negotiation_and_execute(fake):
    with QMPClient(fake.path) as qmp:
        assert qmp.greeting["version"]["qemu"]["major"] == 7
        assert qmp.execute("query-status") == {"status": "running", "running": True}
        assert [e["event"] for e in qmp.events()] == ["RESET"]
        assert qmp.events() == []
    assert fake.received[0]["execute"] == "qmp_capabilities"
    assert len({m["id"] for m in fake.received}) == len(fake.received)


def test_human_monitor(fake):
    with QMPClient(fake.path) as qmp:
        assert qmp.human_monitor("info usernet") == "you said: info usernet\r\n"
    assert fake.received[-1]["arguments"] == {"command-line": "info usernet"}


def test_error_reply_raises(fake):
    with QMPClient(fake.path) as qmp:
        with pytest.raises(PlatformError, match="CommandNotFound: frobnicate unknown"):
            qmp.execute("frobnicate", {"x": 1})
        assert qmp.execute("query-status")["running"] is True  # still usable


def test_timeout(fake):
    with QMPClient(fake.path) as qmp, pytest.raises(PlatformError, match="no reply to hang"):
        qmp.execute("hang", timeout=0.3)


def test_closed_connection_and_wait_event(fake):
    qmp = QMPClient(fake.path)
    qmp.connect()
    qmp.execute("quit")
    assert qmp.wait_event("SHUTDOWN", timeout=2)["data"] == {"guest": False}
    with pytest.raises(PlatformError, match=r"closed|cannot send"):
        qmp.execute("query-status")
    assert not qmp.connected
    with pytest.raises(PlatformError, match="not connected"):
        qmp.execute("query-status")


def test_failed_negotiation(tmp_path):
    server = FakeQMP(tmp_path / "q.sock", negotiate=False)
    try:
        qmp = QMPClient(server.path)
        with pytest.raises(PlatformError, match="qmp_capabilities"):
            qmp.connect(timeout=2)
        assert not qmp.connected
    finally:
        server.close()


def test_no_socket(tmp_path):
    with pytest.raises(PlatformError, match="cannot connect"):
        QMPClient(tmp_path / "absent.sock").connect(timeout=0.5)


def test_connect_waits_for_a_bound_socket_to_listen(tmp_path):
    server = FakeQMP(tmp_path / "q.sock", listening=False)
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(str(server.path))  # what a client meets in the window between bind and listen
        probe.close()
        timer = threading.Timer(0.3, server.listen)
        timer.start()
        with QMPClient(server.path) as qmp:
            assert qmp.execute("query-status")["running"] is True
        timer.join()
    finally:
        server.close()
