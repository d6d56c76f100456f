"""Readiness of a guest's SSH, decided by reading the `SSH-` banner with a short timeout, never by a full login.

QEMU's user-mode network accepts a forwarded TCP connection before the guest listens and then stays silent,
and repeated half-open logins trip sshd's MaxStartups throttling. The connection that carried the banner is
handed on, so that the login reuses it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import cast

import paramiko

from harness.errors import BootError, SSHError, WaitTimeout
from harness.ssh_jump import BannerStream, ReplayedChannel, SSHJump

log = logging.getLogger(__name__)

_Attempt = socket.socket | paramiko.Channel

BANNER_TRY_TIMEOUT = 3.0
"""How long one attempt waits for the banner once connected."""
BANNER_INTERVAL = 0.5
"""Seconds between the starts of overlapping attempts while the guest answers (or is said to be close)."""
HINT_POLL = 0.1
"""Seconds between looks for the hint (`wait_for_banner_socket`'s `hint`): on a live console, a read of what
it gained since the last look. The default image's sshd takes the first connection at once after its ready
line; a look every `BANNER_INTERVAL` let 0.25 s pass on average before the attempt."""
BANNER_SLOW_INTERVAL = 4.0
"""The longest pause between attempts: reached while attempts go unanswered (see `wait_for_banner_socket`)."""
BANNER_HINTED_SLOW_INTERVAL = 10.0
"""The longest pause where a hint says when the guest comes close (the hint brings the short pause back)."""
BANNER_TRUSTED_HINT_GRACE = 60.0
"""Where the guest is known to show the hint on every boot (its image says so): how long to wait for it before
any attempt beyond the one made at once. Each attempt made before the guest has an address reaches sshd later,
as a wasted fork and re-exec just when the harness logs in (about half a second of a one-vCPU guest each)."""
BANNER_TRUSTED_HINT_INTERVAL = 15.0
"""The pause between the attempts made after `BANNER_TRUSTED_HINT_GRACE` without the hint (it grows by
`BANNER_BACKOFF` from there, up to `BANNER_TRUSTED_HINT_SLOWEST`); they only catch a boot whose hint did not
show."""
BANNER_TRUSTED_HINT_SLOWEST = 60.0
BANNER_BACKOFF = 2.0
"""Each attempt left unanswered makes the pause before the next this much longer, up to the slow interval."""
BANNER_MAX_PENDING = 3
"""At most this many attempts wait at once (each one sshd accepts costs the guest a fork and re-exec)."""
ALIVE_INTERVAL = 1.0
"""Seconds between checks that the machine still runs, while waiting for SSH."""


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
    via: SSHJump | None = None,
) -> str:
    """Poll until sshd at host:port (as `via` sees it, when given) sends its banner; return the banner line.

    Raises BootError as soon as `alive()` says the machine is gone, WaitTimeout after `timeout` seconds.
    """
    banner, sock = wait_for_banner_socket(host, port, timeout, alive=alive, interval=interval, via=via)
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
    via: SSHJump | None = None,
    slowest: float | None = None,
    hint: Callable[[], bool] | None = None,
    trusted_hint: bool = False,
    at_once: bool = True,
    grace: float = BANNER_TRUSTED_HINT_GRACE,
    hint_poll: float = HINT_POLL,
) -> tuple[str, BannerStream]:
    """`wait_for_banner`, returning the connection too (for `SSHConnection.connect(sock=...)`): a socket, or
    a channel through `via` (an SSH jump) when given.

    Attempts overlap (each waits up to `try_timeout`) and the first banner wins. With QEMU's user networking
    a connection is accepted on the host at once, and one made before the guest had its address waits on the
    forward's retransmitted SYNs for seconds after sshd is ready; a later attempt does not. Every such
    attempt also stays queued in QEMU after the harness gives it up, and reaches the guest's sshd the moment
    the guest's network comes up: each one then costs the guest a fork and re-exec of sshd just when the
    harness logs in (dozens of them made a login take 9 s instead of 1 s under TCG). So the pace adapts:
    while attempts go unanswered, the pause between them grows from `interval` by `BANNER_BACKOFF` up to
    `slowest` (`BANNER_HINTED_SLOW_INTERVAL` with a hint, else `BANNER_SLOW_INTERVAL`); it drops back to
    `interval` when an attempt gets any answer (a refusal or a close: nothing is queued then) and, for good,
    once `hint()` (polled every `hint_poll` seconds) says the guest is close to ready (e.g. its console shows a
    login prompt). With `trusted_hint` (the guest shows the hint on every boot), there is one attempt at once
    (a guest that is up answers it; `at_once=False` leaves it out where the guest has only begun to boot),
    then none before the hint for `grace` seconds; after that, attempts from `slowest`
    (`BANNER_TRUSTED_HINT_INTERVAL`) apart, growing, only catch a boot whose hint did not show. After a trusted
    hint, attempts are `try_timeout` apart (they do not overlap). An attempt that gets any answer brings the
    fast pace back, as without a trusted hint.
    """
    trusted = trusted_hint and hint is not None
    if slowest is None:
        if trusted:
            slowest = BANNER_TRUSTED_HINT_INTERVAL
        else:
            slowest = BANNER_HINTED_SLOW_INTERVAL if hint is not None else BANNER_SLOW_INTERVAL
    start = time.monotonic()
    deadline = start + timeout
    race = _BannerRace(host, port, try_timeout, via)
    grace_end = start + grace if trusted else None  # a trusted hint's grace (no attempts) ends then
    next_attempt = grace_end if grace_end is not None and not at_once else start
    pause = max(slowest, interval) if trusted else interval
    next_alive = start
    next_hint = start if hint is not None else math.inf
    answered = 0
    try:
        while True:
            now = time.monotonic()
            if now >= next_hint:
                next_hint = now + hint_poll
                if hint is not None and hint():
                    # A trusted hint comes once the guest has its address and sshd listens: the attempt made
                    # now goes through, and its banner takes a second or more under TCG (a fork and re-exec of
                    # sshd), so another attempt overlaps it only once it has timed out.
                    after_hint = max(try_timeout, interval) if trusted else interval
                    log.debug("SSH on %s:%d: the guest looks close to ready; attempts every %.1f s",
                              host, port, after_hint)  # fmt: skip
                    slowest, next_hint, grace_end = after_hint, math.inf, None
                    pause, next_attempt = after_hint, min(next_attempt, now)
            if race.answered != answered:
                answered = race.answered
                pause, next_attempt = interval, min(next_attempt, now + interval)
                grace_end = None  # the guest's network answers: nothing waits in QEMU for it
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
                if grace_end is not None and now < grace_end:
                    next_attempt = grace_end  # trusted hint: the attempt at once, then the grace
                else:
                    next_attempt = now + pause
                    limit = BANNER_TRUSTED_HINT_SLOWEST if grace_end is not None else slowest
                    pause = min(pause * BANNER_BACKOFF, max(limit, interval))
            wake = min(next_attempt, deadline, next_alive if alive else deadline, next_hint)
            won = race.wait(max(0.0, wake - now))
            if won is not None:
                log.debug("SSH banner on %s:%d after %d attempt(s): %s", host, port, race.attempts, won[0])
                return won
    finally:
        race.close()


class _BannerRace:
    """Connections to one SSH endpoint, each reading until a line starts with `SSH-`: sockets, or channels
    through an SSH jump."""

    def __init__(self, host: str, port: int, try_timeout: float, via: SSHJump | None = None) -> None:
        self.host, self.port, self.try_timeout, self.via = host, port, try_timeout, via
        self.selector = selectors.DefaultSelector()
        self.received: dict[_Attempt, bytes] = {}
        self.started: dict[_Attempt, float] = {}
        self.attempts = 0
        self.answered = 0
        """Attempts that ended by an answer from the far end (refused, reset or closed), not by a timeout."""
        self.last_error = "no attempt made"

    @property
    def pending(self) -> int:
        return len(self.received)

    def start(self) -> None:
        self.attempts += 1
        if self.via is not None:
            self._start_through(self.via)
            return
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
            self.answered += 1
            return
        self._track(sock)

    def _start_through(self, via: SSHJump) -> None:
        """An attempt over a channel the jump host opens (at once: the forward's listener is on its loopback)."""
        try:
            channel = via.open(self.host, self.port, self.try_timeout)
        except (OSError, SSHError) as exc:
            self._failed(exc)
            self.answered += 1
            return
        self._track(channel)

    def _track(self, attempt: _Attempt) -> None:
        self.received[attempt] = b""
        self.started[attempt] = time.monotonic()
        self.selector.register(attempt, selectors.EVENT_READ)

    def wait(self, seconds: float) -> tuple[str, BannerStream] | None:
        """Read what arrives within `seconds`; the banner and its connection, once one sent it."""
        for key, _ in self.selector.select(seconds) if self.received else []:
            sock = cast(_Attempt, key.fileobj)
            try:
                chunk = sock.recv(1024)
            except (OSError, EOFError) as exc:
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
                    banner = line.decode(errors="replace").rstrip("\r")
                    if isinstance(sock, socket.socket):
                        return banner, ReplayedSocket(sock, data)
                    return banner, ReplayedChannel(sock, data)
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

    def _drop(self, sock: _Attempt, exc: BaseException) -> None:
        self._failed(exc)
        if not isinstance(exc, TimeoutError):
            self.answered += 1
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
