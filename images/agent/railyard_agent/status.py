"""The status file, /run/railyard/update-status: what the agent is doing, for railyard-update status."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .config import log, parse_key_values

STATUS_IDLE = "UPDATE_STATUS_IDLE"
STATUS_CHECKING = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
STATUS_AVAILABLE = "UPDATE_STATUS_UPDATE_AVAILABLE"
STATUS_DOWNLOADING = "UPDATE_STATUS_DOWNLOADING"
STATUS_VERIFYING = "UPDATE_STATUS_VERIFYING"
STATUS_FINALIZING = "UPDATE_STATUS_FINALIZING"
STATUS_NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
STATUS_REPORTING_ERROR = "UPDATE_STATUS_REPORTING_ERROR_EVENT"
STATUS_DISABLED = "UPDATE_STATUS_DISABLED"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StatusFile:
    """`/run/railyard/update-status`, in the spirit of `update_engine_client -status`."""

    KEYS = (
        "CURRENT_OP",
        "CURRENT_VERSION",
        "NEW_VERSION",
        "NEW_SIZE",
        "PROGRESS",
        "LAST_CHECKED_TIME",
        "LAST_ERROR",
        "LAST_ERROR_CODE",
        "LAST_CYCLE_START",
        "LAST_CYCLE_END",
        "SERVER",
        "GROUP",
        "REBOOT_STRATEGY",
        "NEXT_REBOOT",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, str] = dict.fromkeys(self.KEYS, "")
        self.values.update({"CURRENT_OP": STATUS_IDLE, "NEW_VERSION": "0.0.0", "NEW_SIZE": "0"})
        self.values["PROGRESS"] = "0.0"
        self.values["LAST_CHECKED_TIME"] = "0"
        with contextlib.suppress(OSError):
            self.values.update(parse_key_values(path.read_text()))

    def set(self, **values: str | int | float) -> None:
        for key, value in values.items():
            self.values[key] = str(value)
        text = "".join(f"{key}={self.values.get(key, '')}\n" for key in self.KEYS)
        try:
            write_atomically(self.path, text)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)
