"""Key generation and readiness by SSH banner, against local TCP servers on 127.0.0.1."""

from __future__ import annotations

import socket
import stat
import threading
import time
from typing import Any

import paramiko
import pytest

from harness.errors import BootError, WaitTimeout
from harness.ssh import (
    BANNER_TRY_TIMEOUT,
    CommandResult,
    generate_keypair,
    load_keypair,
    user_keypair,
    wait_for_banner,
    wait_for_banner_socket,
)


def test_generate_keypair_round_trip(tmp_path):
    pair = generate_keypair(tmp_path / "keys")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.private_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    kind, blob, comment = pair.public_line.split()
    assert (kind, comment) == ("ssh-ed25519", "railyard")
    assert blob.startswith("AAAA")
    assert isinstance(pair.pkey, paramiko.Ed25519Key)
    assert pair.pkey.get_base64() == blob
    assert (tmp_path / "keys" / "id_ed25519.pub").read_text().strip() == pair.public_line
    again = load_keypair(pair.private_path)
    assert again.public_line == pair.public_line
    # The private key signs what the public half verifies.
    signature = pair.pkey.sign_ssh_data(b"data")
    signature.rewind()
    public = paramiko.Ed25519Key(data=pair.pkey.asbytes())
    assert public.verify_ssh_sig(b"data", signature)


def test_keypairs_differ(tmp_path):
    assert generate_keypair(tmp_path / "a").public_line != generate_keypair(tmp_path / "b").public_line


def test_a_users_key_pair_is_made_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bob = user_keypair("bob")
    assert bob.private_path == tmp_path / "cache" / "railyard" / "ssh" / "users" / "bob" / "id_ed25519"
    assert bob.public_line.split()[2] == "bob@railyard"
    assert user_keypair("bob").public_line == bob.public_line  # a later run gets the same key
    assert user_keypair("alice").public_line.split()[1] != bob.public_line.split()[1]


class TcpServer:
    """Accepts connections on 127.0.0.1 and either sends `payload` after `delay` or stays silent (always, or
    on its first `silent_first` connections)."""

    def __init__(self, payload: bytes | None, delay: float = 0.0, silent_first: int = 0) -> None:
        self.payload = payload
        self.delay = delay
        self.silent_first = silent_first
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            if self.payload is not None and self.answers():
                time.sleep(self.delay)
                conn.sendall(self.payload)

    def answers(self) -> bool:
        """Whether the connection just accepted gets the payload."""
        return len(self.connections) > self.silent_first

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def server_factory():
    servers: list[TcpServer] = []

    def make(payload: bytes | None, delay: float = 0.0, silent_first: int = 0) -> TcpServer:
        servers.append(TcpServer(payload, delay, silent_first))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_banner_ok(server_factory):
    server = server_factory(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", delay=0.2)
    assert wait_for_banner("127.0.0.1", server.port, 5) == "SSH-2.0-OpenSSH_9.2p1 Debian-2"


def test_banner_after_preamble_lines(server_factory):
    server = server_factory(b"Welcome\r\nSSH-2.0-x\r\n")
    assert wait_for_banner("127.0.0.1", server.port, 5) == "SSH-2.0-x"


def test_silent_accept_is_not_ready(server_factory):
    # What QEMU's user-net forward does before the guest's sshd listens.
    server = server_factory(None)
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match="no SSH banner") as info:
        wait_for_banner("127.0.0.1", server.port, 2.5, interval=0.2)
    assert time.monotonic() - start < 6
    assert "Timeout" in str(info.value) or "timed out" in str(info.value)


def test_refused_times_out():
    port = free_port()
    with pytest.raises(WaitTimeout, match="ConnectionRefusedError"):
        wait_for_banner("127.0.0.1", port, 1.0, interval=0.2)


def test_dead_machine_aborts_early():
    port = free_port()
    calls = []

    def alive() -> bool:
        calls.append(1)
        return len(calls) < 3

    start = time.monotonic()
    with pytest.raises(BootError, match="stopped"):
        wait_for_banner("127.0.0.1", port, 30, alive=alive, interval=0.05)
    assert time.monotonic() - start < 5


def test_command_result_ok():
    assert CommandResult("true", 0, "", "").ok
    assert not CommandResult("false", 1, "", "").ok


def test_a_later_attempt_wins_over_a_stalled_one(server_factory):
    # QEMU's user-net forward accepts at once; a connection made before the guest had its address stalls
    # (its SYN is retransmitted later), while one made after sshd listens gets the banner at once.
    server = server_factory(b"SSH-2.0-late\r\n", silent_first=1)
    start = time.monotonic()
    banner, sock = wait_for_banner_socket("127.0.0.1", server.port, 10, interval=0.2)
    sock.close()
    assert banner == "SSH-2.0-late"
    assert time.monotonic() - start < BANNER_TRY_TIMEOUT
    assert len(server.connections) >= 2


class ReadyLater(TcpServer):
    """Silent on every connection made before `ready` is set (QEMU's forward before the guest's network is
    up); sends the banner on the ones made after."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        super().__init__(b"SSH-2.0-ready\r\n")

    def answers(self) -> bool:
        return self.ready.is_set()


def test_unanswered_attempts_slow_down(server_factory):
    # Each attempt QEMU's forward leaves unanswered reaches the guest's sshd later: few may be made.
    server = server_factory(None)
    with pytest.raises(WaitTimeout):
        wait_for_banner("127.0.0.1", server.port, 6.0, interval=0.2)
    # The pauses grow 0.2, 0.4, 0.8, ... up to 4 s: attempts at 0, 0.2, 0.6, 1.4, 3.0 and 6.2 (5 in 6 s),
    # where a fixed pace would have made 18.
    assert 3 <= len(server.connections) <= 6, len(server.connections)


def test_refusals_keep_the_fast_pace():
    # A refusal means nothing waits anywhere: attempts stay at the fast pace (about 30 in 3 s at 0.1 s).
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    listener.close()
    with pytest.raises(WaitTimeout) as info:
        wait_for_banner_socket("127.0.0.1", port, 3.0, interval=0.1)
    assert "ConnectionRefusedError" in str(info.value)
    count = int(str(info.value).split("(")[1].split(" attempts")[0])
    assert count >= 15, count


def hinted_wait(
    hint_at: float, *, interval: float = 0.2, looks: list[float] | None = None, **options: Any
) -> tuple[float, int]:
    """Wait for a guest whose sshd answers, and whose console shows the hint, `hint_at` seconds from now;
    return how long the wait took and how many connections were made. Each look for the hint is recorded in
    `looks` when given."""
    server = ReadyLater()
    try:
        hinted = threading.Event()

        def hint() -> bool:
            if looks is not None:
                looks.append(time.monotonic())
            return hinted.is_set()

        threading.Timer(hint_at, lambda: (server.ready.set(), hinted.set())).start()
        start = time.monotonic()
        banner, sock = wait_for_banner_socket(
            "127.0.0.1", server.port, 30, interval=interval, hint=hint, **options
        )
        sock.close()
        assert banner == "SSH-2.0-ready"
        return time.monotonic() - start, len(server.connections)
    finally:
        server.close()


def test_a_hint_brings_the_fast_pace_back():
    # Unanswered attempts slowed the pace to its slowest; the console then shows a login prompt (the hint)
    # and sshd listens: the banner comes within the fast interval, not the slow one.
    took, _ = hinted_wait(3.0, slowest=20.0)
    assert took < 3.0 + 1.0


def test_a_trusted_hint_leaves_one_attempt_before_it():
    # The guest shows the hint on every boot: before it, one attempt at once and none for the grace (each
    # one made before the guest has an address is a wasted sshd fork later); after it, the fast pace.
    took, connections = hinted_wait(3.0, slowest=1.0, trusted_hint=True, grace=10.0)
    assert took < 3.0 + 1.0
    # At 0 before the hint at 3 s (an untrusted hint: 0, 0.2, 0.6, 1.4 and 3.0 s), one after it.
    assert connections == 2, connections


def test_a_booting_guest_with_a_trusted_hint_gets_no_attempt_before_it():
    took, connections = hinted_wait(2.0, slowest=1.0, trusted_hint=True, grace=10.0, at_once=False)
    assert took < 2.0 + 1.0
    assert connections == 1, connections


def test_the_hint_is_looked_at_every_hint_poll_however_far_apart_attempts_are():
    # The harness reads the console for the hint every `hint_poll` seconds: the attempt follows the hint
    # within about that, where looking at the attempts' pace (2 s here) would have waited up to 2 s.
    looks: list[float] = []
    took, _ = hinted_wait(1.0, interval=2.0, looks=looks, trusted_hint=True, at_once=False, hint_poll=0.05)
    assert 1.0 <= took < 1.0 + 0.4, took
    assert len(looks) >= 10, len(looks)


def test_after_a_trusted_hint_attempts_do_not_overlap(server_factory):
    # The guest shows the line once it has its address and sshd listens: the attempt made then goes through,
    # and a banner that takes a while (sshd's fork and re-exec under TCG) gets no second attempt beside it.
    server = server_factory(b"SSH-2.0-slow\r\n", delay=1.2)
    banner, sock = wait_for_banner_socket(
        "127.0.0.1", server.port, 30, interval=0.2, hint=lambda: True, trusted_hint=True, at_once=False
    )
    sock.close()
    assert banner == "SSH-2.0-slow"
    # Attempts that had overlapped it would wait in the listener's backlog: give the server time to take them.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and len(server.connections) == 1:
        time.sleep(0.05)
    assert len(server.connections) == 1


def test_a_trusted_hint_that_never_shows_still_finds_sshd_after_the_grace():
    # A boot whose line was lost (garbled on the console): attempts resume after the grace.
    server = ReadyLater()
    try:
        server.ready.set()
        start = time.monotonic()
        banner, sock = wait_for_banner_socket(
            "127.0.0.1", server.port, 30, interval=0.2, hint=lambda: False, trusted_hint=True,
            at_once=False, grace=1.5,
        )  # fmt: skip
        sock.close()
        took = time.monotonic() - start
        assert banner == "SSH-2.0-ready"
        assert 1.5 <= took < 1.5 + 1.0, took
        assert len(server.connections) == 1
    finally:
        server.close()


def test_a_trusted_hint_still_answers_a_guest_that_is_up(server_factory):
    # A machine restored from a checkpoint is up before any hint can show: the first attempt finds sshd.
    server = server_factory(b"SSH-2.0-up\r\n")
    start = time.monotonic()
    banner, sock = wait_for_banner_socket(
        "127.0.0.1", server.port, 30, interval=0.2, hint=lambda: False, trusted_hint=True
    )
    sock.close()
    assert banner == "SSH-2.0-up"
    assert time.monotonic() - start < 1.0
    assert len(server.connections) == 1


def test_without_a_hint_the_slow_pace_still_finds_sshd(server_factory):
    server = ReadyLater()
    try:
        threading.Timer(3.0, server.ready.set).start()
        start = time.monotonic()
        banner, sock = wait_for_banner_socket("127.0.0.1", server.port, 30, interval=0.2, slowest=2.0)
        sock.close()
        assert banner == "SSH-2.0-ready"
        assert time.monotonic() - start < 3.0 + 2.0 + 0.5
    finally:
        server.close()
