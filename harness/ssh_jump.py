"""SSH jumps: a guest's SSH endpoint reached through another host (`ssh -J`), e.g. a remote hypervisor.

A machine on a remote libvirt hypervisor has its SSH forwarded from that host's 127.0.0.1, which this host
cannot reach. An `SSHJump` keeps one SSH connection to the hypervisor host (shared by every machine there,
logged in again when it drops) and opens a `direct-tcpip` channel through it for every connection to a guest:
the banner wait, the login, and so everything that rides on the login (commands, file copies, reverse
forwards of host services) work as they do over a local port.

The jump host's credentials follow OpenSSH's (and so libvirt's `qemu+ssh://`) defaults: the user and port of
the address, a key file if one is named (besides the agent's keys and `~/.ssh/id_*`), and the host key
checked against a known_hosts file (the named one, else `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`)
unless checking is turned off.
"""

from __future__ import annotations

import logging
import shlex
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import SSHError

log = logging.getLogger(__name__)

JUMP_LOG = "harness.ssh_jump.transport"
logging.getLogger(JUMP_LOG).setLevel(logging.CRITICAL)

CONNECT_TIMEOUT = 30.0
KEEPALIVE = 15
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


@dataclass(frozen=True)
class JumpAddress:
    """Where and how to log in to a jump host."""

    host: str
    user: str
    port: int = 22
    key_file: Path | None = None
    known_hosts: Path | None = None
    """The file the host key is checked against; None: the user's and the system's, as OpenSSH does."""
    verify_host_key: bool = True

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def known_hosts_files(self) -> list[Path]:
        if self.known_hosts is not None:
            return [self.known_hosts]
        return [p for p in (Path.home() / ".ssh" / "known_hosts", SYSTEM_KNOWN_HOSTS) if p.is_file()]

    def ssh_options(self) -> list[str]:
        """OpenSSH options that reach a target through this jump (for a command a person runs)."""
        inner = ["ssh", "-p", str(self.port)]
        if self.key_file is not None:
            inner += ["-i", str(self.key_file)]
        if not self.verify_host_key:
            inner += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        elif self.known_hosts is not None:
            inner += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        inner += ["-W", "%h:%p", f"{self.user}@{self.host}"]
        return ["-o", f"ProxyCommand={shlex.join(inner)}"]


class SSHJump:
    """One SSH connection to a jump host, through which connections to its local ports are opened."""

    def __init__(self, address: JumpAddress, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return str(self.address)

    def transport(self) -> paramiko.Transport:
        """The live connection to the jump host, logging in (again) first if there is none."""
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if client is not None:
                client.close()
                self._client = None
            client = self._login()
            transport = client.get_transport()
            if transport is None:
                client.close()
                raise SSHError(f"the SSH connection to the jump host {self.address} closed at once")
            transport.set_keepalive(KEEPALIVE)
            self._client = client
            return transport

    def _login(self) -> paramiko.SSHClient:
        a = self.address
        client = paramiko.SSHClient()
        client.set_log_channel(JUMP_LOG)
        if a.verify_host_key:
            for path in a.known_hosts_files():
                try:
                    client.load_host_keys(str(path))
                except (OSError, paramiko.SSHException) as exc:
                    raise SSHError(f"cannot read the known hosts file {path}: {exc}") from exc
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            # Accepted in memory only: nothing is written to any known_hosts file.
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(
                a.host,
                port=a.port,
                username=a.user,
                key_filename=str(a.key_file) if a.key_file is not None else None,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SSHError(
                f"the jump host {a}'s host key does not match its known_hosts entry: {exc}"
            ) from exc
        except paramiko.SSHException as exc:
            client.close()
            hint = ""
            if "not found in known_hosts" in str(exc):
                files = ", ".join(map(str, a.known_hosts_files())) or "none found"
                hint = f" (known hosts read: {files}; add the host's key there, or name a file with known_hosts=)"
            raise SSHError(f"cannot log in to the jump host {a}: {exc}{hint}") from exc
        except (OSError, EOFError) as exc:
            client.close()
            raise SSHError(f"cannot log in to the jump host {a}: {exc!r}") from exc
        log.info("SSH jump host %s connected", a)
        return client

    def open(self, host: str, port: int, timeout: float) -> paramiko.Channel:
        """A connection to `host:port` as the jump host sees it (`host` is usually its own 127.0.0.1).

        Raises ConnectionRefusedError when the jump host cannot connect there, SSHError when the jump host
        itself cannot be reached."""
        transport = self.transport()
        try:
            return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            raise ConnectionRefusedError(
                f"the jump host {self.address} cannot connect to {host}:{port}: {exc.text}"
            ) from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise SSHError(
                f"no channel through the jump host {self.address} to {host}:{port}: {exc!r}"
            ) from exc

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class ReplayedChannel:
    """A channel through a jump whose first reads return the bytes already read from it (the sshd banner),
    handed to paramiko in place of a socket, like `harness.ssh_banner.ReplayedSocket`."""

    def __init__(self, channel: paramiko.Channel, pending: bytes) -> None:
        self.channel = channel
        self._pending = pending

    def recv(self, bufsize: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:bufsize], self._pending[bufsize:]
            return data
        return self.channel.recv(bufsize)

    def send(self, data: bytes) -> int:
        return self.channel.send(data)

    def sendall(self, data: bytes) -> None:
        self.channel.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        self.channel.settimeout(timeout)

    def setblocking(self, blocking: bool) -> None:
        self.channel.setblocking(blocking)

    def fileno(self) -> int:
        return self.channel.fileno()

    @property
    def _closed(self) -> bool:
        # paramiko's transport looks at its socket's `_closed` when it stops.
        return bool(self.channel.closed)

    def close(self) -> None:
        self.channel.close()


BannerStream = socket.socket | ReplayedChannel
"""What a banner wait hands on to the login: a socket, or a channel through a jump."""
