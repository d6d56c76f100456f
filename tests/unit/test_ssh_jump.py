"""SSH through a jump host: a real OpenSSH sshd on 127.0.0.1 as the jump host, the small paramiko server of
test_ssh_connection as the guest behind it. Commands, file copies, reverse forwards and the banner wait all
go through `direct-tcpip` channels the jump host opens."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import SSHError
from harness.ssh import SSHConnection, generate_keypair, wait_for_banner_socket
from harness.ssh_jump import JumpAddress, ReplayedChannel, SSHJump
from platforms.base import SSHEndpoint
from tests.libvirt.daemons import stop_pid, wait_for
from tests.unit.test_ssh_connection import host_key, server  # noqa: F401 - fixtures

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def jump_host(tmp_path: Path) -> Iterator[JumpAddress]:
    """sshd on 127.0.0.1 with a key pair and host key of its own; root logs in with the key."""
    if os.geteuid() != 0 or not SSHD.exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("needs root, /usr/sbin/sshd and ssh-keygen")
    d = tmp_path / "jump"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client")], check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    port = free_port()
    (d / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {' '.join((d / 'host.pub').read_text().split()[:2])}\n"
    )
    config = d / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        "StrictModes no\nAllowTcpForwarding yes\n"
    )
    privsep = Path("/run/sshd")  # sshd's privilege separation directory
    made = not privsep.exists()
    privsep.mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)])
    try:
        wait_for(lambda: (d / "sshd.pid").exists(), 30, "sshd starting")
        yield JumpAddress("127.0.0.1", "root", port, d / "client", d / "known_hosts")
    finally:
        stop_pid(proc.pid, "sshd")
        proc.wait()
        if made:
            privsep.rmdir()


def test_commands_and_copies_go_through_the_jump(server, jump_host, tmp_path):  # noqa: F811
    direct, pair = server
    jump = SSHJump(jump_host)
    try:
        endpoint = SSHEndpoint("127.0.0.1", direct.port, "core", via=jump)
        banner, stream = wait_for_banner_socket(endpoint.host, endpoint.port, 10, via=jump)
        assert banner.startswith("SSH-2.0-")
        assert isinstance(stream, ReplayedChannel)
        conn = SSHConnection(endpoint, pair.pkey, connect_timeout=10)
        conn.connect(stream)  # the login reuses the banner's channel
        try:
            assert conn.run("echo through", timeout=10).stdout == "through\n"
            (tmp_path / "f").write_bytes(b"x" * 100000)
            conn.put(tmp_path / "f", str(tmp_path / "copied"))
            assert (tmp_path / "copied").read_bytes() == b"x" * 100000
        finally:
            conn.close()
        # A second connection opens its own channel through the same jump login.
        with SSHConnection(endpoint, pair.pkey, connect_timeout=10) as again:
            assert again.run("echo again", timeout=10).ok
    finally:
        jump.close()


def test_a_closed_port_behind_the_jump_is_refused(jump_host):
    jump = SSHJump(jump_host)
    try:
        with pytest.raises(ConnectionRefusedError, match=r"cannot connect to 127\.0\.0\.1"):
            jump.open("127.0.0.1", free_port(), 10)
    finally:
        jump.close()


def test_an_unknown_host_key_is_refused_unless_checking_is_off(jump_host, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    strict = JumpAddress(jump_host.host, jump_host.user, jump_host.port, jump_host.key_file, empty)
    with pytest.raises(SSHError, match="not found in known_hosts"):
        SSHJump(strict).transport()
    loose = JumpAddress(jump_host.host, jump_host.user, jump_host.port, jump_host.key_file, empty, False)
    jump = SSHJump(loose)
    try:
        assert jump.transport().is_active()
    finally:
        jump.close()
    assert empty.read_text() == "", "a host key was written"


def test_an_unreachable_jump_host_is_an_ssh_error(tmp_path):
    pair = generate_keypair(tmp_path / "keys")
    jump = SSHJump(JumpAddress("127.0.0.1", "root", free_port(), verify_host_key=False), connect_timeout=5)
    conn = SSHConnection(SSHEndpoint("127.0.0.1", 22, "core", via=jump), pair.pkey, connect_timeout=5)
    with pytest.raises(SSHError, match="jump host"):
        conn.connect()
