"""The HTTP side of the Omaha server: update checks and events by POST, payloads by GET/HEAD with single
ranges (so downloads resume). The answers come from `OmahaServer` (harness.omaha)."""

from __future__ import annotations

import http.server
import logging
import re
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from harness.errors import UpdateError

if TYPE_CHECKING:
    from harness.omaha import OmahaServer

log = logging.getLogger("harness.omaha")

UPDATE_PATH = "/v1/update/"
PAYLOAD_PREFIX = "/payloads/"
MAX_REQUEST_BYTES = 1 << 20
CHUNK = 1 << 20


class OmahaHandler(http.server.BaseHTTPRequestHandler):
    server: OmahaHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "railyard-omaha/1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.rstrip("/") != UPDATE_PATH.rstrip("/"):
            self._plain(404, f"no such endpoint {path}; the update URL is {UPDATE_PATH}\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_REQUEST_BYTES:
            self._plain(400, "an Omaha request needs a body of at most 1 MiB\n")
            return
        body = self.rfile.read(length)
        try:
            answer = self.server.omaha._answer(body, self.client_address[0], self.headers.get("Host"))
        except UpdateError as exc:
            self._plain(400, f"{exc}\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)
        self.close_connection = True

    def do_GET(self) -> None:
        self._serve_payload(head=False)

    def do_HEAD(self) -> None:
        self._serve_payload(head=True)

    def _plain(self, status: int, text: str, extra: Mapping[str, str] | None = None) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    def _serve_payload(self, *, head: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        method = "HEAD" if head else "GET"
        range_header = self.headers.get("Range")
        omaha = self.server.omaha
        found = omaha._file_for(path)
        if found is None:
            self._plain(404, f"no payload at {path}\n")
            omaha._record_download(self.client_address[0], method, path, range_header, 404, 0)
            return
        opener, size, interrupt_at = found
        try:
            selected = parse_range(range_header, size)
        except RangeNotSatisfiable:
            self._plain(
                416,
                f"range {range_header} is outside the {size} bytes\n",
                {"Content-Range": f"bytes */{size}"},
            )
            omaha._record_download(self.client_address[0], method, path, range_header, 416, 0)
            return
        start, end = selected if selected is not None else (0, size - 1)
        length = max(0, end - start + 1)
        status = 206 if selected is not None else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if selected is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0
        if interrupt_at is not None and start < interrupt_at:
            length = min(length, interrupt_at - start)  # the announced Content-Length stays the full one
        if not head and length:
            try:
                with opener() as data:
                    data.seek(start)
                    while sent < length:
                        chunk = data.read(min(CHUNK, length - sent))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("%s stopped downloading %s after %d bytes", self.client_address[0], path, sent)
        omaha._record_download(self.client_address[0], method, path, range_header, status, sent)


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range of a single-range `Range` header; None to serve the whole file.

    Raises RangeNotSatisfiable for a well-formed range that lies outside the file. Several ranges, or a
    header that is not a bytes range, are ignored (the whole file is served, as RFC 9110 allows).
    """
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable
    end = size - 1 if last == "" else min(int(last), size - 1)
    if end < start:
        return None
    return start, end


class OmahaHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    omaha: OmahaServer
