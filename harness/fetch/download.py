"""HTTP downloads of release files: small ones into memory, images into a file that a later run resumes
(an HTTP Range request from where the file ends), with a progress display on stderr."""

from __future__ import annotations

import http.client
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from harness.errors import FetchError

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT = 60.0
SMALL_LIMIT = 1 << 20
USER_AGENT = "railyard-image-fetch"


class NotFound(FetchError):
    """The server answered 404 (or 410): the file is not published there."""


class Progress:
    """One line per download on stderr: rewritten in place on a terminal, else a line every 10%."""

    def __init__(self, name: str, stream: TextIO | None = None, interval: float = 0.25) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0
        self._last_tenth = -1

    def update(self, done: int, total: int | None, first: int = 0) -> None:
        now = time.monotonic()
        if total:
            tenth = done * 10 // total
            if not self.tty and tenth == self._last_tenth:
                return
            self._last_tenth = tenth
        if self.tty and now - self._last < self.interval and done != total:
            return
        self._last = now
        self._write(self._line(done, total, first, now), final=False)

    def finish(self, done: int, total: int | None, first: int = 0) -> None:
        self._write(self._line(done, total, first, time.monotonic()), final=True)

    def _line(self, done: int, total: int | None, first: int, now: float) -> str:
        rate = (done - first) / max(now - self.started, 1e-3) / 2**20
        size = f"{done / 2**20:.1f}" + (
            f"/{total / 2**20:.1f} MiB ({done * 100 // total}%)" if total else " MiB"
        )
        resumed = f", resumed at {first / 2**20:.1f} MiB" if first else ""
        return f"{self.name}: {size} at {rate:.1f} MiB/s{resumed}"

    def _write(self, line: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _open(url: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise NotFound(f"{url}: not found (HTTP {exc.code})") from None
        if exc.code == 416:
            raise
        raise FetchError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(
            f"cannot reach {url}: {reason}; check the network (or --release-url); nothing was cached"
        ) from None
    assert isinstance(response, http.client.HTTPResponse)
    return response


def get_bytes(url: str, limit: int = SMALL_LIMIT) -> bytes:
    """A small file (version.txt, a signature, DIGESTS, a key) into memory."""
    try:
        with _open(url) as response:
            data = response.read(limit + 1)
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"the download of {url} was cut off ({exc}); nothing was cached") from None
    if len(data) > limit:
        raise FetchError(f"{url} is larger than {limit} bytes: not the small file expected")
    return data


def download(url: str, dest: Path, *, progress: Progress | None = None) -> int:
    """Download `url` into `dest`, continuing a partial `dest` with a Range request; the bytes it has.

    A download cut short raises FetchError and leaves `dest` as far as it got, for the next call to resume.
    """
    have = dest.stat().st_size if dest.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(url, headers)
    except urllib.error.HTTPError as exc:  # 416: the range starts at or after the end
        total = _total_from_content_range(exc.headers.get("Content-Range", ""))
        if total is not None and total == have:
            return have
        log.info("%s: the server refused to resume at %d bytes; starting over", url, have)
        dest.unlink(missing_ok=True)
        return download(url, dest, progress=progress)
    with response:
        first = have
        if have and response.status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range", ""))
            if start != have:
                raise FetchError(f"{url}: asked to resume at byte {have}, the server sent from {start}")
            total = _total_from_content_range(response.headers.get("Content-Range", ""))
            mode = "ab"
        else:
            if have:
                log.info("%s: the server does not resume downloads; starting over", url)
            first = have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open(mode) as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    have += len(chunk)
                    if progress:
                        progress.update(have, total, first)
            except (TimeoutError, http.client.HTTPException, OSError) as exc:
                out.flush()
                raise _interrupted(url, have, total, exc) from None
    if total is not None and have < total:
        raise _interrupted(url, have, total, "the connection closed early")
    if progress:
        progress.finish(have, total, first)
    return have


def _interrupted(url: str, have: int, total: int | None, why: object) -> FetchError:
    of = f" of {total}" if total else ""
    return FetchError(
        f"the download of {url} stopped after {have}{of} bytes ({why}); nothing was cached: run the same "
        "command again to resume it"
    )


def _start_from_content_range(value: str) -> int | None:
    # "bytes 100-199/200"
    unit, _, rest = value.partition(" ")
    if unit != "bytes" or "-" not in rest:
        return None
    start = rest.split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _total_from_content_range(value: str) -> int | None:
    total = value.rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None
