"""Follow a growing console file and stamp each line with the host's monotonic clock as it appears.

A QEMU serial console written to a file carries no timestamps of its own; a thread that reads the file's new
bytes every few milliseconds gives each line the host time at which it was complete. Lines are
decoded leniently (firmware writes escape sequences and stray bytes) and kept without their line ending.

    with ConsoleTail(vm.console_path) as tail:
        mark = tail.count()
        ...
        restart = tail.wait_for("reboot: Restarting system", since=mark, timeout=120.0)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["ConsoleTail", "StampedLine"]


@dataclass(frozen=True)
class StampedLine:
    at: float
    """Host `time.monotonic()` when the line was read complete (its line ending arrived). Not when its first
    bytes came: a prompt (`login: `) stays unfinished until the next message ends the line."""
    text: str
    """The line, decoded, without its line ending (and without a trailing carriage return)."""


class ConsoleTail:
    """A thread that tails `path` (which may not exist yet, and may be truncated and written anew)."""

    def __init__(
        self, path: Path, interval: float = 0.02, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.interval = interval
        self._clock = clock
        self._lines: list[StampedLine] = []
        self._partial = b""
        self._partial_at = 0.0
        self._offset = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ConsoleTail:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ConsoleTail:
        """Start following the file (from its beginning); returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name=f"tail {self.path.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Read what is left, keep an unfinished last line as a line (stamped when its last bytes came), and stop
        the thread. Idempotent."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
        with self._changed:
            if self._partial:
                self._lines.append(StampedLine(self._partial_at, _decode(self._partial)))
                self._partial = b""
            self._changed.notify_all()

    def count(self) -> int:
        """How many complete lines were read so far (a mark for `lines(since=)` and `wait_for(since=)`)."""
        with self._changed:
            return len(self._lines)

    def lines(self, since: int = 0) -> list[StampedLine]:
        """The complete lines read so far, from index `since` on."""
        with self._changed:
            return self._lines[since:]

    def wait_for(self, needle: str, since: int = 0, timeout: float = 60.0) -> StampedLine:
        """The first line from index `since` on that contains `needle`, waiting for it up to `timeout`
        seconds. Raises TimeoutError when it does not appear in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            checked = since
            while True:
                for line in self._lines[checked:]:
                    if needle in line.text:
                        return line
                checked = max(checked, len(self._lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{needle!r} did not appear in {self.path} within {timeout:.0f} s")
                self._changed.wait(min(left, 0.5))

    def _follow(self) -> None:
        while not self._stopping.is_set():
            self._read()
            self._stopping.wait(self.interval)
        self._read()

    def _read(self) -> None:
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size < self._offset:  # truncated: the file was started again
                    self._offset = 0
                    with self._changed:
                        self._partial = b""
                if size == self._offset:
                    return
                handle.seek(self._offset)
                data = handle.read(size - self._offset)
        except FileNotFoundError:
            return
        now = self._clock()
        self._offset += len(data)
        with self._changed:
            *complete, rest = (self._partial + data).split(b"\n")
            self._lines.extend(StampedLine(now, _decode(raw)) for raw in complete)
            self._partial, self._partial_at = rest, now
            self._changed.notify_all()


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")
