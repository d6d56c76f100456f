"""A stack of undo actions: each resource is pushed the moment it exists and undone in reverse order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Undo:
    description: str
    action: Callable[[], None]


class CleanupStack:
    """Undo actions in creation order; `unwind()` runs them newest first and keeps going past failures."""

    def __init__(self) -> None:
        self._items: list[Undo] = []
        self._lock = threading.Lock()

    def push(self, description: str, action: Callable[[], None]) -> Undo:
        undo = Undo(description, action)
        with self._lock:
            self._items.append(undo)
        return undo

    def discard(self, undo: Undo) -> None:
        """Forget an undo action (the resource was deleted some other way, or is handed over)."""
        with self._lock:
            if undo in self._items:
                self._items.remove(undo)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def descriptions(self) -> list[str]:
        with self._lock:
            return [undo.description for undo in self._items]

    def unwind(self) -> list[str]:
        """Run every undo action, newest first; returns the failures (also logged) and empties the stack."""
        failures: list[str] = []
        while True:
            with self._lock:
                if not self._items:
                    break
                undo = self._items.pop()
            try:
                log.debug("cleanup: %s", undo.description)
                undo.action()
            except Exception as exc:
                log.warning("cleanup: %s failed: %s", undo.description, exc)
                failures.append(f"{undo.description}: {exc}")
        return failures
