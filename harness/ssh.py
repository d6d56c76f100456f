"""The SSH transport to a guest: commands and file copies over one authenticated session (paramiko).

Key pairs live in `harness.ssh_keys` and readiness by banner in `harness.ssh_banner`; their names are
importable from here too.
"""

from __future__ import annotations

import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import cast

import paramiko

from harness.errors import SessionLost, SSHError, WaitTimeout
from harness.forward import RemoteForward
from harness.forward import request as request_forward
from harness.ssh_banner import (
    ALIVE_INTERVAL,
    BANNER_INTERVAL,
    BANNER_MAX_PENDING,
    BANNER_TRY_TIMEOUT,
    ReplayedSocket,
    open_banner,
    read_banner,
    wait_for_banner,
    wait_for_banner_socket,
)
from harness.ssh_jump import BannerStream, ReplayedChannel
from harness.ssh_keys import (
    KEY_COMMENT,
    KeyPair,
    generate_keypair,
    load_keypair,
    shared_keypair,
    user_keypair,
)
from platforms.base import SSHEndpoint

__all__ = [
    "ALIVE_INTERVAL",
    "BANNER_INTERVAL",
    "BANNER_MAX_PENDING",
    "BANNER_TRY_TIMEOUT",
    "KEY_COMMENT",
    "TRANSPORT_LOG",
    "CommandResult",
    "KeyPair",
    "ReplayedSocket",
    "SSHConnection",
    "generate_keypair",
    "load_keypair",
    "open_banner",
    "read_banner",
    "shared_keypair",
    "user_keypair",
    "wait_for_banner",
    "wait_for_banner_socket",
]

log = logging.getLogger(__name__)

# paramiko's transport thread logs every failed handshake at ERROR, traceback included. The harness polls
# handshakes while a guest boots, so those failures are expected, and the ones that matter reach the caller as
# an SSHError naming the cause. Connections log on their own channel, kept to CRITICAL.
TRANSPORT_LOG = "harness.ssh.transport"
logging.getLogger(TRANSPORT_LOG).setLevel(logging.CRITICAL)

_CHUNK = 32768


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class SSHConnection:
    """One authenticated SSH session to a guest. Host keys are not checked: guests are disposable."""

    def __init__(
        self,
        endpoint: SSHEndpoint,
        pkey: paramiko.PKey,
        *,
        connect_timeout: float,
        forwards: Sequence[RemoteForward] = (),
    ) -> None:
        self.endpoint = endpoint
        self.pkey = pkey
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._forwards: list[RemoteForward] = list(forwards)
        """Reverse forwards asked for again after every login (see harness.forward)."""

    def connect(self, sock: BannerStream | None = None) -> None:
        """Log in (a no-op while logged in). `sock`: a connection to the endpoint to log in over (one
        `wait_for_banner_socket` returned), else a new one (through the endpoint's jump, if it has one)."""
        with self._lock:
            if self._client is not None and self._is_active_locked():
                if sock is not None:
                    sock.close()
                return
            self._close_locked()
            ep = self.endpoint
            if sock is None and ep.via is not None:
                try:
                    sock = ReplayedChannel(ep.via.open(ep.host, ep.port, self.connect_timeout), b"")
                except OSError as exc:
                    raise SSHError(
                        f"cannot reach {ep.user}@{ep.host}:{ep.port} through {ep.via}: {exc}"
                    ) from exc
            client = paramiko.SSHClient()
            # An empty in-memory host key store: nothing is read from or written to ~/.ssh.
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            client.set_log_channel(TRANSPORT_LOG)
            try:
                client.connect(
                    ep.host,
                    port=ep.port,
                    username=ep.user,
                    pkey=self.pkey,
                    timeout=self.connect_timeout,
                    banner_timeout=self.connect_timeout,
                    auth_timeout=self.connect_timeout,
                    allow_agent=False,
                    look_for_keys=False,
                    # paramiko reads and writes the channel through a jump as it does a socket.
                    sock=cast(socket.socket, sock) if isinstance(sock, ReplayedChannel) else sock,
                )
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                via = f" through {ep.via}" if ep.via is not None else ""
                raise SSHError(f"cannot log in to {ep.user}@{ep.host}:{ep.port}{via}: {exc!r}") from exc
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(15)
                try:
                    for forward in self._forwards:
                        request_forward(transport, forward)
                except SSHError:
                    client.close()
                    raise
            self._client = client
            log.debug("SSH connected to %s@%s:%d", ep.user, ep.host, ep.port)

    def add_forward(self, forward: RemoteForward) -> None:
        """Make a host service reachable from the guest (`ssh -R`), now and after every new login. Asking
        again for a forward this connection has is a no-op (every login asks for all of them)."""
        with self._lock:
            if forward in self._forwards:
                return
            self._forwards.append(forward)
            client = self._client if self._is_active_locked() else None
            transport = client.get_transport() if client is not None else None
            if transport is not None:
                request_forward(transport, forward)

    @property
    def is_active(self) -> bool:
        with self._lock:
            return self._is_active_locked()

    def _is_active_locked(self) -> bool:
        if self._client is None:
            return False
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _transport(self) -> paramiko.Transport:
        """The live transport, logging in (again) first if the connection is not up (e.g. after a reboot)."""
        self.connect()
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            raise SSHError(f"the SSH connection to {self.endpoint.host}:{self.endpoint.port} was closed")
        return transport

    def run(self, command: str, *, timeout: float, stdin: bytes | None = None) -> CommandResult:
        """Run `command` through the guest user's shell. A non-zero exit is a result, not an error.

        Raises WaitTimeout if it does not finish within `timeout` seconds, SSHError if the transport fails."""
        status, out, err = self._run_raw(command, timeout, stdin)
        return CommandResult(command, status, out.decode(errors="replace"), err.decode(errors="replace"))

    def _run_raw(self, command: str, timeout: float, stdin: bytes | None) -> tuple[int, bytes, bytes]:
        transport = self._transport()
        try:
            channel = transport.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"cannot open an SSH channel to run {command!r}: {exc!r}") from exc
        try:
            return self._run_on(channel, command, timeout, stdin)
        finally:
            channel.close()

    def _run_on(
        self, channel: paramiko.Channel, command: str, timeout: float, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        deadline = time.monotonic() + timeout
        stdout, stderr = bytearray(), bytearray()

        def expired() -> WaitTimeout:
            return WaitTimeout(
                f"command did not finish within {timeout:.0f} s on {self.endpoint.host}:{self.endpoint.port}: "
                f"{command}\n--- stdout so far ---\n{stdout.decode(errors='replace')[-2000:]}"
                f"\n--- stderr so far ---\n{stderr.decode(errors='replace')[-2000:]}"
            )

        sent = False
        try:
            channel.exec_command(command)
            sent = True
            if stdin is not None:
                threading.Thread(target=self._feed, args=(channel, stdin), daemon=True).start()
            else:
                channel.shutdown_write()
            # Both streams are drained as data comes, so a command filling one pipe never blocks.
            while True:
                while channel.recv_ready():
                    stdout += channel.recv(_CHUNK)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(_CHUNK)
                if channel.eof_received or channel.closed:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise expired()
                select.select([channel], [], [], min(remaining, 1.0))
            while channel.recv_ready():
                stdout += channel.recv(_CHUNK)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(_CHUNK)
            if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise expired()
            status = channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            lost = SessionLost if sent else SSHError
            raise lost(f"SSH failed while running {command!r}: {exc!r}") from exc
        if status == -1:
            raise SessionLost(f"the SSH connection was lost while running {command!r} (no exit status)")
        return status, bytes(stdout), bytes(stderr)

    @staticmethod
    def _feed(channel: paramiko.Channel, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                sent = channel.send(bytes(view[:_CHUNK]))
                if sent <= 0:
                    break
                view = view[sent:]
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            log.debug("writing stdin stopped: %r", exc)

    # -- files ---------------------------------------------------------------------------------------------

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """Copy a local file to the guest (SFTP, or `cat` over exec if the guest has no SFTP server)."""
        try:
            sftp = self._open_sftp()
        except SSHError:
            sftp = None
        if sftp is not None:
            try:
                with sftp:
                    sftp.put(str(local), remote)
                    if mode is not None:
                        sftp.chmod(remote, mode)
                return
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise SSHError(f"cannot copy {local} to the guest's {remote}: {exc!r}") from exc
        quoted = shlex.quote(remote)
        command = f"cat > {quoted}" + (f" && chmod {mode:o} {quoted}" if mode is not None else "")
        status, _, err = self._run_raw(command, max(60.0, self.connect_timeout), local.read_bytes())
        if status != 0:
            raise SSHError(f"cannot copy {local} to the guest's {remote}: {err.decode(errors='replace')}")

    def get(self, remote: str, local: Path) -> None:
        """Copy a file from the guest (SFTP, or `cat` over exec if the guest has no SFTP server)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            sftp = self._open_sftp()
        except SSHError:
            sftp = None
        if sftp is not None:
            try:
                with sftp:
                    sftp.get(remote, str(local))
                return
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise SSHError(f"cannot copy the guest's {remote} to {local}: {exc!r}") from exc
        result = self._run_bytes(f"cat {shlex.quote(remote)}")
        local.write_bytes(result)

    def _open_sftp(self) -> paramiko.SFTPClient:
        transport = self._transport()
        try:
            sftp = paramiko.SFTPClient.from_transport(transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"no SFTP on {self.endpoint.host}:{self.endpoint.port}: {exc!r}") from exc
        if sftp is None:
            raise SSHError(f"no SFTP on {self.endpoint.host}:{self.endpoint.port}")
        return sftp

    def _run_bytes(self, command: str) -> bytes:
        status, out, err = self._run_raw(command, max(60.0, self.connect_timeout), None)
        if status != 0:
            raise SSHError(f"{command!r} failed with status {status}: {err.decode(errors='replace')}")
        return out

    # -- lifecycle -----------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def __enter__(self) -> SSHConnection:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
