"""SSHConnection against a small paramiko SSH server on 127.0.0.1 that runs commands with the local shell."""

from __future__ import annotations

import socket
import subprocess
import threading

import paramiko
import pytest

from harness.errors import SessionLost, SSHError, WaitTimeout
from harness.ssh import SSHConnection, generate_keypair, wait_for_banner_socket
from platforms.base import SSHEndpoint


class ShellServer(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey) -> None:
        self.allowed = allowed

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "core" and key.get_base64() == self.allowed.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if command == DROP:  # what a shutdown that stops the connection's sshd does to a running command
            threading.Thread(target=drop_once_running, args=(channel,), daemon=True).start()
            return True
        threading.Thread(target=run_locally, args=(channel, command.decode()), daemon=True).start()
        return True


DROP = b"drop the connection"


def drop_once_running(channel: paramiko.Channel) -> None:
    # The client sends its stdin only once the command was accepted: the command is running when it comes.
    channel.recv(1)
    channel.get_transport().close()


def run_locally(channel: paramiko.Channel, command: str) -> None:
    proc = subprocess.Popen(
        ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def pump_in() -> None:
        while data := channel.recv(32768):
            proc.stdin.write(data)
        proc.stdin.close()

    def pump(stream, send) -> None:
        while data := stream.read1(32768):
            send(data)

    threads = [
        threading.Thread(target=pump_in, daemon=True),
        threading.Thread(target=pump, args=(proc.stdout, channel.sendall), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, channel.sendall_stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        threads[1].join()
        threads[2].join()
        status = proc.wait()
        channel.send_exit_status(status)
        channel.shutdown_write()
        channel.close()
    except OSError:
        proc.kill()


@pytest.fixture(scope="module")
def host_key():
    return paramiko.RSAKey.generate(2048)


@pytest.fixture
def server(tmp_path, host_key):
    pair = generate_keypair(tmp_path / "keys")
    listener = socket.create_server(("127.0.0.1", 0))
    transports: list[paramiko.Transport] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transport.start_server(server=ShellServer(pair.pkey))
            transports.append(transport)

    threading.Thread(target=accept, daemon=True).start()
    yield SSHEndpoint("127.0.0.1", listener.getsockname()[1], "core"), pair
    listener.close()
    for transport in transports:
        transport.close()


@pytest.fixture
def conn(server):
    endpoint, pair = server
    with SSHConnection(endpoint, pair.pkey, connect_timeout=10) as connection:
        yield connection


def test_run(conn):
    result = conn.run("echo out; echo err >&2; exit 3", timeout=10)
    assert (result.status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok
    assert conn.run("true", timeout=10).ok
    assert conn.is_active


def test_large_output_on_both_streams(conn):
    result = conn.run(
        "head -c 3000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2", timeout=60
    )
    assert (len(result.stdout), len(result.stderr)) == (3000000, 3000000)


def test_stdin(conn):
    assert conn.run("wc -c", timeout=30, stdin=b"x" * 1_000_000).stdout.strip() == "1000000"


def test_timeout_names_the_command(conn):
    with pytest.raises(WaitTimeout, match="sleep 30"):
        conn.run("echo started; sleep 30", timeout=1)


def test_copy_without_sftp_falls_back_to_cat(conn, tmp_path):
    source = tmp_path / "payload"
    source.write_bytes(bytes(range(256)) * 1000)
    remote = tmp_path / "remote" / "copy"
    remote.parent.mkdir()
    conn.put(source, str(remote), mode=0o640)
    assert remote.read_bytes() == source.read_bytes()
    assert oct(remote.stat().st_mode & 0o777) == "0o640"
    back = tmp_path / "back" / "copy"
    conn.get(str(remote), back)
    assert back.read_bytes() == source.read_bytes()
    with pytest.raises(SSHError, match="status"):
        conn.get(str(tmp_path / "absent"), tmp_path / "x")


def test_wrong_key_is_an_ssh_error(server, tmp_path):
    endpoint, _ = server
    other = generate_keypair(tmp_path / "other")
    with pytest.raises(SSHError, match="cannot log in"):
        SSHConnection(endpoint, other.pkey, connect_timeout=5).connect()


def test_a_connection_ended_while_a_command_runs_is_a_lost_session(conn):
    # The command was sent and may have run (a reboot ends the session that asked for it): callers can
    # tell this from a transport that never carried the command.
    with pytest.raises(SessionLost, match="drop the connection"):
        conn.run(DROP.decode(), timeout=10, stdin=b"x")
    assert conn.run("echo again", timeout=10).stdout == "again\n"


def test_reconnects_after_close(conn):
    conn.close()
    assert not conn.is_active
    assert conn.run("echo again", timeout=10).stdout == "again\n"


def test_a_failed_handshake_is_one_ssh_error_and_no_logged_traceback(tmp_path, caplog):
    # What a booting guest behind QEMU's user network looks like: the port accepts, then closes.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_and_close() -> None:
        sock, _ = listener.accept()
        sock.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    key = generate_keypair(tmp_path / "key")
    with caplog.at_level("DEBUG"), pytest.raises(SSHError, match="cannot log in"):
        SSHConnection(SSHEndpoint("127.0.0.1", port, "core"), key.pkey, connect_timeout=5).connect()
    listener.close()
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_the_login_reuses_the_connection_the_banner_was_read_on(tmp_path, host_key):
    """Waiting for SSH reads sshd's banner; the login then goes over that same connection (a new one costs a
    guest's sshd a fork and re-exec)."""
    pair = generate_keypair(tmp_path / "keys")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[paramiko.Transport] = []

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(host_key)
            transport.start_server(server=ShellServer(pair.pkey))
            accepted.append(transport)

    threading.Thread(target=accept, daemon=True).start()
    endpoint = SSHEndpoint("127.0.0.1", listener.getsockname()[1], "core")
    try:
        banner, sock = wait_for_banner_socket(endpoint.host, endpoint.port, 10)
        assert banner.startswith("SSH-2.0-")
        connection = SSHConnection(endpoint, pair.pkey, connect_timeout=10)
        try:
            connection.connect(sock)
            assert connection.run("echo over one connection", timeout=10).stdout == "over one connection\n"
            assert len(accepted) == 1
        finally:
            connection.close()
    finally:
        listener.close()
        for transport in accepted:
            transport.close()
