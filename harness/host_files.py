"""Files the tests serve to their guests over HTTP from the host: remote Ignition configs and file sources.

The server listens on the host's 127.0.0.1 only. A guest reaches it at its platform's `boot_host_address`
(QEMU's user network maps 10.0.2.2 to the host's loopback), from its first boot on: Ignition fetches from it
in the initramfs, before the harness has any SSH connection to forward over. Platforms that cannot do that
lack the `boot-host-services` capability; tests that serve files require it.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from harness.errors import ConfigError


@dataclass(frozen=True)
class HostFile:
    """A file being served: where the guest fetches it, and its Ignition verification hash."""

    url: str
    sha512: str
    """`sha512-<hex>`, as Ignition's `verification.hash` takes it."""


def verification_hash(data: bytes) -> str:
    return "sha512-" + hashlib.sha512(data).hexdigest()


class HostFiles:
    """A threaded HTTP server on 127.0.0.1 serving what `add` was given; records every path asked for."""

    def __init__(self, guest_address: str) -> None:
        self.guest_address = guest_address
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.fetched: list[str] = []
        """Every path a client asked for, in order (served or not)."""
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="railyard-host-files", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def add(self, name: str, data: bytes | str) -> HostFile:
        """Serve `data` under a new path ending in `name`; the guest's URL for it and its hash."""
        if not name or "/" in name:
            raise ConfigError(f"a served file's name must be a non-empty name without '/', not {name!r}")
        body = data.encode() if isinstance(data, str) else data
        with self._lock:
            path = f"/{len(self._files) + 1}/{quote(name)}"
            self._files[path] = body
        return HostFile(url=f"http://{self.guest_address}:{self.port}{path}", sha512=verification_hash(body))

    def was_fetched(self, file: HostFile) -> bool:
        """Whether a client asked for `file`."""
        path = "/" + file.url.split("/", 3)[3]
        with self._lock:
            return path in self.fetched

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        files = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with files._lock:
                    files.fetched.append(self.path)
                    body = files._files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
