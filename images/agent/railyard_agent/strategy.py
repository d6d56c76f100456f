"""When an installed update reboots the machine, in the spirit of Flatcar's update.conf and locksmith:

    REBOOT_STRATEGY=reboot          reboot as soon as an update is installed (the image's default)
    REBOOT_STRATEGY=off             never reboot; `railyard-update status` says UPDATED_NEED_REBOOT
    REBOOT_WINDOW_START=Thu 04:00   with `reboot`: only inside this window (a day is optional: every day)
    REBOOT_WINDOW_LENGTH=1h30m      how long the window stays open (h, m, s; a bare number is seconds)

Times are the machine's local time. A setting that cannot be read never reboots the machine: the agent logs
why and waits for a reboot by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

STRATEGY_REBOOT = "reboot"
STRATEGY_OFF = "off"
STRATEGIES = (STRATEGY_REBOOT, STRATEGY_OFF)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_CLOCK = re.compile(r"^(?:(?P<day>[A-Za-z]+)\s+)?(?P<hour>\d{1,2}):(?P<minute>\d{2})$")
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


class StrategyError(ValueError):
    """A reboot strategy or window that cannot be read."""


@dataclass(frozen=True)
class Window:
    """A maintenance window: opens at `minute` after local midnight (on `weekday` only, 0 = Monday, or
    every day when None) and stays open for `length`."""

    weekday: int | None
    minute: int
    length: timedelta

    def __str__(self) -> str:
        day = f"{DAYS[self.weekday].capitalize()} " if self.weekday is not None else ""
        return f"{day}{self.minute // 60:02d}:{self.minute % 60:02d} for {int(self.length.total_seconds())} s"

    def next_opening(self, now: datetime) -> datetime:
        """`now` if the window is open at `now`, else when it opens next."""
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        latest_open: datetime | None = None
        for offset in range(-7, 8):
            start = midnight + timedelta(days=offset, minutes=self.minute)
            if self.weekday is not None and start.weekday() != self.weekday:
                continue
            if start <= now < start + self.length:
                return now
            if start > now and (latest_open is None or start < latest_open):
                latest_open = start
        if latest_open is None:  # unreachable: some day of the next week matches
            raise StrategyError(f"the window {self} never opens")
        return latest_open


@dataclass(frozen=True)
class RebootPolicy:
    strategy: str = STRATEGY_REBOOT
    window: Window | None = None
    error: str = ""  # why the settings could not be read (then the agent never reboots)

    def __str__(self) -> str:
        if self.error:
            return f"{STRATEGY_OFF} (unreadable: {self.error})"
        if self.strategy == STRATEGY_REBOOT and self.window is not None:
            return f"{STRATEGY_REBOOT}, window {self.window}"
        return self.strategy

    def reboot_at(self, now: datetime) -> datetime | None:
        """When an update installed by `now` reboots the machine (`now` itself: at once); None: never."""
        if self.error or self.strategy != STRATEGY_REBOOT:
            return None
        return now if self.window is None else self.window.next_opening(now)


def parse_clock(text: str) -> tuple[int | None, int]:
    """`04:00` or `Thu 04:00` (any spelling of the day that starts with its three letters)."""
    match = _CLOCK.match(text.strip())
    if not match:
        raise StrategyError(f"REBOOT_WINDOW_START={text!r} is not '[day] HH:MM'")
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise StrategyError(f"REBOOT_WINDOW_START={text!r} is not a time of day")
    weekday: int | None = None
    if match["day"]:
        day = match["day"].lower()
        if len(day) < 3 or not any(name.startswith(day) for name in FULL_DAYS):
            raise StrategyError(f"REBOOT_WINDOW_START={text!r}: {match['day']!r} is not a day of the week")
        weekday = next(n for n, name in enumerate(FULL_DAYS) if name.startswith(day))
    return weekday, hour * 60 + minute


def parse_duration(text: str) -> timedelta:
    """`1h`, `30m`, `1h30m`, `90s`, or a number of seconds; more than zero and at most a week."""
    value = text.strip().lower()
    seconds: int
    if value.isdigit():
        seconds = int(value)
    else:
        match = _DURATION.match(value)
        if not value or not match:
            raise StrategyError(f"REBOOT_WINDOW_LENGTH={text!r} is not a duration such as 1h30m")
        seconds = int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)
    if not 0 < seconds <= 7 * 86400:
        raise StrategyError(f"REBOOT_WINDOW_LENGTH={text!r} must be more than zero and at most a week")
    return timedelta(seconds=seconds)


def read_policy(values: dict[str, str]) -> RebootPolicy:
    """The policy of update.conf's keys; an unreadable one carries its error instead of raising."""
    strategy = (values.get("REBOOT_STRATEGY") or STRATEGY_REBOOT).strip().lower()
    start = (values.get("REBOOT_WINDOW_START") or "").strip()
    length = (values.get("REBOOT_WINDOW_LENGTH") or "").strip()
    try:
        if strategy not in STRATEGIES:
            raise StrategyError(f"REBOOT_STRATEGY={strategy!r} is none of {', '.join(STRATEGIES)}")
        if bool(start) != bool(length):
            raise StrategyError("REBOOT_WINDOW_START and REBOOT_WINDOW_LENGTH go together")
        window = None
        if start:
            weekday, minute = parse_clock(start)
            window = Window(weekday, minute, parse_duration(length))
    except StrategyError as exc:
        return RebootPolicy(STRATEGY_OFF, None, str(exc))
    return RebootPolicy(strategy, window)
