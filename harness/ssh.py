"""The SSH transport to a guest: key generation, readiness by banner, commands and file copies (paramiko).

Readiness is decided by reading the `SSH-` banner with a short timeout, never by a full login: QEMU's
user-mode network accepts a forwarded TCP connection before the guest listens and then stays silent, and
repeated half-open logins trip sshd's MaxStartups throttling.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import select
import selectors
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import cast

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from filelock import FileLock

from harness.errors import BootError, SSHError, WaitTimeout
from harness.forward import RemoteForward
from harness.forward import request as request_forward
from platforms.base import SSHEndpoint

log = logging.getLogger(__name__)

# paramiko's transport thread logs every failed handshake at ERROR, traceback included. The harness polls
# handshakes while a guest boots, so those failures are expected, and the ones that matter reach the caller as
# an SSHError naming the cause. Connections log on their own channel, kept to CRITICAL.
TRANSPORT_LOG = "harness.ssh.transport"
logging.getLogger(TRANSPORT_LOG).setLevel(logging.CRITICAL)

KEY_COMMENT = "railyard"
BANNER_TRY_TIMEOUT = 3.0
"""How long one attempt waits for the banner once connected."""
BANNER_INTERVAL = 0.5
"""Seconds between the starts of overlapping attempts."""
BANNER_MAX_PENDING = 3
"""At most this many attempts wait at once (each one sshd accepts costs the guest a fork and re-exec)."""
ALIVE_INTERVAL = 1.0
"""Seconds between checks that the machine still runs, while waiting for SSH."""
_CHUNK = 32768


# -- keys ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_line: str
    """`ssh-ed25519 AAAA... railyard`, ready for authorized_keys or Ignition's sshAuthorizedKeys."""
    pkey: paramiko.PKey


def generate_keypair(directory: Path) -> KeyPair:
    """Create an ed25519 key pair in `directory` (`id_ed25519` mode 0600 and `id_ed25519.pub`)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_line = f"{public.decode()} {KEY_COMMENT}"
    private_path = directory / "id_ed25519"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    os.chmod(private_path, 0o600)
    (directory / "id_ed25519.pub").write_text(public_line + "\n")
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(private_pem.decode()))
    return KeyPair(private_path=private_path, public_line=public_line, pkey=pkey)


def shared_keypair(directory: Path) -> KeyPair:
    """The key pair kept in `directory` (made once, under a lock, by whichever process comes first): the
    same key for every run on this host, so that machines saved in checkpoints accept later runs too."""
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / "key.lock"), timeout=60):
        private = directory / "id_ed25519"
        if private.is_file() and (directory / "id_ed25519.pub").is_file():
            return load_keypair(private)
        return generate_keypair(directory)


def load_keypair(private_path: Path) -> KeyPair:
    """Load a key pair written by `generate_keypair` (e.g. one shared by xdist workers)."""
    pkey = paramiko.Ed25519Key.from_private_key_file(str(private_path))
    return KeyPair(private_path, f"{pkey.get_name()} {pkey.get_base64()} {KEY_COMMENT}", pkey)


# -- readiness -------------------------------------------------------------------------------------------


class ReplayedSocket(socket.socket):
    """A connected socket whose first reads return the bytes already read from it: the sshd banner read while
    waiting for SSH, handed to paramiko so that the login reuses the connection (each connection costs sshd a
    fork and re-exec, about a second under TCG)."""

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self._pending = pending

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:bufsize], self._pending[bufsize:]
            return data
        return super().recv(bufsize, flags)


def open_banner(host: str, port: int, timeout: float = BANNER_TRY_TIMEOUT) -> tuple[str, ReplayedSocket]:
    """One attempt: connect and read lines until one starts with `SSH-`; return that line and the connection,
    which replays what was read. Raises OSError or TimeoutError (and closes the connection)."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        received = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("connected, but no SSH banner arrived")
            sock.settimeout(remaining)
            chunk = sock.recv(1024)
            if not chunk:
                raise ConnectionError("connection closed before an SSH banner arrived")
            received += chunk
            for line in received.split(b"\n")[:-1]:
                if line.startswith(b"SSH-"):
                    return line.decode(errors="replace").rstrip("\r"), ReplayedSocket(sock, received)
            if len(received) > 8192:
                raise ConnectionError("no SSH banner in the first 8 KiB")
    except BaseException:
        sock.close()
        raise


def read_banner(host: str, port: int, timeout: float = BANNER_TRY_TIMEOUT) -> str:
    """One attempt: connect and read lines until one starts with `SSH-`. Raises OSError or TimeoutError."""
    banner, sock = open_banner(host, port, timeout)
    sock.close()
    return banner


def wait_for_banner(
    host: str,
    port: int,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = BANNER_INTERVAL,
) -> str:
    """Poll until sshd at host:port sends its banner; return the banner line.

    Raises BootError as soon as `alive()` says the machine is gone, WaitTimeout after `timeout` seconds.
    """
    banner, sock = wait_for_banner_socket(host, port, timeout, alive=alive, interval=interval)
    sock.close()
    return banner


def wait_for_banner_socket(
    host: str,
    port: int,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = BANNER_INTERVAL,
    try_timeout: float = BANNER_TRY_TIMEOUT,
) -> tuple[str, ReplayedSocket]:
    """`wait_for_banner`, returning the connection too (for `SSHConnection.connect(sock=...)`).

    A new attempt starts every `interval` seconds while earlier ones still wait (each for up to `try_timeout`),
    and the first banner wins. With QEMU's user networking a connection is accepted on the host at once, and
    one made before the guest had its address waits on the forward's retransmitted SYNs for seconds after
    sshd is ready; a later attempt does not.
    """
    deadline = time.monotonic() + timeout
    race = _BannerRace(host, port, try_timeout)
    next_attempt = time.monotonic()
    next_alive = next_attempt
    try:
        while True:
            now = time.monotonic()
            if alive is not None and now >= next_alive:
                if not alive():
                    raise BootError(
                        f"the machine stopped while waiting for SSH on {host}:{port} ({race.last_error})"
                    )
                next_alive = now + ALIVE_INTERVAL
            if now >= deadline:
                race.expire()
                raise WaitTimeout(
                    f"no SSH banner on {host}:{port} within {timeout:.0f} s ({race.attempts} attempts; last: "
                    f"{race.last_error}); look at the console log for why the guest did not start sshd"
                )
            if now >= next_attempt and race.pending < BANNER_MAX_PENDING:
                race.start()
                next_attempt = now + interval
            won = race.wait(max(0.0, min(next_attempt, deadline, next_alive if alive else deadline) - now))
            if won is not None:
                log.debug("SSH banner on %s:%d after %d attempt(s): %s", host, port, race.attempts, won[0])
                return won
    finally:
        race.close()


class _BannerRace:
    """Connections to one SSH endpoint, each reading until a line starts with `SSH-`."""

    def __init__(self, host: str, port: int, try_timeout: float) -> None:
        self.host, self.port, self.try_timeout = host, port, try_timeout
        self.selector = selectors.DefaultSelector()
        self.received: dict[socket.socket, bytes] = {}
        self.started: dict[socket.socket, float] = {}
        self.attempts = 0
        self.last_error = "no attempt made"

    @property
    def pending(self) -> int:
        return len(self.received)

    def start(self) -> None:
        self.attempts += 1
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self._failed(exc)
            return
        sock.setblocking(False)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._failed(OSError(code, os.strerror(code)))
            return
        self.received[sock] = b""
        self.started[sock] = time.monotonic()
        self.selector.register(sock, selectors.EVENT_READ)

    def wait(self, seconds: float) -> tuple[str, ReplayedSocket] | None:
        """Read what arrives within `seconds`; the banner and its connection, once one sent it."""
        for key, _ in self.selector.select(seconds) if self.received else []:
            sock = cast(socket.socket, key.fileobj)
            try:
                chunk = sock.recv(1024)
            except OSError as exc:
                self._drop(sock, exc)
                continue
            if not chunk:
                self._drop(sock, ConnectionError("connection closed before an SSH banner arrived"))
                continue
            data = self.received[sock] = self.received[sock] + chunk
            for line in data.split(b"\n")[:-1]:
                if line.startswith(b"SSH-"):
                    self.selector.unregister(sock)
                    del self.received[sock], self.started[sock]
                    sock.setblocking(True)
                    return line.decode(errors="replace").rstrip("\r"), ReplayedSocket(sock, data)
            if len(data) > 8192:
                self._drop(sock, ConnectionError("no SSH banner in the first 8 KiB"))
        if not self.received:
            time.sleep(seconds)
        self.expire(time.monotonic() - self.try_timeout)
        return None

    def expire(self, started_before: float = math.inf) -> None:
        """Give up the attempts started before `started_before` (all of them by default)."""
        for sock, started in list(self.started.items()):
            if started <= started_before:
                self._drop(sock, TimeoutError("connected, but no SSH banner arrived"))

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _drop(self, sock: socket.socket, exc: BaseException) -> None:
        self._failed(exc)
        self.selector.unregister(sock)
        del self.received[sock], self.started[sock]
        sock.close()

    def close(self) -> None:
        for sock in list(self.received):
            self.selector.unregister(sock)
            sock.close()
        self.received.clear()
        self.started.clear()
        self.selector.close()


# -- commands --------------------------------------------------------------------------------------------


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

    def connect(self, sock: socket.socket | None = None) -> None:
        """Log in (a no-op while logged in). `sock`: a connection to the endpoint to log in over (one
        `wait_for_banner_socket` returned), else a new one."""
        with self._lock:
            if self._client is not None and self._is_active_locked():
                return
            self._close_locked()
            ep = self.endpoint
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
                    sock=sock,
                )
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                raise SSHError(f"cannot log in to {ep.user}@{ep.host}:{ep.port}: {exc!r}") from exc
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
        """Make a host service reachable from the guest (`ssh -R`), now and after every new login."""
        with self._lock:
            if forward not in self._forwards:
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

        try:
            channel.exec_command(command)
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
            raise SSHError(f"SSH failed while running {command!r}: {exc!r}") from exc
        if status == -1:
            raise SSHError(f"the SSH connection was lost while running {command!r} (no exit status)")
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
