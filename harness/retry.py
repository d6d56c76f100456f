"""Polling with a deadline: the only way Railyard waits for a condition."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from harness.errors import WaitTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")


def poll(
    attempt: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 1.0,
    what: str,
) -> T:
    """Call `attempt` until it returns something other than None, or raise WaitTimeout.

    `attempt` may raise to signal "not yet"; the last exception is named in the timeout error.
    The interval grows gently (x1.5, up to 5 s) so a long wait does not hammer the guest.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = interval
    while True:
        try:
            value = attempt()
        except WaitTimeout:
            raise
        except Exception as exc:
            last_error = exc
            value = None
        if value is not None:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f": last error: {last_error}" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 5.0)
