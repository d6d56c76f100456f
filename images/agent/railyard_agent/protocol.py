"""The Omaha v3 protocol, client side: the request the agent sends, the update offer it gets back, the
events it reports and the error codes it reports them with."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import AgentConfig

AGENT_NAME = "railyard-update-agent-1"

EVENT_UPDATE_COMPLETE = 3
EVENT_DOWNLOAD_STARTED = 13
EVENT_DOWNLOAD_FINISHED = 14
RESULT_ERROR = 0
RESULT_SUCCESS = 1
RESULT_SUCCESS_REBOOT = 2

ERROR_GENERIC = 1
ERROR_INSTALL = 4
ERROR_DOWNLOAD_TRANSFER = 9
ERROR_PAYLOAD_HASH_MISMATCH = 10
ERROR_PAYLOAD_SIZE_MISMATCH = 11
ERROR_PAYLOAD_VERIFICATION = 12
ERROR_DOWNLOAD_WRITE = 14
ERROR_OMAHA_RESPONSE_INVALID = 34
ERROR_ROLLBACK = 44


@dataclass(frozen=True)
class Identity:
    """Who is asking: the running version and this machine and boot."""

    version: str
    machine_id: str
    boot_id: str
    os_name: str
    arch: str


@dataclass(frozen=True)
class Offer:
    """An `ok` update check: where the payload is and what it must look like."""

    version: str
    url: str
    name: str
    size: int
    sha256_b64: str  # the postinstall action's sha256: the payload's hash (the package's SHA-1 is not used)
    signature_url: str | None


@dataclass(frozen=True)
class Report:
    """One event for the server."""

    event_type: int
    event_result: int
    error_code: int | None = None
    previous_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "event_result": self.event_result,
            "error_code": self.error_code,
            "previous_version": self.previous_version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        code = data.get("error_code")
        return cls(
            int(data["event_type"]),
            int(data["event_result"]),
            int(code) if code is not None else None,
            str(data.get("previous_version", "")),
        )


class UpdateFailure(Exception):
    """A cycle failed; `code` is what the server is told. `keep_download` keeps a partial file to resume."""

    def __init__(self, code: int, message: str, *, keep_download: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.keep_download = keep_download


class CheckFailure(Exception):
    """The update check itself failed (server unreachable, bad answer): nothing to report."""


def build_request(
    config: AgentConfig,
    who: Identity,
    *,
    updatecheck: bool = False,
    ping: bool = False,
    report: Report | None = None,
    interactive: bool = False,
) -> bytes:
    root = ET.Element(
        "request",
        protocol="3.0",
        version=AGENT_NAME,
        updaterversion=AGENT_NAME,
        installsource="ondemandupdate" if interactive else "scheduler",
        ismachine="1",
    )
    ET.SubElement(root, "os", version=who.os_name, platform=who.os_name, sp=f"{who.version}_{who.arch}")
    app = ET.SubElement(
        root,
        "app",
        appid=config.app_id,
        version=who.version,
        track=config.group,
        bootid="{" + who.boot_id + "}" if who.boot_id else "",
        machineid=who.machine_id,
        lang="en-US",
        board=f"{who.arch}-usr",
        delta_okay="false",
    )
    if ping:
        ET.SubElement(app, "ping", active="1")
    if updatecheck:
        ET.SubElement(app, "updatecheck")
    if report is not None:
        event = ET.SubElement(
            app, "event", eventtype=str(report.event_type), eventresult=str(report.event_result)
        )
        if report.error_code is not None:
            event.set("errorcode", str(report.error_code))
        if report.previous_version:
            event.set("previousversion", report.previous_version)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def parse_update_response(body: bytes, app_id: str) -> Offer | None:
    """The offer in an update-check answer, None for `noupdate`; CheckFailure if the answer is unusable."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CheckFailure(f"the update server's answer is not XML: {exc}") from exc
    app = next((a for a in root.findall("app") if a.get("appid", "").lower() == app_id.lower()), None)
    if app is None:
        raise CheckFailure(f"the update server's answer has no <app> for {app_id}")
    if app.get("status", "ok") != "ok":
        raise CheckFailure(f"the update server does not serve {app_id}: status {app.get('status')!r}")
    check = app.find("updatecheck")
    if check is None or "status" not in check.attrib:
        raise CheckFailure("the update server's answer has no <updatecheck status=...>")
    status = check.get("status")
    if status == "noupdate":
        return None
    if status != "ok":
        raise CheckFailure(f"the update server answered the update check with status {status!r}")
    manifest = check.find("manifest")
    codebases = [u.get("codebase", "") for u in check.findall("urls/url")]
    package = check.find("manifest/packages/package")
    action = next(
        (a for a in check.findall("manifest/actions/action") if a.get("event") == "postinstall"), None
    )
    if manifest is None or not codebases or not codebases[0] or package is None or action is None:
        raise CheckFailure(
            "the update offer lacks a manifest, a codebase URL, a package or a postinstall action"
        )
    name = package.get("name", "")
    try:
        size = int(package.get("size", "0"))
    except ValueError:
        size = 0
    sha256 = action.get("sha256", "")
    package_sha256 = package.get("hash_sha256", "")
    if not name or "/" in name or size <= 0 or not sha256:
        raise CheckFailure("the update offer has no package name, no positive size or no sha256")
    if package_sha256 and package_sha256 != sha256:
        raise CheckFailure("the update offer names two different SHA-256 digests for its package")
    base = codebases[0] if codebases[0].endswith("/") else codebases[0] + "/"
    signature = package.get("railyard_signature")
    return Offer(
        version=manifest.get("version", ""),
        url=base + name,
        name=name,
        size=size,
        sha256_b64=sha256,
        signature_url=base + signature if signature and "/" not in signature else None,
    )
