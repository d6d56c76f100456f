"""The Omaha v3 wire format as Railyard speaks it: constants, version order, request parsing, responses.

Compatible with Flatcar's update_engine, which requires of an `ok` update check:
`/response/app/updatecheck[@status]`, `urls/url[@codebase]`, `manifest[@version]`,
`manifest/packages/package[@name, @size > 0]` and `manifest/actions/action[@event="postinstall"][@sha256]`
(the base64 SHA-256 of the payload it checks). Other attributes are read where present and ignored
otherwise, so Railyard adds its own (the payload signature file) as an extra `package` attribute.
"""

from __future__ import annotations

import datetime
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.errors import UpdateError

PROTOCOL_VERSION = "3.0"
SERVER_NAME = "railyard"

# The application id of the default image (Flatcar's is FLATCAR_APP_ID).
RAILYARD_APP_ID = "{6edd2756-abc2-44b3-ac3e-27af173bc54e}"
FLATCAR_APP_ID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"

# Event types (Omaha `eventtype`, update_engine's OmahaEvent::kType*).
EVENT_UNKNOWN = 0
EVENT_DOWNLOAD_COMPLETE = 1
EVENT_INSTALL_COMPLETE = 2
EVENT_UPDATE_COMPLETE = 3
EVENT_DOWNLOAD_STARTED = 13
EVENT_DOWNLOAD_FINISHED = 14

# Event results (Omaha `eventresult`, update_engine's OmahaEvent::kResult*).
RESULT_ERROR = 0
RESULT_SUCCESS = 1
RESULT_SUCCESS_REBOOT = 2
RESULT_UPDATE_DEFERRED = 9

# Error codes (`errorcode`, update_engine's ActionExitCode) that the default image's agent sends too.
ERROR_GENERIC = 1
ERROR_INSTALL = 4  # kActionCodeFilesystemCopierError: writing the inactive slot failed
ERROR_DOWNLOAD_TRANSFER = 9
ERROR_PAYLOAD_HASH_MISMATCH = 10
ERROR_PAYLOAD_SIZE_MISMATCH = 11
ERROR_PAYLOAD_VERIFICATION = 12  # the payload signature did not verify
ERROR_DOWNLOAD_WRITE = 14  # the download could not be stored (e.g. the disk is full)
ERROR_OMAHA_RESPONSE_INVALID = 34
ERROR_ROLLBACK = 44  # kActionCodeRollbackError: still on the old version after an update

# What a client sends, in the order update_engine sends it:
#   updatecheck                              -> (no event)
#   download started                         -> 13/1
#   download finished                        -> 14/1
#   update applied, waiting for a reboot     -> 3/1
#   any failure                              -> 3/0 with errorcode
#   first check after rebooting into the new version -> 3/2 with previousversion
#   first check after falling back to the old version -> 3/0 with errorcode 44 (rollback)


VersionKey = tuple[tuple[tuple[int, str], ...], tuple[int, tuple[tuple[int, int, str], ...]]]


def version_key(version: str) -> VersionKey:
    """Sort key of a version: dot-separated parts compare numerically (1.10.0 > 1.9.0).

    A missing part counts as 0 ("1.2" == "1.2.0"); a "-pre-release" sorts before its release
    ("2.0.0-rc2" < "2.0.0", "-rc10" > "-rc9"); "+build" metadata is ignored.
    """
    core, _, _build = version.strip().partition("+")
    core, dash, pre = core.partition("-")
    parts: list[tuple[int, str]] = []
    for part in core.split("."):
        match = re.match(r"(\d*)(.*)", part)
        assert match is not None
        digits, rest = match.groups()
        parts.append((int(digits) if digits else 0, rest))
    while parts and parts[-1] == (0, ""):
        parts.pop()
    pieces = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", pre))
    return tuple(parts), ((0, pieces) if dash else (1, ()))


def is_newer(candidate: str, current: str) -> bool:
    return version_key(candidate) > version_key(current)


@dataclass(frozen=True)
class OmahaEvent:
    """One `<event>` a machine reported."""

    machine_id: str
    app_id: str
    version: str
    track: str
    event_type: int
    event_result: int
    error_code: int | None
    previous_version: str
    timestamp: float
    boot_id: str = ""

    @property
    def is_error(self) -> bool:
        return self.event_result == RESULT_ERROR

    @property
    def is_rollback(self) -> bool:
        """The machine runs the version it had before an update it installed (update_engine's report)."""
        return (
            self.event_type == EVENT_UPDATE_COMPLETE
            and self.event_result == RESULT_ERROR
            and self.error_code is not None
            and (self.error_code & 0xFFFF) == ERROR_ROLLBACK
        )

    @property
    def is_update_applied(self) -> bool:
        """The new version is written to the inactive slot; the machine needs a reboot."""
        return self.event_type == EVENT_UPDATE_COMPLETE and self.event_result == RESULT_SUCCESS

    @property
    def is_rebooted_into_update(self) -> bool:
        """The machine came back running a version other than the one it had before."""
        return (
            self.event_type == EVENT_UPDATE_COMPLETE
            and self.event_result == RESULT_SUCCESS_REBOOT
            and self.previous_version not in ("", "0.0.0.0")
            and self.previous_version != self.version
        )

    def describe(self) -> str:
        code = f" errorcode={self.error_code}" if self.error_code is not None else ""
        prev = f" previousversion={self.previous_version}" if self.previous_version else ""
        return (
            f"event {self.event_type}/{self.event_result}{code}{prev} from machine {self.machine_id or '?'} "
            f"(app {self.app_id} {self.version} on {self.track or '?'})"
        )


@dataclass(frozen=True)
class AppRequest:
    """One `<app>` of a request."""

    app_id: str
    version: str
    track: str
    machine_id: str
    boot_id: str
    updatecheck: bool
    ping: bool
    events: tuple[OmahaEvent, ...]
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """A parsed Omaha v3 request."""

    protocol: str
    attributes: Mapping[str, str]
    os: Mapping[str, str]
    apps: tuple[AppRequest, ...]


def _int_or_none(value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None


def parse_request(body: bytes, *, now: float | None = None) -> Request:
    """Parse the XML body of a POST to the update URL. Raises UpdateError when it is not Omaha v3."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise UpdateError(f"the Omaha request is not well-formed XML: {exc}") from exc
    if root.tag != "request":
        raise UpdateError(f"the Omaha request's root element is <{root.tag}>, expected <request>")
    protocol = root.get("protocol", "")
    if protocol != PROTOCOL_VERSION:
        raise UpdateError(
            f"the Omaha request speaks protocol {protocol!r}; only {PROTOCOL_VERSION} is served"
        )
    stamp = time.time() if now is None else now
    os_element = root.find("os")
    request_machine = root.get("machineid") or root.get("userid") or ""
    apps: list[AppRequest] = []
    for app in root.findall("app"):
        app_id = app.get("appid", "")
        version = app.get("version", "")
        track = app.get("track") or app.get("tag") or ""
        machine_id = app.get("machineid") or request_machine
        boot_id = app.get("bootid", "")
        events = tuple(
            OmahaEvent(
                machine_id=machine_id,
                app_id=app_id,
                version=version,
                track=track,
                event_type=_int_or_none(event.get("eventtype")) or EVENT_UNKNOWN,
                event_result=_int_or_none(event.get("eventresult")) or RESULT_ERROR,
                error_code=_int_or_none(event.get("errorcode")),
                previous_version=event.get("previousversion", ""),
                timestamp=stamp,
                boot_id=boot_id,
            )
            for event in app.findall("event")
        )
        apps.append(
            AppRequest(
                app_id=app_id,
                version=version,
                track=track,
                machine_id=machine_id,
                boot_id=boot_id,
                updatecheck=app.find("updatecheck") is not None,
                ping=app.find("ping") is not None,
                events=events,
                attributes=dict(app.attrib),
            )
        )
    return Request(
        protocol=protocol,
        attributes=dict(root.attrib),
        os=dict(os_element.attrib) if os_element is not None else {},
        apps=tuple(apps),
    )


@dataclass(frozen=True)
class Offer:
    """What an `ok` update check names: where the payload is and how to check it."""

    version: str
    codebase: str
    name: str
    size: int
    sha1_b64: str
    sha256_b64: str
    signature_name: str | None = None
    extra_attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AppAnswer:
    """The server's decision for one `<app>`: `offer` for an update, `status` for the app element."""

    app: AppRequest
    status: str = "ok"
    offer: Offer | None = None


SIGNATURE_ATTRIBUTE = "railyard_signature"
OMAHA_EPOCH = datetime.date(2007, 1, 1)  # `elapsed_days` counts from here


def build_response(answers: Sequence[AppAnswer], *, now: float | None = None) -> bytes:
    """The XML answer to a request, one `<app>` per answered app, in request order."""
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now)
    root = ET.Element("response", protocol=PROTOCOL_VERSION, server=SERVER_NAME)
    seconds = moment.hour * 3600 + moment.minute * 60 + moment.second
    days = (moment.date() - OMAHA_EPOCH).days
    ET.SubElement(root, "daystart", elapsed_seconds=str(seconds), elapsed_days=str(days))
    for answer in answers:
        app = ET.SubElement(root, "app", appid=answer.app.app_id, status=answer.status)
        if answer.status != "ok":
            continue
        if answer.app.ping:
            ET.SubElement(app, "ping", status="ok")
        if answer.app.updatecheck:
            _add_updatecheck(app, answer.offer)
        for _ in answer.app.events:
            ET.SubElement(app, "event", status="ok")
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _add_updatecheck(app: ET.Element, offer: Offer | None) -> None:
    if offer is None:
        ET.SubElement(app, "updatecheck", status="noupdate")
        return
    check = ET.SubElement(app, "updatecheck", status="ok")
    urls = ET.SubElement(check, "urls")
    ET.SubElement(urls, "url", codebase=offer.codebase)
    manifest = ET.SubElement(check, "manifest", version=offer.version)
    packages = ET.SubElement(manifest, "packages")
    package = ET.SubElement(
        packages,
        "package",
        name=offer.name,
        size=str(offer.size),
        hash=offer.sha1_b64,
        hash_sha256=offer.sha256_b64,
        required="true",
    )
    if offer.signature_name:
        package.set(SIGNATURE_ATTRIBUTE, offer.signature_name)
    actions = ET.SubElement(manifest, "actions")
    action = ET.SubElement(
        actions,
        "action",
        event="postinstall",
        sha256=offer.sha256_b64,
        DisablePayloadBackoff="true",
    )
    for key, value in offer.extra_attrs.items():
        action.set(key, value)
