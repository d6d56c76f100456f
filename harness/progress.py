"""What a run is doing while it waits, for the person (or CI log) watching: a line every `--progress` seconds
(default 30) for each wait that lasts that long: the default image being built (and its stages as they end),
a machine booting or restored until SSH answers (with its last console line), a reboot, an update...

    railyard gw1: test_update.py-1: reboot ... 30 s
    railyard gw1: test_update.py-1: booting (cold) ... 60 s; console: [  OK  ] Reached target multi-user.target

The lines go to the stderr the process started with (an xdist worker inherits its controller's): that file
descriptor is duplicated when this module is imported, as the plugin loads and before pytest starts
capturing, so the lines show as they happen while pytest captures the tests' own output. A wait shorter
than the interval prints nothing.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEFAULT_INTERVAL = 30.0

_settings: dict[str, float | str] = {"interval": DEFAULT_INTERVAL, "who": ""}
_lock = threading.Lock()


def _terminal_fd() -> int | None:
    try:
        return os.dup(2)  # not inherited by children (PEP 446)
    except OSError:
        return None


_TERMINAL = _terminal_fd()


def configure(interval: float, who: str = "") -> None:
    """Seconds between lines (0: no progress lines), and who says them (an xdist worker's id)."""
    _settings["interval"] = max(0.0, interval)
    _settings["who"] = who


def _interval() -> float:
    return float(_settings["interval"])


def say(text: str) -> None:
    """One progress line (when progress is on)."""
    if not _interval():
        return
    worker = str(_settings["who"])
    line = f"railyard{' ' + worker if worker else ''}: {text}\n"
    with _lock:
        try:
            if _TERMINAL is not None:
                os.write(_TERMINAL, line.encode(errors="replace"))
            elif sys.__stderr__ is not None:
                sys.__stderr__.write(line)
                sys.__stderr__.flush()
        except (OSError, ValueError):
            pass


@contextmanager
def heartbeat(what: str, detail: Callable[[], str] | None = None) -> Iterator[None]:
    """While the block runs, say `what` and how long it has taken every interval (and `detail()`, if any)."""
    interval = _interval()
    if not interval:
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(interval):
            extra = ""
            if detail is not None:
                try:
                    extra = detail()
                except Exception:  # a detail is a courtesy: never let it break the wait
                    extra = ""
            say(f"{what} ... {time.monotonic() - started:.0f} s{'; ' + extra if extra else ''}")

    thread = threading.Thread(target=beat, name=f"progress: {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0)
        elapsed = time.monotonic() - started
        if elapsed >= interval:
            say(f"{what}: done in {elapsed:.0f} s")


def last_line(text: str, width: int = 100) -> str:
    """The last non-empty line of a console, without escape sequences, cut to `width`."""
    for line in reversed(text.splitlines()):
        clean = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).strip()
        if clean:
            return clean[:width]
    return ""
