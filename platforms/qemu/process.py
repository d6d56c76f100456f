"""QEMU processes that never outlive the test run, and removal of what a crashed run left behind.

Each QEMU child gets PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it when its parent goes away, even when a
pytest worker is SIGKILLed and no cleanup code runs. The kernel's "parent" here is the *thread* that forked the
child: a QEMU started from a short-lived thread (a thread pool booting a cluster) would die with that thread.
So every start goes through one long-lived launcher thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BootError

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
RUNTIME_PREFIX = "runtime-"
SOCKET_DIR_PREFIX = "railyard-qmp-"
OWNER_FILE = "owner.pid"
QEMU_PIDFILE = "qemu.pid"
SOCKET_DIR_FILE = "qmp-socket-dir"
# A runtime dir without an owner file younger than this may be one being created right now.
FRESH_SECONDS = 120.0

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class _Request:
    argv: list[str]
    log_path: Path
    die_with_parent: bool
    done: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen[bytes] | None = None
    error: BaseException | None = None


class ProcessLauncher:
    """Starts child processes from one long-lived thread so that their parent-death signal is tied to the
    process's life, not to whichever thread asked for the start."""

    def __init__(self) -> None:
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(
        self, argv: list[str], log_path: Path, *, die_with_parent: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with stdin closed and stdout/stderr appended to `log_path`. With `die_with_parent`
        the kernel kills it when this process ends; without, it may outlive the run (kept machines)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="railyard-qemu-launcher", daemon=True
                )
                self._thread.start()
        request = _Request(argv, log_path, die_with_parent)
        self._requests.put(request)
        request.done.wait()
        if request.error is not None:
            raise BootError(f"cannot start {argv[0]}: {request.error}") from request.error
        assert request.process is not None
        return request.process

    def stop(self) -> None:
        """End the launcher thread. Children it started get SIGKILL when it ends: stop them first."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._requests.put(None)
            thread.join(timeout=10)

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            try:
                with request.log_path.open("ab") as out:
                    request.process = subprocess.Popen(
                        request.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # no terminal signals: the harness decides when QEMU stops
                        preexec_fn=_die_with_parent(os.getpid()) if request.die_with_parent else None,
                    )
            except BaseException as exc:  # handed to the caller's thread
                request.error = exc
            finally:
                request.done.set()


def write_owner(runtime_dir: Path, socket_dir: Path | None = None) -> None:
    """Record which process owns a runtime dir, so that gc leaves it alone while that process lives, and
    where its QMP socket went if not inside it."""
    (runtime_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
    if socket_dir is not None and socket_dir != runtime_dir:
        (runtime_dir / SOCKET_DIR_FILE).write_text(f"{socket_dir}\n")


def remove_runtime(runtime_dir: Path) -> None:
    """Delete a runtime dir and the separate QMP socket dir it may name."""
    try:
        socket_dir = Path((runtime_dir / SOCKET_DIR_FILE).read_text().strip())
    except OSError:
        socket_dir = None
    if socket_dir is not None and socket_dir.name.startswith(SOCKET_DIR_PREFIX):
        shutil.rmtree(socket_dir, ignore_errors=True)
    shutil.rmtree(runtime_dir, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _all_cmdlines() -> list[str]:
    return [_cmdline(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def gc_socket_dirs(parent: Path | None = None) -> list[Path]:
    """Remove this user's separate QMP socket dirs (used for deep workdirs) that no running process names,
    e.g. after the output tree of a killed run was deleted. Returns the dirs removed."""
    parent = parent or Path(tempfile.gettempdir())
    removed: list[Path] = []
    candidates = [
        d for d in parent.glob(f"{SOCKET_DIR_PREFIX}*")
        if d.is_dir() and not d.is_symlink() and d.stat().st_uid == os.getuid()
        and time.time() - d.stat().st_mtime > FRESH_SECONDS
    ]  # fmt: skip
    if not candidates:
        return removed
    in_use = "\n".join(_all_cmdlines())
    for directory in candidates:
        if f"{directory}/" not in in_use:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def find_runtime_dirs(root: Path) -> list[Path]:
    """Runtime dirs anywhere under `root` (not following symlinks)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if OWNER_FILE in filenames and Path(dirpath).name.startswith(RUNTIME_PREFIX):
            found.append(Path(dirpath))
            dirnames.clear()
    return sorted(found)


def is_stale(runtime_dir: Path) -> bool:
    """Whether the process that created `runtime_dir` is gone (its machine is then unowned)."""
    owner = _read_pid(runtime_dir / OWNER_FILE)
    if owner is None:  # half-written: leave it unless old
        try:
            return time.time() - runtime_dir.stat().st_mtime > FRESH_SECONDS
        except OSError:
            return False
    return not pid_alive(owner)


def stale_runtime_dirs(root: Path) -> list[Path]:
    """The runtime dirs under `root` whose owner process is gone."""
    if not root.is_dir():
        return []
    return [entry for entry in find_runtime_dirs(root) if is_stale(entry)]


def gc_stale_runtime(root: Path) -> list[Path]:
    """Remove the runtime dirs under `root` (overlay disk, UEFI vars, QMP socket) whose owner process is gone,
    killing a QEMU still running from one. Dirs of a live owner (another worker, another run) stay.
    Returns the dirs removed. The artifacts next to them (console, logs) are left alone."""
    removed: list[Path] = []
    for entry in stale_runtime_dirs(root):
        qemu = _read_pid(entry / QEMU_PIDFILE)
        if qemu is not None and pid_alive(qemu) and str(entry) in _cmdline(qemu):
            log.warning("killing orphaned QEMU pid %d of %s (its owner is gone)", qemu, entry)
            with contextlib.suppress(ProcessLookupError):
                os.kill(qemu, signal.SIGKILL)
        remove_runtime(entry)
        removed.append(entry)
        log.debug("removed stale runtime dir %s", entry)
    return removed
