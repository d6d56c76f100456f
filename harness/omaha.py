"""An Omaha v3 update server for machines under test: manifests per channel, payload files, event records.

    with OmahaServer() as omaha:
        omaha.publish(RAILYARD_APP_ID, "stable", "1.1.0", Path("usr.img"), signature=sig)
        machine.forward_host_service(omaha.port)  # the guest reaches it at its own 127.0.0.1:<port>
        ...  # point the guest at omaha.guest_url
        omaha.wait_for_event((EVENT_UPDATE_COMPLETE, RESULT_SUCCESS), machine_id=mid, timeout=600)

The server binds 127.0.0.1 on an ephemeral port. POST `/v1/update/` answers update checks, events and
pings; GET/HEAD `/payloads/<id>/<name>` serves a payload (with single-range requests, so downloads can
resume) and `/payloads/<id>/<name>.sig` its signature. Payload URLs are built from the request's Host
header, so every client gets addresses it can reach: the host and a guest through a reverse port forward
over the harness's SSH connection (the default, on every platform) both at 127.0.0.1, a QEMU user-net guest
that talks to the host directly at 10.0.2.2 (`guest_host=USER_NET_HOST`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Self

from harness.errors import ConfigError, UpdateError
from harness.omaha_http import PAYLOAD_PREFIX, UPDATE_PATH, OmahaHandler, OmahaHTTPServer
from harness.omaha_protocol import (
    EVENT_DOWNLOAD_FINISHED,
    EVENT_DOWNLOAD_STARTED,
    EVENT_UPDATE_COMPLETE,
    FLATCAR_APP_ID,
    RAILYARD_APP_ID,
    RESULT_ERROR,
    RESULT_SUCCESS,
    RESULT_SUCCESS_REBOOT,
    AppAnswer,
    AppRequest,
    Offer,
    OmahaEvent,
    build_response,
    is_newer,
    parse_request,
    version_key,
)

__all__ = [
    "EVENT_DOWNLOAD_FINISHED",
    "EVENT_DOWNLOAD_STARTED",
    "EVENT_UPDATE_COMPLETE",
    "FLATCAR_APP_ID",
    "RAILYARD_APP_ID",
    "RESULT_ERROR",
    "RESULT_SUCCESS",
    "RESULT_SUCCESS_REBOOT",
    "DownloadRecord",
    "OmahaEvent",
    "OmahaServer",
    "Published",
    "RequestRecord",
]

log = logging.getLogger(__name__)

GUEST_HOST = (
    "127.0.0.1"  # a guest reaches the server through a reverse forward (GuestMachine.forward_host_service)
)
USER_NET_HOST = "10.0.2.2"  # the host as a QEMU user-net guest sees it, without a forward
CHUNK = 1 << 20

EventPredicate = Callable[[OmahaEvent], bool]


def _digests(path: Path) -> tuple[int, str, str]:
    sha1 = hashlib.sha1()
    sha256 = hashlib.sha256()
    size = 0
    with path.open("rb") as data:
        while chunk := data.read(CHUNK):
            size += len(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    return size, base64.b64encode(sha1.digest()).decode(), base64.b64encode(sha256.digest()).decode()


@dataclass(frozen=True)
class Published:
    """A payload made available on a channel, and the metadata the server announces for it.

    `size`, `sha1_b64` and `sha256_b64` describe the file; `manifest_*` is what update checks are told
    (the same, unless the payload was published with deliberately wrong metadata).
    """

    payload_id: str
    app_id: str
    track: str
    version: str
    path: Path
    name: str
    size: int
    sha1_b64: str
    sha256_b64: str
    signature: bytes | None
    manifest_size: int
    manifest_sha1_b64: str
    manifest_sha256_b64: str
    extra_attrs: Mapping[str, str] = field(default_factory=dict)
    interrupt_at: int | None = None

    @property
    def signature_name(self) -> str | None:
        return f"{self.name}.sig" if self.signature is not None else None


@dataclass(frozen=True)
class RequestRecord:
    """One POST to the update URL: who asked what, and what the server said."""

    timestamp: float
    client: str
    body: str
    response: str
    machine_ids: tuple[str, ...]
    updatechecks: tuple[tuple[str, str, str, str], ...]
    """(app id, version, track, answer) per update check; answer is "ok", "noupdate" or an app error."""


@dataclass(frozen=True)
class DownloadRecord:
    """One GET/HEAD of a payload file (or its signature)."""

    timestamp: float
    client: str
    method: str
    path: str
    range_header: str | None
    status: int
    bytes_sent: int


class OmahaServer:
    """An Omaha v3 server on 127.0.0.1. A context manager; `start()`/`stop()` work too.

    `app_id` (more with `app_ids`) names the applications it answers; a request for any other gets
    `status="error-unknownApplication"`. Publishing a payload for another app id adds that id.
    """

    def __init__(
        self,
        app_id: str = RAILYARD_APP_ID,
        *,
        app_ids: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        guest_host: str = GUEST_HOST,
        guest_port: int | None = None,
    ) -> None:
        self.app_id = app_id
        self._guest_port = guest_port
        self._apps = {a.lower() for a in (app_id, *app_ids)}
        self._host = host
        self._port = port
        self._guest_host = guest_host
        self._payload_host: str | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._published: dict[str, Published] = {}
        self._events: list[OmahaEvent] = []
        self._requests: list[RequestRecord] = []
        self._downloads: list[DownloadRecord] = []
        self._server: OmahaHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = OmahaHTTPServer((self._host, self._port), OmahaHandler)
        server.omaha = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="omaha-server", daemon=True
        )
        self._thread.start()
        log.info("Omaha server listening at %s (guests: %s)", self.url, self.guest_url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(10)
        log.info("Omaha server on port %d stopped", server.server_address[1])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise UpdateError("the Omaha server is not running: call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The update URL for clients on the host."""
        return f"http://{self._host}:{self.port}{UPDATE_PATH}"

    @property
    def guest_port(self) -> int:
        """The port guests reach the server at: `guest_port` as given (the same for every server, so that
        machines pointed at different servers can share a checkpoint), else the server's own port."""
        return self._guest_port or self.port

    @property
    def guest_url(self) -> str:
        """The update URL for a guest (`SERVER=` in the guest's update.conf): the guest's own 127.0.0.1 and
        `guest_port`, which `GuestMachine.forward_host_service(port, guest_port)` connects to this server."""
        return f"http://{self._guest_host}:{self.guest_port}{UPDATE_PATH}"

    def serve_payloads_at(self, host: str | None) -> None:
        """Name payload URLs at `host` and this server's own port (None: at the address the client asked on).

        A guest that reaches the host directly (QEMU's user network: 10.0.2.2, which is the host's loopback)
        then downloads payloads outside the reverse forward over SSH, which would cost the guest's sshd a
        cipher pass over every byte. Update checks and events keep going where `SERVER=` points."""
        self._payload_host = host

    # -- publishing --------------------------------------------------------------------------------

    def publish(
        self,
        app_id: str,
        track: str,
        version: str,
        payload: Path,
        *,
        name: str | None = None,
        signature: bytes | None = None,
        extra_attrs: Mapping[str, str] = MappingProxyType({}),
        override_size: int | None = None,
        override_sha256: str | None = None,
        override_sha1: str | None = None,
        interrupt_at: int | None = None,
    ) -> Published:
        """Offer `payload` as `version` of `app_id` to machines on `track`.

        The newest version published for a track is what update checks from older versions get. The
        `override_*` arguments announce wrong metadata on purpose (base64 digests, byte size), for
        tests that a client refuses a payload that does not match. With `interrupt_at`, a download
        that starts before that byte offset breaks off there (the connection closes short of the
        announced length), so a client gets the rest only by resuming with a Range request.
        """
        payload = Path(payload)
        if not payload.is_file():
            raise ConfigError(f"cannot publish {payload}: no such file")
        if not re.search(r"\d", version):
            raise ConfigError(f"cannot publish version {version!r}: a version needs at least one number")
        if not track:
            raise ConfigError("cannot publish to an empty track: name the channel (e.g. 'stable')")
        file_name = name or payload.name
        if "/" in file_name or file_name in ("", ".", ".."):
            raise ConfigError(f"payload name {file_name!r} must be a plain file name")
        size, sha1, sha256 = _digests(payload)
        if size == 0:
            raise ConfigError(f"cannot publish {payload}: it is empty")
        with self._lock:
            self._counter += 1
            payload_id = f"{self._counter}-{sha256[:8].replace('/', '_').replace('+', '-')}"
            published = Published(
                payload_id=payload_id,
                app_id=app_id,
                track=track,
                version=version,
                path=payload,
                name=file_name,
                size=size,
                sha1_b64=sha1,
                sha256_b64=sha256,
                signature=signature,
                manifest_size=size if override_size is None else override_size,
                manifest_sha1_b64=sha1 if override_sha1 is None else override_sha1,
                manifest_sha256_b64=sha256 if override_sha256 is None else override_sha256,
                extra_attrs=dict(extra_attrs),
                interrupt_at=interrupt_at,
            )
            self._published[payload_id] = published
            self._apps.add(app_id.lower())
        log.info("published %s %s on %s: %s (%d bytes)", app_id, version, track, payload, size)
        return published

    def unpublish(self, app_id: str, track: str, version: str | None = None) -> None:
        """Withdraw one version (or every version) of `app_id` from `track`."""
        with self._lock:
            for key, item in list(self._published.items()):
                if (
                    item.app_id.lower() == app_id.lower()
                    and item.track == track
                    and (version is None or version_key(item.version) == version_key(version))
                ):
                    del self._published[key]

    @property
    def published(self) -> list[Published]:
        with self._lock:
            return list(self._published.values())

    def latest(self, app_id: str, track: str) -> Published | None:
        """The newest payload of `app_id` on `track`, if any."""
        with self._lock:
            return self._latest(app_id, track)

    def _latest(self, app_id: str, track: str) -> Published | None:
        candidates = [
            p for p in self._published.values() if p.app_id.lower() == app_id.lower() and p.track == track
        ]
        return max(candidates, key=lambda p: version_key(p.version), default=None)

    # -- records -----------------------------------------------------------------------------------

    @property
    def events(self) -> list[OmahaEvent]:
        """Every event reported so far, oldest first (a copy)."""
        with self._lock:
            return list(self._events)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def downloads(self) -> list[DownloadRecord]:
        with self._lock:
            return list(self._downloads)

    def events_for(self, machine_id: str) -> list[OmahaEvent]:
        with self._lock:
            return [e for e in self._events if e.machine_id == machine_id]

    def wait_for_event(
        self,
        match: EventPredicate | tuple[int, int],
        *,
        machine_id: str | None = None,
        timeout: float,
        after: int = 0,
    ) -> OmahaEvent:
        """The first event (from index `after` of `events` on) that matches, waiting up to `timeout` s.

        `match` is a predicate or an `(event_type, event_result)` pair. Take `after=len(server.events)`
        before an action to wait only for what the action causes.
        """
        predicate: EventPredicate
        if isinstance(match, tuple):
            wanted_type, wanted_result = match

            def is_wanted(event: OmahaEvent) -> bool:
                return event.event_type == wanted_type and event.event_result == wanted_result

            predicate = is_wanted
            what = f"event {wanted_type}/{wanted_result}"
        else:
            predicate = match
            what = f"an event matching {getattr(match, '__name__', 'the predicate')}"
        deadline = time.monotonic() + timeout
        index = after
        with self._changed:
            while True:
                for event in self._events[index:]:
                    if (machine_id is None or event.machine_id == machine_id) and predicate(event):
                        return event
                index = max(index, len(self._events))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [
                        e for e in self._events[after:] if machine_id is None or e.machine_id == machine_id
                    ]
                    listing = "\n  ".join(e.describe() for e in seen) or "(none)"
                    who = f" from machine {machine_id}" if machine_id else ""
                    raise UpdateError(
                        f"no {what}{who} reached the Omaha server within {timeout:.0f} s; "
                        f"events seen:\n  {listing}\n"
                        "Check the guest's update agent (journalctl -u railyard-update-agent, "
                        "railyard-update status) and that its SERVER= points at "
                        f"{self.guest_url if self._server else 'this server'}."
                    )
                self._changed.wait(remaining)

    # -- request handling (called from the HTTP threads) -------------------------------------------

    def _offer_for(self, app: AppRequest, host_header: str | None) -> Offer | None:
        latest = self._latest(app.app_id, app.track)
        if latest is None or not is_newer(latest.version, app.version):
            return None
        if self._payload_host is not None:
            host = f"{self._payload_host}:{self.port}"
        else:
            host = host_header or f"{self._guest_host}:{self.guest_port}"
        return Offer(
            version=latest.version,
            codebase=f"http://{host}{PAYLOAD_PREFIX}{latest.payload_id}/",
            name=latest.name,
            size=latest.manifest_size,
            sha1_b64=latest.manifest_sha1_b64,
            sha256_b64=latest.manifest_sha256_b64,
            signature_name=latest.signature_name,
            extra_attrs=latest.extra_attrs,
        )

    def _answer(self, body: bytes, client: str, host_header: str | None) -> bytes:
        request = parse_request(body)
        answers: list[AppAnswer] = []
        checks: list[tuple[str, str, str, str]] = []
        with self._changed:
            for app in request.apps:
                if app.app_id.lower() not in self._apps:
                    answers.append(AppAnswer(app, status="error-unknownApplication"))
                    if app.updatecheck:
                        checks.append((app.app_id, app.version, app.track, "error-unknownApplication"))
                else:
                    offer = self._offer_for(app, host_header) if app.updatecheck else None
                    answers.append(AppAnswer(app, offer=offer))
                    if app.updatecheck:
                        checks.append((app.app_id, app.version, app.track, "ok" if offer else "noupdate"))
                for event in app.events:
                    log.info("Omaha %s", event.describe())
                    self._events.append(event)
            response = build_response(answers)
            self._requests.append(
                RequestRecord(
                    timestamp=time.time(),
                    client=client,
                    body=body.decode(errors="replace"),
                    response=response.decode(),
                    machine_ids=tuple(dict.fromkeys(a.machine_id for a in request.apps)),
                    updatechecks=tuple(checks),
                )
            )
            self._changed.notify_all()
        return response

    def _file_for(self, url_path: str) -> tuple[Callable[[], IO[bytes]], int, int | None] | None:
        """An opener, the size and the offset a download breaks off at (None: never) of a served file."""
        if not url_path.startswith(PAYLOAD_PREFIX):
            return None
        parts = url_path[len(PAYLOAD_PREFIX) :].split("/")
        if len(parts) != 2:
            return None
        payload_id, file_name = parts
        with self._lock:
            published = self._published.get(payload_id)
        if published is None:
            return None
        if file_name == published.name:
            path = published.path
            if not path.is_file():
                return None
            return (lambda: path.open("rb")), path.stat().st_size, published.interrupt_at
        if published.signature is not None and file_name == published.signature_name:
            signature = published.signature
            return (lambda: io.BytesIO(signature)), len(signature), None
        return None

    def _record_download(
        self, client: str, method: str, path: str, range_header: str | None, status: int, sent: int
    ) -> None:
        with self._changed:
            self._downloads.append(
                DownloadRecord(time.time(), client, method, path, range_header, status, sent)
            )
            self._changed.notify_all()
