"""A small client of the QEMU Machine Protocol (QMP) over a unix socket.

QMP speaks JSON objects, one per line. After the greeting the client must send `qmp_capabilities`; then each
command gets exactly one reply (`return` or `error`) carrying the `id` it was sent with. Asynchronous events
(`SHUTDOWN`, `RESET`, `WATCHDOG`...) may arrive at any time and are queued for whoever wants them.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.errors import PlatformError

log = logging.getLogger(__name__)

# How many events are kept; older ones are dropped (a watchdog storm must not grow memory without bound).
MAX_EVENTS = 1000
_RECV_SIZE = 65536


class QMPClient:
    """One QMP session. Thread-safe: commands are serialised by a lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_EVENTS)
        self.greeting: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect, read the greeting and negotiate capabilities. Raises PlatformError on failure."""
        with self._lock:
            if self._sock is not None:
                return
            deadline = time.monotonic() + timeout
            self._sock = self._open_socket(deadline)
            self._buffer = b""
            try:
                greeting = self._read_message(deadline)
                if "QMP" not in greeting:
                    raise PlatformError(f"unexpected QMP greeting on {self.path}: {greeting!r}")
                self.greeting = greeting["QMP"]
                self._execute_locked("qmp_capabilities", None, deadline)
            except BaseException:
                self.close()
                raise
            log.debug("QMP connected to %s (%s)", self.path, self.greeting.get("version", {}).get("qemu"))

    def _open_socket(self, deadline: float) -> socket.socket:
        """Connect to the socket path. QEMU binds the path before it listens on it: a refused connection
        (or a path not there yet) is retried until `deadline`."""
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                sock.connect(str(self.path))
                return sock
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise PlatformError(f"cannot connect to QMP socket {self.path}: {exc}") from exc
                time.sleep(0.05)
            except OSError as exc:
                sock.close()
                raise PlatformError(f"cannot connect to QMP socket {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.close()
                finally:
                    self._sock = None
                    self._buffer = b""

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def __enter__(self) -> QMPClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------------------------

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Run one QMP command and return its `return` value. Raises PlatformError on an error reply,
        a closed connection or no reply within `timeout` seconds."""
        with self._lock:
            if self._sock is None:
                raise PlatformError(f"QMP {command}: not connected to {self.path}")
            return self._execute_locked(command, arguments, time.monotonic() + timeout)

    def human_monitor(self, command_line: str, timeout: float = 10.0) -> str:
        """Run a human monitor (HMP) command, e.g. `info usernet`, and return its text output."""
        result = self.execute("human-monitor-command", {"command-line": command_line}, timeout)
        if not isinstance(result, str):
            raise PlatformError(f"HMP {command_line!r} returned {result!r}, expected text")
        return result

    def events(self, clear: bool = True) -> list[dict[str, Any]]:
        """The events received so far (oldest first), including those read while waiting for replies."""
        with self._lock:
            self._drain_nonblocking()
            found = list(self._events)
            if clear:
                self._events.clear()
            return found

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait for the event `name` (already queued or still to come); remove and return it."""
        with self._lock:
            deadline = time.monotonic() + timeout
            while True:
                for event in list(self._events):
                    if event.get("event") == name:
                        self._events.remove(event)
                        return event
                if self._sock is None:
                    raise PlatformError(f"QMP: not connected to {self.path} while waiting for {name}")
                self._events.append(self._read_message(deadline, what=f"event {name}"))

    # -- internals ---------------------------------------------------------------------------------------

    def _execute_locked(self, command: str, arguments: dict[str, Any] | None, deadline: float) -> Any:
        assert self._sock is not None
        ident = f"ry-{next(self._ids)}"
        request: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            self.close()
            raise PlatformError(f"QMP {command}: cannot send to {self.path}: {exc}") from exc
        while True:
            message = self._read_message(deadline, what=f"reply to {command}")
            if "event" in message:
                self._events.append(message)
                continue
            if message.get("id") != ident:
                log.debug("QMP: ignoring a reply that is not ours: %r", message)
                continue
            if "error" in message:
                error = message["error"]
                raise PlatformError(
                    f"QMP {command} failed: {error.get('class', 'Error')}: {error.get('desc', error)}"
                )
            return message.get("return")

    def _read_message(self, deadline: float, what: str = "greeting") -> dict[str, Any]:
        while True:
            line, sep, rest = self._buffer.partition(b"\n")
            if sep:
                self._buffer = rest
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PlatformError(f"QMP: malformed message from {self.path}: {line[:200]!r}") from exc
                if not isinstance(message, dict):
                    raise PlatformError(f"QMP: unexpected message from {self.path}: {message!r}")
                return message
            self._recv(deadline, what)

    def _recv(self, deadline: float, what: str) -> None:
        if self._sock is None:
            raise PlatformError(f"QMP: connection to {self.path} is closed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PlatformError(f"QMP: no {what} from {self.path} in time")
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(_RECV_SIZE)
        except TimeoutError as exc:
            raise PlatformError(f"QMP: no {what} from {self.path} in time") from exc
        except OSError as exc:
            self.close()
            raise PlatformError(f"QMP: connection to {self.path} failed: {exc}") from exc
        if not chunk:
            self.close()
            raise PlatformError(f"QMP: {self.path} closed the connection (QEMU exited?) awaiting {what}")
        self._buffer += chunk

    def _drain_nonblocking(self) -> None:
        """Queue any events already sent, without waiting."""
        if self._sock is None:
            return
        self._sock.settimeout(0.0)
        try:
            while True:
                chunk = self._sock.recv(_RECV_SIZE)
                if not chunk:
                    self.close()
                    break
                self._buffer += chunk
        except (BlockingIOError, TimeoutError):
            pass
        except OSError:
            self.close()
        while b"\n" in self._buffer:
            message = self._read_message(time.monotonic() + 1.0)
            if "event" in message:
                self._events.append(message)
