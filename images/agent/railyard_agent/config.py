"""Where the agent keeps its files, and its configuration (update.conf in /usr, overridden from /etc)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .strategy import RebootPolicy, read_policy

LOGGER_NAME = "railyard-update-agent"
DEFAULT_APP_ID = "{6edd2756-abc2-44b3-ac3e-27af173bc54e}"
DEFAULT_INTERVAL = 3600.0
HTTP_TIMEOUT = 60.0
CHUNK = 1 << 20

log = logging.getLogger(LOGGER_NAME)


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
    reboot: tuple[str, ...] = ("systemctl", "reboot")

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
    reboot: RebootPolicy = field(default_factory=RebootPolicy)  # when an update reboots (the service only)

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
        reboot=read_policy(values),
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
