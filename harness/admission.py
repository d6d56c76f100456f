"""Machine admission across processes: about one VM per host core, and enough free memory.

Under TCG, more VMs than cores starve each other until one times out: four VMs on two cores hit soft lockups
and 90 s device timeouts. Every process of a run (xdist workers included) and every concurrent run of the
same user share the slots: a slot is an exclusive `flock` on a file, released by the kernel if the holder
dies. Under TCG a machine holds its slot for its whole life (a running guest costs as much CPU as a booting
one); under KVM only while it boots.

Requests are served in turn: a waiter first takes the turnstile (another lock file), so a request for two
slots (a cluster) is not starved by single requests that keep taking each slot as it frees. A process that
already holds slots and asks for more could wait forever on another process doing the same; after
`overcommit_after` seconds it goes ahead without them, and says so.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType

from harness.errors import BootError

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
TURNSTILE = "turnstile.lock"


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


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class BootSlots:
    """A counting semaphore over `count` lock files in `directory`, shared by every process that uses it."""

    def __init__(
        self,
        count: int,
        directory: Path | None = None,
        memory_mib: int = 0,
        overcommit_after: float | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self.directory = directory or default_slot_dir()
        self.memory_mib = memory_mib
        self.overcommit_after = overcommit_after
        self._held = 0  # slots this process holds
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def slot(self, who: str, timeout: float, count: int = 1, memory_mib: int | None = None) -> BootSlot:
        """`count` slots at once (at most all of them), held while the context lasts; `memory_mib` is the
        memory of each machine when it is not the run's (a test's `memory` marker)."""
        return BootSlot(self, who, timeout, min(max(count, 1), self.count), memory_mib)

    def _adjust(self, delta: int) -> None:
        with self._lock:
            self._held += delta


class BootSlot:
    """Held while one or more machines boot (or live); a context manager, also usable by `acquire/release`."""

    def __init__(
        self, slots: BootSlots, who: str, timeout: float, count: int = 1, memory_mib: int | None = None
    ) -> None:
        self.slots = slots
        self.who = who
        self.timeout = timeout
        self.count = count
        self.memory_mib = slots.memory_mib if memory_mib is None else memory_mib
        self._fds: list[int] = []
        self.waited = 0.0
        self.overcommitted = False

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def _try_acquire(self) -> bool:
        if self.memory_mib and mem_available_mib() < self.memory_mib * self.count + 256:
            return False
        fds: list[int] = []
        for index in range(self.slots.count):
            fd = _try_lock(self.slots.directory / f"slot-{index}.lock")
            if fd is not None:
                fds.append(fd)
                if len(fds) == self.count:
                    self._fds = fds
                    self.slots._adjust(self.count)
                    return True
        for fd in fds:  # all or nothing: half a cluster must not sit on slots the others need
            _unlock(fd)
        return False

    def acquire(self) -> BootSlot:
        self.slots.directory.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        already = self.slots.held
        announced = False
        turnstile: int | None = None
        try:
            while True:
                if turnstile is None:  # wait in line: the first in line takes slots as they free
                    turnstile = _try_lock(self.slots.directory / TURNSTILE)
                if turnstile is not None and self._try_acquire():
                    break
                if not announced:
                    log.info(
                        "%s: waiting for %d of the %d machine slots of this host%s", self.who, self.count,
                        self.slots.count, f" (this process holds {already})" if already else "",
                    )  # fmt: skip
                    announced = True
                waited = time.monotonic() - start
                limit = self.slots.overcommit_after
                if already and limit is not None and waited > limit:
                    log.warning(
                        "%s: no slot after %.0f s while this process holds %d; going ahead without one "
                        "(another process may be waiting for ours)", self.who, waited, already,
                    )  # fmt: skip
                    self.overcommitted = True
                    break
                if waited > self.timeout:
                    raise BootError(
                        f"{self.who}: no machine slot became free in {self.timeout:.0f} s "
                        f"({self.slots.count} per host, in {self.slots.directory})"
                    )
                time.sleep(POLL_INTERVAL)  # a lock file cannot be waited on with a timeout; poll it
        finally:
            if turnstile is not None:
                _unlock(turnstile)
        self.waited = time.monotonic() - start
        if announced:
            log.info("%s: got a machine slot after %.1f s", self.who, self.waited)
        return self

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            _unlock(fd)
        if fds:
            self.slots._adjust(-len(fds))

    def __enter__(self) -> BootSlot:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
