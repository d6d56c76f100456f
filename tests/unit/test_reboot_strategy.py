"""The update agent's reboot strategy: reading REBOOT_STRATEGY and the window, and when a reboot is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from images.agent.railyard_agent.agent import Agent
from images.agent.railyard_agent.config import AgentPaths, parse_key_values, read_config
from images.agent.railyard_agent.protocol import Identity
from images.agent.railyard_agent.strategy import (
    STRATEGY_OFF,
    STRATEGY_REBOOT,
    StrategyError,
    Window,
    parse_clock,
    parse_duration,
    read_policy,
)

# A Wednesday.
NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("04:00", (None, 240)),
        ("4:05", (None, 245)),
        ("Thu 04:00", (3, 240)),
        ("thursday 23:59", (3, 1439)),
        ("SUN 00:00", (6, 0)),
    ],
)
def test_window_starts(text: str, expected: tuple[int | None, int]) -> None:
    assert parse_clock(text) == expected


@pytest.mark.parametrize("text", ["24:00", "04:60", "Th 04:00", "Thx 04:00", "04", "noon", "Thu"])
def test_bad_window_starts(text: str) -> None:
    with pytest.raises(StrategyError, match="REBOOT_WINDOW_START"):
        parse_clock(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("1h30m", 5400), ("90s", 90), ("600", 600)]
)
def test_window_lengths(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "0h", "1d", "h", "8d", "700000"])
def test_bad_window_lengths(text: str) -> None:
    with pytest.raises(StrategyError, match="REBOOT_WINDOW_LENGTH"):
        parse_duration(text)


def test_a_daily_window_is_open_inside_and_next_opens_tomorrow_once_past() -> None:
    open_now = Window(None, 10 * 60, timedelta(hours=1))
    assert open_now.next_opening(NOW) == NOW
    assert open_now.next_opening(NOW.replace(hour=11)) == NOW.replace(hour=10, minute=0) + timedelta(days=1)
    later = Window(None, 22 * 60, timedelta(minutes=30))
    assert later.next_opening(NOW) == NOW.replace(hour=22, minute=0)


def test_a_weekly_window_opens_on_its_day_and_spans_midnight() -> None:
    thursday = Window(3, 4 * 60, timedelta(hours=1))
    assert thursday.next_opening(NOW) == datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
    # Tuesday 23:30 for 2 h is still open early on Wednesday, and next opens a week later once shut.
    tuesday_night = Window(1, 23 * 60 + 30, timedelta(hours=2))
    early = NOW.replace(hour=1, minute=0)
    assert tuesday_night.next_opening(early) == early
    assert tuesday_night.next_opening(NOW) == datetime(2026, 12, 8, 23, 30, tzinfo=UTC)


def test_policies() -> None:
    assert read_policy({}).reboot_at(NOW) == NOW  # the image's default: reboot at once
    assert read_policy({"REBOOT_STRATEGY": "off"}).reboot_at(NOW) is None
    windowed = read_policy(
        {"REBOOT_STRATEGY": "reboot", "REBOOT_WINDOW_START": "Thu 04:00", "REBOOT_WINDOW_LENGTH": "1h"}
    )
    assert windowed.strategy == STRATEGY_REBOOT
    assert windowed.reboot_at(NOW) == datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
    assert str(windowed) == "reboot, window Thu 04:00 for 3600 s"
    # A window without a strategy of reboot changes nothing.
    off = read_policy(
        {"REBOOT_STRATEGY": "off", "REBOOT_WINDOW_START": "04:00", "REBOOT_WINDOW_LENGTH": "1h"}
    )
    assert off.reboot_at(NOW) is None


@pytest.mark.parametrize(
    "values",
    [
        {"REBOOT_STRATEGY": "etcd-lock"},
        {"REBOOT_WINDOW_START": "04:00"},
        {"REBOOT_WINDOW_LENGTH": "1h"},
        {"REBOOT_WINDOW_START": "04:00", "REBOOT_WINDOW_LENGTH": "forever"},
    ],
)
def test_an_unreadable_policy_never_reboots_and_says_why(values: dict[str, str]) -> None:
    policy = read_policy(values)
    assert policy.strategy == STRATEGY_OFF
    assert policy.error
    assert policy.reboot_at(NOW) is None
    assert str(policy).startswith("off (unreadable: ")


class Machine:
    """An agent whose files live in a directory, with an update installed in the current boot."""

    def __init__(self, root: Path) -> None:
        (root / "etc").mkdir()
        self.conf = root / "etc/update.conf"
        self.rebooted = root / "rebooted"
        self.paths = AgentPaths(
            config_files=(self.conf,),
            state_dir=root / "state",
            run_dir=root / "run",
            reboot=("sh", "-c", f"echo requested >> {self.rebooted}"),
        )
        self.agent = Agent(self.paths)
        self.who = Identity(
            version="1.0.0", machine_id="m", boot_id="boot-1", os_name="railyard", arch="x86_64"
        )

    def configure(self, text: str) -> None:
        self.conf.write_text("SERVER=http://127.0.0.1:9/\n" + text)

    def install(self, boot_id: str = "boot-1") -> None:
        self.paths.run_dir.mkdir(exist_ok=True)
        self.paths.applied_marker.write_text(f"VERSION=1.0.1\nBOOT_ID={boot_id}\n")

    def status(self) -> dict[str, str]:
        return parse_key_values(self.paths.status_file.read_text())


def test_the_agent_reboots_only_with_an_update_installed_in_this_boot(tmp_path: Path) -> None:
    m = Machine(tmp_path)
    m.configure("REBOOT_STRATEGY=reboot\n")
    config = read_config(m.paths.config_files)
    assert m.agent.reboot_wait(config, m.who) is None  # nothing installed
    m.install(boot_id="an-earlier-boot")
    assert m.agent.reboot_wait(config, m.who) is None
    m.install()
    assert m.agent.reboot_wait(config, m.who) == 0.0
    assert m.status()["REBOOT_STRATEGY"] == "reboot"
    assert m.agent.reboot(config)
    assert m.rebooted.read_text() == "requested\n"


def test_off_and_a_closed_window_wait_and_say_so(tmp_path: Path) -> None:
    m = Machine(tmp_path)
    m.install()
    m.configure("REBOOT_STRATEGY=off\n")
    assert m.agent.reboot_wait(read_config(m.paths.config_files), m.who) is None
    assert m.status()["NEXT_REBOOT"] == ""
    assert m.status()["REBOOT_STRATEGY"] == "off"

    opens = (datetime.now().astimezone() + timedelta(hours=3)).replace(second=0, microsecond=0)
    m.configure(f"REBOOT_WINDOW_START={opens:%a %H:%M}\nREBOOT_WINDOW_LENGTH=1h\n")
    wait = m.agent.reboot_wait(read_config(m.paths.config_files), m.who)
    assert wait is not None
    assert 3 * 3600 - 120 < wait <= 3 * 3600
    assert int(m.status()["NEXT_REBOOT"]) == int(opens.timestamp())


def test_a_failed_reboot_request_is_reported(tmp_path: Path) -> None:
    m = Machine(tmp_path)
    agent = Agent(
        AgentPaths(
            config_files=(m.conf,), state_dir=tmp_path / "s", run_dir=tmp_path / "r", reboot=("false",)
        )
    )
    m.configure("")
    assert not agent.reboot(read_config(m.paths.config_files))
