"""Timed steps of the guest API (`harness.machine`): each call logged with how long it took, nested under the
call that made it, on the `harness.machine` logger with the rest of the guest API's log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from harness.progress import heartbeat

log = logging.getLogger("harness.machine")

_depth = threading.local()


@contextmanager
def step(machine: str, what: str) -> Iterator[None]:
    """Log one call of the machine API as a timed step, nested under the call that made it:

        m1: reboot
          m1: succeed 'cat /proc/sys/kernel/random/boot_id' (0.2 s)
        m1: reboot (48.1 s)

    Visible with `-o log_cli=true --log-cli-level=INFO`, and in a failing test's captured log.
    """
    depth = getattr(_depth, "value", 0)
    indent = "  " * depth
    started = time.monotonic()
    _depth.value = depth + 1
    try:
        if depth == 0:  # a long call (a reboot, an update) says it is still going (harness.progress)
            with heartbeat(f"{machine}: {what}"):
                yield
        else:
            yield
    except BaseException as exc:
        log.info("%s%s: %s failed after %.1f s: %s", indent, machine, what, time.monotonic() - started,
                 type(exc).__name__)  # fmt: skip
        raise
    finally:
        _depth.value = depth
    log.info("%s%s: %s (%.1f s)", indent, machine, what, time.monotonic() - started)
