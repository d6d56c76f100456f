"""The agent: one update cycle (check, download, verify, install, report), the reports that settle what
the last boot left behind (the update booted, or rolled back), and the service loop."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .config import HTTP_TIMEOUT, AgentConfig, AgentPaths, log, parse_key_values, read_config, read_first_line
from .payload import Installer
from .protocol import (
    ERROR_GENERIC,
    ERROR_ROLLBACK,
    EVENT_DOWNLOAD_FINISHED,
    EVENT_DOWNLOAD_STARTED,
    EVENT_UPDATE_COMPLETE,
    RESULT_ERROR,
    RESULT_SUCCESS,
    RESULT_SUCCESS_REBOOT,
    CheckFailure,
    Identity,
    Report,
    UpdateFailure,
    build_request,
    parse_update_response,
)
from .status import (
    STATUS_AVAILABLE,
    STATUS_CHECKING,
    STATUS_DISABLED,
    STATUS_FINALIZING,
    STATUS_IDLE,
    STATUS_NEED_REBOOT,
    STATUS_REPORTING_ERROR,
    STATUS_VERIFYING,
    StatusFile,
    write_atomically,
)

RETRY_DELAYS = (5.0, 10.0, 20.0, 30.0)
REBOOT_RETRY = 60.0  # after a reboot request that failed


class Agent:
    """One machine's update agent. `check()` is one cycle; `run()` loops and waits for signals."""

    def __init__(self, paths: AgentPaths | None = None) -> None:
        self.paths = paths or AgentPaths()
        self.status = StatusFile(self.paths.status_file)
        self.installer = Installer(self.paths, self.status)
        self._report_failures = 0
        self._reboot_note = ""

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
            payload = self.installer.download(offer)
            self.status.set(CURRENT_OP=STATUS_VERIFYING)
            self.installer.verify(config, offer, payload)
            self.send_report(config, who, Report(EVENT_DOWNLOAD_FINISHED, RESULT_SUCCESS))
            self.status.set(CURRENT_OP=STATUS_FINALIZING)
            self.installer.install(payload)
        except UpdateFailure as exc:
            log.error("update to %s failed (error %d): %s", offer.version, exc.code, exc)
            if not exc.keep_download:
                self.installer.discard_download()
            self.status.set(CURRENT_OP=STATUS_REPORTING_ERROR, LAST_ERROR=str(exc), LAST_ERROR_CODE=exc.code)
            self.send_report(config, who, Report(EVENT_UPDATE_COMPLETE, RESULT_ERROR, exc.code))
            self.status.set(CURRENT_OP=STATUS_IDLE)
            return "failed"
        self.installer.discard_download()
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

    # ---- rebooting into an installed update (the service only; `once` never reboots)

    def reboot_wait(self, config: AgentConfig, who: Identity) -> float | None:
        """Seconds until the update installed in this boot reboots the machine (0: now); None when nothing
        is installed or the reboot strategy leaves it to the administrator."""
        version = self.applied_version(who)
        if version is None:
            return None
        now = datetime.now().astimezone()
        when = config.reboot.reboot_at(now)
        self.status.set(
            REBOOT_STRATEGY=str(config.reboot), NEXT_REBOOT="" if when is None else int(when.timestamp())
        )
        if when is None:
            note = f"{version} is installed; reboot strategy {config.reboot}: not rebooting by itself"
        elif when > now:
            note = f"{version} is installed; reboot strategy {config.reboot}: rebooting at {when.isoformat()}"
        else:
            note = ""
        if note and note != self._reboot_note:
            log.info("%s", note)
        self._reboot_note = note
        return None if when is None else max(0.0, (when - now).total_seconds())

    def reboot(self, config: AgentConfig) -> bool:
        """Ask for the reboot into the installed update; False if the request failed."""
        log.info("rebooting into the installed update (reboot strategy %s)", config.reboot)
        try:
            result = subprocess.run(
                list(self.paths.reboot), capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("the reboot request failed: %s", exc)
            return False
        if result.returncode != 0:
            log.error("the reboot request failed: %s", result.stderr.strip())
            return False
        return True

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
        rebooting = False
        try:
            while True:
                config = self.config()
                self.status.set(REBOOT_STRATEGY=str(config.reboot))
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
                reboot_in = self.reboot_wait(config, who)
                if reboot_in == 0.0 and not rebooting:
                    rebooting = self.reboot(config)
                    if not rebooting:
                        timeout = min(timeout, REBOOT_RETRY)
                elif reboot_in is not None and reboot_in > 0.0:
                    timeout = min(timeout, reboot_in)
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
