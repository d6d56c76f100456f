"""Boot admission across processes: about one booting VM per host core, and enough free memory.

Under TCG, more booting VMs than cores starve each other until one times out. Every process of a run
(xdist workers included) and every concurrent run of the same user share the slots: a slot is an
exclusive `flock` on a file, released by the kernel if the holder dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


def mem_available_mib(meminfo: str | None = None) -> int:
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return 1 << 30
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 1 << 30


def default_slot_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"railyard-boot-slots-{os.getuid()}"


class BootSlots:
    """A counting semaphore over `count` lock files in `directory`."""

    def __init__(self, count: int, directory: Path | None = None, memory_mib: int = 0) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self.directory = directory or default_slot_dir()
        self.memory_mib = memory_mib

    def slot(self, who: str, timeout: float) -> BootSlot:
        return BootSlot(self, who, timeout)


class BootSlot:
    """Held while a machine boots; a context manager."""

    def __init__(self, slots: BootSlots, who: str, timeout: float) -> None:
        self.slots = slots
        self.who = who
        self.timeout = timeout
        self._fd: int | None = None
        self.waited = 0.0

    def _try_acquire(self) -> bool:
        if self.slots.memory_mib and mem_available_mib() < self.slots.memory_mib + 256:
            return False
        self.slots.directory.mkdir(parents=True, exist_ok=True)
        for index in range(self.slots.count):
            fd = os.open(self.slots.directory / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd = fd
            return True
        return False

    def __enter__(self) -> BootSlot:
        start = time.monotonic()
        announced = False
        while not self._try_acquire():
            if not announced:
                log.info("%s: waiting for a boot slot (%d per host)", self.who, self.slots.count)
                announced = True
            if time.monotonic() - start > self.timeout:
                from harness.errors import BootError

                raise BootError(f"{self.who}: no boot slot became free in {self.timeout:.0f} s")
            time.sleep(0.5)  # a lock file cannot be waited on with a timeout; poll it
        self.waited = time.monotonic() - start
        if announced:
            log.info("%s: got a boot slot after %.1f s", self.who, self.waited)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
