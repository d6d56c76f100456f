#!/usr/bin/python3
"""railyard update agent: an Omaha v3 client that keeps the A/B /usr slots up to date.

A cycle: update check -> (13) download started -> download into the state directory (resuming a partial
file with a Range request) -> check size, SHA-1, SHA-256 and the OpenSSH signature -> (14) download
finished -> `railyard-slot install FILE` (writes the inactive slot, boots it once on trial) -> (3/1)
update applied; status UPDATE_STATUS_UPDATED_NEED_REBOOT. Any failure reports 3/0 with an error code,
deletes what was downloaded (a broken transfer keeps its partial file for the next try) and never
touches a slot.

After a reboot into the new version, once the boot is complete (the health check passed) the agent
makes sure the slot is blessed (`railyard-slot mark-good` if systemd-bless-boot did not) and reports
3/2 with previousversion. When the machine came back on the old version, or `railyard-slot status`
shows a failed trial of the other slot, it reports 3/0 with errorcode 44 (update_engine's rollback
report, previousversion = the version that failed) once, and scheduled checks skip that version (and
one left by `rollback`) until a check-now asks for it. Scheduled checks start INTERVAL seconds after
the agent does, never at boot: a machine under test updates when it is told to.

Configuration: /usr/share/railyard/update.conf, overridden key by key by /etc/railyard/update.conf:
SERVER (URL or "disabled"), GROUP, APP_ID, INTERVAL (seconds), SIGNING_KEY (allowed_signers file or
OpenSSH public key; "none" skips the signature check), MARK_GOOD (yes/no).
Status: /run/railyard/update-status (key=value). Commands: run, once, status, check-now, rollback.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import http.client
import json
import logging
import lzma
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AGENT_NAME = "railyard-update-agent-1"
DEFAULT_APP_ID = "{6edd2756-abc2-44b3-ac3e-27af173bc54e}"
DEFAULT_INTERVAL = 3600.0
SIGNING_NAMESPACE = "railyard-update"
SIGNER_IDENTITY = "railyard-update"

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

STATUS_IDLE = "UPDATE_STATUS_IDLE"
STATUS_CHECKING = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
STATUS_AVAILABLE = "UPDATE_STATUS_UPDATE_AVAILABLE"
STATUS_DOWNLOADING = "UPDATE_STATUS_DOWNLOADING"
STATUS_VERIFYING = "UPDATE_STATUS_VERIFYING"
STATUS_FINALIZING = "UPDATE_STATUS_FINALIZING"
STATUS_NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
STATUS_REPORTING_ERROR = "UPDATE_STATUS_REPORTING_ERROR_EVENT"
STATUS_DISABLED = "UPDATE_STATUS_DISABLED"

HTTP_TIMEOUT = 60.0
CHUNK = 1 << 20
MAX_SIGNATURE_BYTES = 64 * 1024
RETRY_DELAYS = (5.0, 10.0, 20.0, 30.0)

log = logging.getLogger("railyard-update-agent")


# -- configuration and paths ----------------------------------------------------------------------


@dataclass(frozen=True)
class AgentPaths:
    """Everything the agent reads, writes or runs; tests point these into a temporary directory."""

    config_files: tuple[Path, ...] = (
        Path("/usr/share/railyard/update.conf"),
        Path("/etc/railyard/update.conf"),
    )
    state_dir: Path = Path("/var/lib/railyard/update")
    run_dir: Path = Path("/run/railyard")
    os_release: Path = Path("/usr/lib/os-release")
    machine_id: Path = Path("/etc/machine-id")
    boot_id: Path = Path("/proc/sys/kernel/random/boot_id")
    slot_tool: tuple[str, ...] = ("/usr/bin/railyard-slot",)
    ssh_keygen: str = "ssh-keygen"
    boot_complete: tuple[str, ...] = ("systemctl", "is-active", "--quiet", "boot-complete.target")

    @property
    def status_file(self) -> Path:
        return self.run_dir / "update-status"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "update-agent.pid"

    @property
    def applied_marker(self) -> Path:
        return self.run_dir / "update-applied"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"


@dataclass(frozen=True)
class AgentConfig:
    server: str = "disabled"
    group: str = "stable"
    app_id: str = DEFAULT_APP_ID
    interval: float = DEFAULT_INTERVAL
    signing_key: Path | None = Path("/usr/share/railyard/update-signing.pub")  # None: do not verify
    mark_good: bool = True

    @property
    def disabled(self) -> bool:
        return self.server.strip().lower() in ("", "disabled", "none", "off")


def parse_key_values(text: str) -> dict[str, str]:
    """KEY=value lines (shell-style quotes stripped, comments and blank lines ignored)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_config(files: Sequence[Path]) -> AgentConfig:
    """Later files override earlier ones key by key; missing files are skipped."""
    values: dict[str, str] = {}
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            values.update(parse_key_values(path.read_text()))
    defaults = AgentConfig()
    interval = defaults.interval
    if values.get("INTERVAL"):
        try:
            interval = max(1.0, float(values["INTERVAL"]))
        except ValueError:
            log.warning("INTERVAL=%r is not a number of seconds; using %.0f", values["INTERVAL"], interval)
    return AgentConfig(
        server=values.get("SERVER", defaults.server) or defaults.server,
        group=values.get("GROUP", defaults.group) or defaults.group,
        app_id=values.get("APP_ID", defaults.app_id) or defaults.app_id,
        interval=interval,
        signing_key=_signing_key(values.get("SIGNING_KEY"), defaults.signing_key),
        mark_good=values.get("MARK_GOOD", "yes").strip().lower() not in ("no", "false", "0", "off"),
    )


def _signing_key(value: str | None, default: Path | None) -> Path | None:
    if not value:
        return default
    return None if value.strip().lower() == "none" else Path(value.strip())


def read_first_line(path: Path) -> str:
    try:
        return path.read_text().strip().splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


# -- the Omaha protocol, client side ---------------------------------------------------------------


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
    sha1_b64: str
    sha256_b64: str
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
        sha1_b64=package.get("hash", ""),
        sha256_b64=sha256,
        signature_url=base + signature if signature and "/" not in signature else None,
    )


# -- status file -----------------------------------------------------------------------------------


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


# -- the agent -------------------------------------------------------------------------------------


class Agent:
    """One machine's update agent. `check()` is one cycle; `run()` loops and waits for signals."""

    def __init__(self, paths: AgentPaths | None = None) -> None:
        self.paths = paths or AgentPaths()
        self.status = StatusFile(self.paths.status_file)
        self._report_failures = 0

    # ---- facts about this machine

    def identity(self) -> Identity:
        release: dict[str, str] = {}
        with contextlib.suppress(OSError):
            release = parse_key_values(self.paths.os_release.read_text())
        return Identity(
            version=release.get("VERSION_ID", "0.0.0") or "0.0.0",
            machine_id=read_first_line(self.paths.machine_id),
            boot_id=read_first_line(self.paths.boot_id),
            os_name=release.get("ID", "railyard") or "railyard",
            arch=os.uname().machine,
        )

    def config(self) -> AgentConfig:
        return read_config(self.paths.config_files)

    def slot_status(self) -> dict[str, str]:
        """`railyard-slot status` as a dict; empty when the tool fails (then slots are not inspected)."""
        try:
            result = subprocess.run(
                [*self.paths.slot_tool, "status"], capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("railyard-slot status failed: %s", exc)
            return {}
        if result.returncode != 0:
            log.warning("railyard-slot status failed: %s", result.stderr.strip())
            return {}
        return parse_key_values(result.stdout)

    def boot_completed(self) -> bool:
        try:
            return subprocess.run(list(self.paths.boot_complete), timeout=30, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    # ---- persistent state (survives reboots, in /var)

    def load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.paths.state_file.read_text())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
        return {}

    def save_state(self, state: Mapping[str, Any]) -> None:
        write_atomically(self.paths.state_file, json.dumps(state, indent=1, sort_keys=True) + "\n", 0o600)

    def applied_version(self, who: Identity) -> str | None:
        """The version installed in this boot, waiting for a reboot (None if nothing is)."""
        data = (
            parse_key_values(self.paths.applied_marker.read_text())
            if self.paths.applied_marker.exists()
            else {}
        )
        if data.get("BOOT_ID") == who.boot_id and data.get("VERSION"):
            return data["VERSION"]
        return None

    # ---- talking to the server

    def post(self, config: AgentConfig, body: bytes) -> bytes:
        request = urllib.request.Request(
            config.server, data=body, headers={"Content-Type": "text/xml; charset=utf-8"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                data: bytes = answer.read()
                return data
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise CheckFailure(f"cannot reach the update server {config.server}: {exc}") from exc

    def send_report(self, config: AgentConfig, who: Identity, report: Report) -> bool:
        """Send one event; False (logged) when the server could not be reached."""
        try:
            self.post(config, build_request(config, who, report=report))
        except CheckFailure as exc:
            log.warning("event %d/%d not delivered: %s", report.event_type, report.event_result, exc)
            return False
        log.info(
            "reported event %d/%d%s",
            report.event_type,
            report.event_result,
            f" errorcode={report.error_code}" if report.error_code is not None else "",
        )
        return True

    # ---- after a reboot

    def reconcile(self, config: AgentConfig) -> bool:
        """Settle what the last boot left behind; True while something is still to be done (retry soon)."""
        who = self.identity()
        state = self.load_state()
        queue = [Report.from_json(r) for r in state.get("reports", [])]
        waiting = False
        installed = state.get("installed")
        slots: dict[str, str] | None = None
        if isinstance(installed, dict) and installed.get("boot_id") != who.boot_id:
            slots = self.slot_status()
            new, old = str(installed.get("version", "")), str(installed.get("previous_version", ""))
            if who.version == new:
                if self._bless(config, slots):
                    log.info("running %s after the update from %s", new, old)
                    queue.append(Report(EVENT_UPDATE_COMPLETE, RESULT_SUCCESS_REBOOT, None, old))
                    state.pop("installed", None)
                else:
                    waiting = True
            else:
                log.error(
                    "still running %s after installing %s: the new version did not stay booted",
                    who.version,
                    new,
                )
                queue.append(Report(EVENT_UPDATE_COMPLETE, RESULT_ERROR, ERROR_ROLLBACK, new))
                state.setdefault("skip_versions", [])
                if new not in state["skip_versions"]:
                    state["skip_versions"].append(new)
                state.pop("installed", None)
                key = self._failed_trial_key(slots)
                if key:
                    state.setdefault("rollbacks_reported", []).append(key)
        if not isinstance(state.get("installed"), dict):
            slots = self.slot_status() if slots is None else slots
            key = self._failed_trial_key(slots)
            if key and key not in state.get("rollbacks_reported", []):
                other = self._other_slot(slots)
                failed = slots.get(f"slot_{other[-1].lower()}_version", "") if other else ""
                log.error(
                    "the trial of %s (%s) failed and the machine fell back to %s",
                    other,
                    failed,
                    slots.get("booted"),
                )
                queue.append(Report(EVENT_UPDATE_COMPLETE, RESULT_ERROR, ERROR_ROLLBACK, failed))
                state.setdefault("rollbacks_reported", []).append(key)
                if failed and failed not in state.setdefault("skip_versions", []):
                    state["skip_versions"].append(failed)
        if queue and not config.disabled:
            unsent: list[Report] = []
            for report in queue:
                if unsent or not self.send_report(config, who, report):
                    unsent.append(report)
            queue = unsent
        state["reports"] = [r.to_json() for r in queue]
        self.save_state(state)
        return waiting or bool(queue)

    @staticmethod
    def _other_slot(slots: Mapping[str, str]) -> str | None:
        return {"USR-A": "USR-B", "USR-B": "USR-A"}.get(slots.get("booted", ""))

    def _failed_trial_key(self, slots: Mapping[str, str]) -> str | None:
        """An id of the other slot's failed trial per `railyard-slot status`, or None if there is none."""
        other = self._other_slot(slots)
        if other is None or slots.get("booted_on_trial") == "yes":
            return None
        letter = other[-1].lower()
        if slots.get(f"slot_{letter}_state") != "bad":
            return None
        return f"{other}:{slots.get(f'slot_{letter}_entry', '')}:{slots.get(f'slot_{letter}_version', '')}"

    def _bless(self, config: AgentConfig, slots: Mapping[str, str]) -> bool:
        """True once the booted slot is good (blessing it after a complete boot if nobody did)."""
        booted = slots.get("booted", "")
        state = slots.get(f"slot_{booted[-1].lower()}_state", "") if booted in ("USR-A", "USR-B") else ""
        if not slots or state == "good":
            return True
        if not self.boot_completed():
            log.info("%s is on trial; waiting for boot-complete.target before reporting", booted)
            return False
        if not config.mark_good:
            return True
        log.warning("%s reached boot-complete.target but is still on trial: marking it good", booted)
        result = subprocess.run(
            [*self.paths.slot_tool, "mark-good"], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            log.error("railyard-slot mark-good failed: %s", result.stderr.strip())
            return False
        return True

    # ---- one cycle

    def check(self, *, interactive: bool = False) -> str:
        """One update cycle. Returns what happened: disabled, check-failed, noupdate, need-reboot,
        waiting (the booted update is on trial), updated or failed."""
        config = self.config()
        who = self.identity()
        started = time.time()
        common = {"SERVER": config.server, "GROUP": config.group, "CURRENT_VERSION": who.version}
        if config.disabled:
            self.status.set(
                CURRENT_OP=STATUS_DISABLED, LAST_CYCLE_START=started, LAST_CYCLE_END=time.time(), **common
            )
            return "disabled"
        self.status.set(LAST_CYCLE_START=started, LAST_ERROR="", LAST_ERROR_CODE="", **common)
        try:
            self.reconcile(config)
            applied = self.applied_version(who)
            if applied is not None:
                with contextlib.suppress(CheckFailure):
                    self.post(config, build_request(config, who, ping=True, interactive=interactive))
                self.status.set(CURRENT_OP=STATUS_NEED_REBOOT, NEW_VERSION=applied)
                return "need-reboot"
            if isinstance(self.load_state().get("installed"), dict):
                # Installing now would overwrite the slot this trial boot falls back to.
                log.info("the booted update is still on trial: no update check until its boot is complete")
                self.status.set(CURRENT_OP=STATUS_IDLE)
                return "waiting"
            return self._cycle(config, who, interactive)
        finally:
            self.status.set(LAST_CYCLE_END=time.time())

    def _cycle(self, config: AgentConfig, who: Identity, interactive: bool) -> str:
        self.status.set(CURRENT_OP=STATUS_CHECKING)
        try:
            answer = self.post(
                config, build_request(config, who, updatecheck=True, ping=True, interactive=interactive)
            )
            offer = parse_update_response(answer, config.app_id)
        except CheckFailure as exc:
            log.error("update check failed: %s", exc)
            self.status.set(CURRENT_OP=STATUS_IDLE, LAST_ERROR=str(exc), LAST_ERROR_CODE=ERROR_GENERIC)
            return "check-failed"
        self.status.set(LAST_CHECKED_TIME=int(time.time()))
        if offer is None:
            log.info("no update for %s on %s", who.version, config.group)
            self.status.set(CURRENT_OP=STATUS_IDLE)
            return "noupdate"
        skipped = self.load_state().get("skip_versions", [])
        if offer.version in skipped and not interactive:
            log.warning(
                "not installing %s on a scheduled check: it failed its trial or was rolled back",
                offer.version,
            )
            self.status.set(CURRENT_OP=STATUS_IDLE)
            return "noupdate"
        log.info(
            "update available: %s -> %s (%d bytes from %s)", who.version, offer.version, offer.size, offer.url
        )
        self.status.set(
            CURRENT_OP=STATUS_AVAILABLE, NEW_VERSION=offer.version, NEW_SIZE=offer.size, PROGRESS="0.0"
        )
        self.send_report(config, who, Report(EVENT_DOWNLOAD_STARTED, RESULT_SUCCESS))
        try:
            payload = self.download(offer)
            self.status.set(CURRENT_OP=STATUS_VERIFYING)
            self.verify(config, offer, payload)
            self.send_report(config, who, Report(EVENT_DOWNLOAD_FINISHED, RESULT_SUCCESS))
            self.status.set(CURRENT_OP=STATUS_FINALIZING)
            self.install(payload)
        except UpdateFailure as exc:
            log.error("update to %s failed (error %d): %s", offer.version, exc.code, exc)
            if not exc.keep_download:
                self.discard_download()
            self.status.set(CURRENT_OP=STATUS_REPORTING_ERROR, LAST_ERROR=str(exc), LAST_ERROR_CODE=exc.code)
            self.send_report(config, who, Report(EVENT_UPDATE_COMPLETE, RESULT_ERROR, exc.code))
            self.status.set(CURRENT_OP=STATUS_IDLE)
            return "failed"
        self.discard_download()
        state = self.load_state()
        state["installed"] = {
            "version": offer.version,
            "previous_version": who.version,
            "boot_id": who.boot_id,
            "time": int(time.time()),
        }
        self.save_state(state)
        write_atomically(self.paths.applied_marker, f"VERSION={offer.version}\nBOOT_ID={who.boot_id}\n")
        self.send_report(config, who, Report(EVENT_UPDATE_COMPLETE, RESULT_SUCCESS))
        self.status.set(CURRENT_OP=STATUS_NEED_REBOOT, PROGRESS="1.0")
        log.info("%s installed; reboot to use it", offer.version)
        return "updated"

    # ---- download, verify, install

    @property
    def _partial(self) -> Path:
        return self.paths.state_dir / "payload.partial"

    @property
    def _partial_meta(self) -> Path:
        return self.paths.state_dir / "payload.partial.json"

    def discard_download(self) -> None:
        for path in self.paths.state_dir.glob("payload*"):
            with contextlib.suppress(OSError):
                path.unlink()

    def download(self, offer: Offer) -> Path:
        """Fetch the payload into the state directory, resuming a partial file of the same payload."""
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        meta = {"url": offer.url, "sha256": offer.sha256_b64, "size": offer.size}
        try:
            previous = json.loads(self._partial_meta.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != meta:
            self.discard_download()
        write_atomically(self._partial_meta, json.dumps(meta) + "\n", 0o600)
        have = self._partial.stat().st_size if self._partial.exists() else 0
        if have > offer.size:
            self._partial.unlink()
            have = 0
        if have < offer.size:
            self.status.set(CURRENT_OP=STATUS_DOWNLOADING)
            try:
                self._fetch(offer, have)
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have:
                    log.warning("the server refused to resume at byte %d; starting over", have)
                    self._partial.unlink()
                    self._fetch(offer, 0)
                else:
                    raise UpdateFailure(
                        ERROR_DOWNLOAD_TRANSFER, f"downloading {offer.url} failed: {exc}"
                    ) from exc
        got = self._partial.stat().st_size
        if got != offer.size:
            raise UpdateFailure(
                ERROR_PAYLOAD_SIZE_MISMATCH,
                f"the payload has {got} bytes, the update offer said {offer.size}",
            )
        return self._partial

    def _fetch(self, offer: Offer, have: int) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        if have:
            log.info("resuming the download of %s at byte %d", offer.name, have)
        request = urllib.request.Request(offer.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                if have and answer.status == 200:
                    log.warning(
                        "the server ignored the range request; downloading %s from the start", offer.name
                    )
                    have = 0
                elif have and answer.status == 206:
                    content_range = answer.headers.get("Content-Range", "")
                    if not content_range.startswith(f"bytes {have}-"):
                        raise UpdateFailure(
                            ERROR_DOWNLOAD_TRANSFER,
                            f"the server resumed at the wrong place: {content_range!r}",
                        )
                length = answer.headers.get("Content-Length")
                if length is not None and length.isdigit() and have + int(length) > offer.size:
                    raise UpdateFailure(
                        ERROR_PAYLOAD_SIZE_MISMATCH,
                        f"the server sends {have + int(length)} bytes, the update offer said {offer.size}",
                    )
                with SparseWriter(self._partial, have) as out:
                    last_note = 0.0
                    while chunk := answer.read(CHUNK):
                        if out.position + len(chunk) > offer.size:
                            raise UpdateFailure(
                                ERROR_PAYLOAD_SIZE_MISMATCH,
                                f"the payload is larger than the {offer.size} bytes offered",
                            )
                        out.write(chunk)
                        if time.monotonic() - last_note > 2 or out.position == offer.size:
                            last_note = time.monotonic()
                            self.status.set(PROGRESS=f"{out.position / offer.size:.4f}")
                    done = out.position
                if length is not None and length.isdigit() and done < have + int(length):
                    raise http.client.IncompleteRead(b"", have + int(length) - done)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise UpdateFailure(
                ERROR_DOWNLOAD_TRANSFER, f"downloading {offer.url} broke off: {exc}", keep_download=True
            ) from exc

    def verify(self, config: AgentConfig, offer: Offer, payload: Path) -> None:
        """Size, SHA-1, SHA-256 and signature, before anything is written to a slot."""
        sha1 = hashlib.sha1()
        sha256 = hashlib.sha256()
        with payload.open("rb") as data:
            while chunk := data.read(CHUNK):
                sha1.update(chunk)
                sha256.update(chunk)
        got256 = base64.b64encode(sha256.digest()).decode()
        if got256 != offer.sha256_b64:
            raise UpdateFailure(
                ERROR_PAYLOAD_HASH_MISMATCH,
                f"the payload's SHA-256 is {got256}, the update offer said {offer.sha256_b64}",
            )
        got1 = base64.b64encode(sha1.digest()).decode()
        if offer.sha1_b64 and got1 != offer.sha1_b64:
            raise UpdateFailure(
                ERROR_PAYLOAD_HASH_MISMATCH,
                f"the payload's SHA-1 is {got1}, the update offer said {offer.sha1_b64}",
            )
        self.verify_signature(config, offer, payload)

    def verify_signature(self, config: AgentConfig, offer: Offer, payload: Path) -> None:
        key = config.signing_key
        if key is None:
            log.warning("SIGNING_KEY=none: the payload's signature is not checked")
            return
        if not key.is_file():
            raise UpdateFailure(
                ERROR_PAYLOAD_VERIFICATION,
                f"no signing key at {key}, so the payload cannot be verified "
                "(ship it in /usr/share/railyard/update-signing.pub or name one with SIGNING_KEY=)",
            )
        if offer.signature_url is None:
            raise UpdateFailure(
                ERROR_PAYLOAD_VERIFICATION, "the update offer names no signature, and one is required"
            )
        try:
            with urllib.request.urlopen(offer.signature_url, timeout=HTTP_TIMEOUT) as answer:
                signature: bytes = answer.read(MAX_SIGNATURE_BYTES + 1)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise UpdateFailure(
                ERROR_DOWNLOAD_TRANSFER, f"cannot fetch the signature {offer.signature_url}: {exc}"
            ) from exc
        if len(signature) > MAX_SIGNATURE_BYTES:
            raise UpdateFailure(ERROR_PAYLOAD_VERIFICATION, "the payload signature is implausibly large")
        sig_path = self.paths.state_dir / "payload.sig"
        signers = self.paths.state_dir / "payload.allowed_signers"
        sig_path.write_bytes(signature)
        signers.write_text(allowed_signers(key.read_text()))
        with payload.open("rb") as data:
            result = subprocess.run(
                [
                    self.paths.ssh_keygen,
                    "-Y",
                    "verify",
                    "-f",
                    str(signers),
                    "-I",
                    SIGNER_IDENTITY,
                    "-n",
                    SIGNING_NAMESPACE,
                    "-s",
                    str(sig_path),
                ],
                stdin=data,
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise UpdateFailure(
                ERROR_PAYLOAD_VERIFICATION,
                f"the payload signature does not verify with {key}: {(result.stderr or result.stdout).strip()}",
            )
        log.info("payload signature good: %s", result.stdout.strip() or result.stderr.strip())

    def install(self, payload: Path) -> None:
        image = self.unpack(payload)
        log.info("installing %s with %s", image, " ".join(self.paths.slot_tool))
        result = subprocess.run(
            [*self.paths.slot_tool, "install", str(image)], capture_output=True, text=True, check=False
        )
        if result.stdout.strip():
            log.info("%s", result.stdout.strip())
        if result.returncode != 0:
            raise UpdateFailure(ERROR_INSTALL, f"railyard-slot install failed: {result.stderr.strip()}")

    def unpack(self, payload: Path) -> Path:
        """The slot image in a verified payload: the payload itself, or its gzip/xz/zstd contents."""
        with payload.open("rb") as data:
            magic = data.read(6)
        target = self.paths.state_dir / "payload.img"
        try:
            if magic[:2] == b"\x1f\x8b" or magic == b"\xfd7zXZ\x00":
                opener = gzip.open if magic[:2] == b"\x1f\x8b" else lzma.open
                with opener(payload, "rb") as src, SparseWriter(target, 0) as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
            elif magic[:4] == b"\x28\xb5\x2f\xfd":
                subprocess.run(["zstd", "-q", "-d", "-f", "-o", str(target), str(payload)], check=True)
            else:
                return payload
        except (OSError, EOFError, lzma.LZMAError, subprocess.CalledProcessError) as exc:
            raise UpdateFailure(ERROR_INSTALL, f"cannot unpack the payload: {exc}") from exc
        payload.unlink()
        return target

    # ---- the service loop

    def run(self) -> int:
        """Serve until SIGTERM: check every INTERVAL seconds, and at once on SIGUSR1."""
        wanted = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.paths.pid_file, f"{os.getpid()}\n")
        who = self.identity()
        config = self.config()
        applied = self.applied_version(who)
        self.status.set(
            CURRENT_OP=STATUS_DISABLED if config.disabled else STATUS_NEED_REBOOT if applied else STATUS_IDLE,
            CURRENT_VERSION=who.version,
            SERVER=config.server,
            GROUP=config.group,
        )
        log.info(
            "update agent started: %s on %s, server %s, every %.0f s",
            who.version,
            config.group,
            config.server,
            config.interval,
        )
        next_check = time.monotonic() + config.interval
        retries = 0
        try:
            while True:
                config = self.config()
                if self.status.values.get("CURRENT_OP") in (STATUS_DISABLED, STATUS_IDLE):
                    self.status.set(CURRENT_OP=STATUS_DISABLED if config.disabled else STATUS_IDLE)
                unfinished = False
                try:
                    unfinished = self.reconcile(config)
                except Exception:
                    log.exception("settling the previous boot failed")
                    unfinished = True
                retries = retries + 1 if unfinished else 0
                timeout = max(0.0, next_check - time.monotonic())
                if unfinished:
                    timeout = min(timeout, RETRY_DELAYS[min(retries, len(RETRY_DELAYS)) - 1])
                info = signal.sigtimedwait(wanted, timeout)
                if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    log.info("stopping")
                    return 0
                if info is not None and info.si_signo == signal.SIGHUP:
                    continue
                interactive = info is not None and info.si_signo == signal.SIGUSR1
                if interactive or time.monotonic() >= next_check:
                    try:
                        self.check(interactive=interactive)
                    except Exception as exc:
                        log.exception("update cycle crashed")
                        self.status.set(
                            CURRENT_OP=STATUS_IDLE,
                            LAST_ERROR=f"internal error: {exc}",
                            LAST_ERROR_CODE=ERROR_GENERIC,
                        )
                    next_check = time.monotonic() + self.config().interval
        finally:
            with contextlib.suppress(OSError):
                self.paths.pid_file.unlink()


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


def allowed_signers(key_text: str) -> str:
    """An allowed_signers file from the shipped key: kept as is, or built from a bare public key line."""
    lines: list[str] = []
    for raw in key_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
            line = f'{SIGNER_IDENTITY} namespaces="{SIGNING_NAMESPACE}" {line}'
        lines.append(line)
    return "\n".join(lines) + "\n"


# -- the client side (railyard-update) --------------------------------------------------------------


def agent_pid(paths: AgentPaths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def wait_for_cycle(paths: AgentPaths, since: float, timeout: float) -> dict[str, str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            values = parse_key_values(paths.status_file.read_text())
            try:
                start = float(values.get("LAST_CYCLE_START") or 0)
                end = float(values.get("LAST_CYCLE_END") or 0)
            except ValueError:
                start = end = 0.0
            if start >= since and end >= start:
                return values
        time.sleep(0.5)
    return None


def cmd_status(paths: AgentPaths) -> int:
    try:
        sys.stdout.write(paths.status_file.read_text())
    except OSError:
        print(
            f"railyard-update: no status at {paths.status_file}: is railyard-update-agent.service running?",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_check_now(paths: AgentPaths, wait: bool, timeout: float) -> int:
    pid = agent_pid(paths)
    if pid is None:
        print(
            "railyard-update: the update agent is not running (start railyard-update-agent.service)",
            file=sys.stderr,
        )
        return 1
    since = time.time()
    try:
        os.kill(pid, signal.SIGUSR1)
    except PermissionError:
        print("railyard-update: check-now needs root (run it with sudo)", file=sys.stderr)
        return 1
    if not wait:
        return 0
    values = wait_for_cycle(paths, since, timeout)
    if values is None:
        print(f"railyard-update: no update cycle finished within {timeout:.0f} s", file=sys.stderr)
        return 1
    sys.stdout.write("".join(f"{k}={v}\n" for k, v in values.items()))
    return 1 if values.get("LAST_ERROR") else 0


def cmd_rollback(paths: AgentPaths) -> int:
    """Boot the other slot from the next boot on; scheduled checks then leave the version left behind
    alone (a check-now installs it again)."""
    result = subprocess.run([*paths.slot_tool, "rollback"], check=False)
    if result.returncode == 0:
        agent = Agent(paths)
        state = agent.load_state()
        version = agent.identity().version
        if version not in state.setdefault("skip_versions", []):
            state["skip_versions"].append(version)
        try:
            agent.save_state(state)
        except OSError as exc:
            print(
                f"railyard-update: cannot record the rollback in {paths.state_file}: {exc}", file=sys.stderr
            )
    return result.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="railyard-update", description="Railyard OS update agent and client."
    )
    parser.add_argument("--state-dir", type=Path, default=AgentPaths.state_dir)
    parser.add_argument("--run-dir", type=Path, default=AgentPaths.run_dir)
    parser.add_argument("--config", type=Path, action="append", help="config file (repeat; later ones win)")
    parser.add_argument("--slot-tool", default=None, help="the slot tool command (default railyard-slot)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the agent (the service does this)")
    once = commands.add_parser("once", help="run one update cycle in the foreground")
    once.add_argument(
        "--scheduled", action="store_true", help="behave as a scheduled, not a requested, check"
    )
    commands.add_parser("status", help="print the agent's status (key=value)")
    check = commands.add_parser("check-now", help="ask the running agent to check for an update at once")
    check.add_argument("--wait", action="store_true", help="wait for the cycle to end and print the status")
    check.add_argument("--timeout", type=float, default=1800.0)
    commands.add_parser("rollback", help="make the other slot the default from the next boot on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    base = AgentPaths()
    paths = AgentPaths(
        config_files=tuple(args.config) if args.config else base.config_files,
        state_dir=args.state_dir,
        run_dir=args.run_dir,
        slot_tool=tuple(args.slot_tool.split()) if args.slot_tool else base.slot_tool,
    )
    if args.command == "run":
        return Agent(paths).run()
    if args.command == "once":
        outcome = Agent(paths).check(interactive=not args.scheduled)
        print(outcome)
        return 0 if outcome in ("noupdate", "updated", "need-reboot", "disabled", "waiting") else 1
    if args.command == "status":
        return cmd_status(paths)
    if args.command == "check-now":
        return cmd_check_now(paths, args.wait, args.timeout)
    if args.command == "rollback":
        return cmd_rollback(paths)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
