"""The writer of downloads: files with holes where the data is zero."""

from __future__ import annotations

import os
from pathlib import Path

from .protocol import ERROR_DOWNLOAD_WRITE, UpdateFailure


class SparseWriter:
    """Writes a file from `offset` on, leaving holes for all-zero blocks: a /usr image is mostly empty,
    and the root file system that holds the download is small. Write errors are UpdateFailures."""

    BLOCK = 64 * 1024
    ZERO = bytes(BLOCK)

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.position = offset
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC), 0o600)
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise UpdateFailure(ERROR_DOWNLOAD_WRITE, f"cannot write {path}: {exc}") from exc

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            for start in range(0, len(view), self.BLOCK):
                block = view[start : start + self.BLOCK]
                if block == self.ZERO[: len(block)]:
                    os.lseek(self._fd, len(block), os.SEEK_CUR)
                else:
                    while block:
                        block = block[os.write(self._fd, block) :]
                self.position += len(view[start : start + self.BLOCK])
        except OSError as exc:
            raise UpdateFailure(ERROR_DOWNLOAD_WRITE, f"cannot write {self.path}: {exc}") from exc

    def __enter__(self) -> SparseWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            os.ftruncate(self._fd, self.position)  # a trailing hole still counts
            # On disk before anything relies on it: a power cut during the install that follows must
            # leave a complete download to resume from, not a file with unwritten blocks.
            os.fsync(self._fd)
        except OSError as exc:
            if exc_info[0] is None:
                raise UpdateFailure(ERROR_DOWNLOAD_WRITE, f"cannot write {self.path}: {exc}") from exc
        finally:
            os.close(self._fd)
