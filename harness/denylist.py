"""Known failures a run leaves out (or only warns about): `--denylist FILE`, the shape of kola-denylist.yaml.

    - pattern: suites/test_network.py::test_dns*      # fnmatch; also matched against the test's kola name
      tracker: https://tracker.example/issues/123       # said in the skip reason
      channels: [alpha]                                 # kola's `streams` is read the same way
      platforms: [qemu]
      arches: [x86_64]
      snooze: 2027-01-15                                # skipped before this date, runs again from it on
      warn: true                                        # runs; a failure is reported, never fails the run

An entry without `snooze` holds until it is removed. A pattern matches a test's node id with and without its
parameters (`suites/test_x.py::test_y[qemu-stable]`, `suites/test_x.py::test_y`), its function name, or the
kola test its docstring names (`kola: cl.basic` in the first line). Patterns are shell globs, as kola's are:
`[` opens a character class (`[[]` is a literal one). Pure logic: the plugin applies it.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from harness.errors import ConfigError

SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["pattern"],
        "properties": {
            "pattern": {"type": "string", "minLength": 1},
            "tracker": {"type": "string"},
            "channels": {"type": "array", "items": {"type": "string"}},
            "streams": {"type": "array", "items": {"type": "string"}},
            "platforms": {"type": "array", "items": {"type": "string"}},
            "arches": {"type": "array", "items": {"type": "string"}},
            "snooze": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
            "warn": {"type": "boolean"},
        },
    },
}


class _Loader(yaml.SafeLoader):
    """YAML as safe_load reads it, but an unquoted date stays text (the schema and parse() check it)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

KOLA_NAME = re.compile(r"kola:\s*([\w.\-]+)")


@dataclass(frozen=True)
class Entry:
    pattern: str
    tracker: str = ""
    channels: frozenset[str] = frozenset()
    platforms: frozenset[str] = frozenset()
    arches: frozenset[str] = frozenset()
    snooze: datetime.date | None = None
    warn: bool = False

    def applies(self, channel: str, platform: str, arch: str) -> bool:
        return all(
            not allowed or value in allowed
            for allowed, value in ((self.channels, channel), (self.platforms, platform), (self.arches, arch))
        )

    def matches(self, names: Iterable[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, self.pattern) for name in names)

    def describe(self) -> str:
        return f"{self.pattern} ({self.tracker or 'no tracker'})"


@dataclass(frozen=True)
class Decision:
    """What the denylist does to one test: skip it (with the reason), or run it warn-only, or nothing."""

    skip: str | None = None
    warn: str | None = None
    entries: tuple[Entry, ...] = field(default_factory=tuple)


def _parse_date(text: str, source: str, where: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {text!r} is not a date (YYYY-MM-DD) {where}") from exc


def parse(text: str, source: str = "denylist") -> list[Entry]:
    """Entries of a denylist's YAML text; one ConfigError naming the file and the entry when it is malformed."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        return []
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    if error is not None:
        path = list(error.absolute_path)
        at = ""
        if path:
            field_name = f", {'/'.join(str(p) for p in path[1:])}" if len(path) > 1 else ""
            at = f" (entry {int(path[0]) + 1}{field_name})"
        raise ConfigError(f"{source}: {error.message}{at}")
    entries = []
    for i, raw in enumerate(data, start=1):
        snooze = raw.get("snooze")
        entries.append(
            Entry(
                pattern=raw["pattern"],
                tracker=raw.get("tracker", ""),
                channels=frozenset(raw.get("channels", [])) | frozenset(raw.get("streams", [])),
                platforms=frozenset(raw.get("platforms", [])),
                arches=frozenset(raw.get("arches", [])),
                snooze=_parse_date(snooze, source, f"(entry {i}, snooze)") if snooze else None,
                warn=bool(raw.get("warn", False)),
            )
        )
    return entries


def load(path: Path) -> list[Entry]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--denylist {path}: {exc.strerror or exc}") from exc
    return parse(text, f"--denylist {path}")


def test_names(nodeid: str, function: str, doc: str | None) -> list[str]:
    """The names a pattern may match for a test (see the module's doc)."""
    names = [nodeid, nodeid.split("[")[0], function]
    first = (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
    names += KOLA_NAME.findall(first)
    return names


def decide(
    entries: Sequence[Entry],
    names: Iterable[str],
    channel: str,
    platform: str,
    arch: str,
    today: datetime.date,
) -> Decision:
    """Skip while an entry that matches is not snoozed past `today`; warn-only where an entry says `warn`.

    As kola does: an entry with a snooze date skips the test before that date; from that date on the test runs
    again (warn-only if the entry says so). An entry without one skips the test, unless it says `warn`.
    """
    names = list(names)
    hits = tuple(e for e in entries if e.applies(channel, platform, arch) and e.matches(names))
    skipping = [
        e for e in hits if (e.snooze is not None and today < e.snooze) or (e.snooze is None and not e.warn)
    ]
    if skipping:
        reasons = []
        for e in skipping:
            until = f" until {e.snooze.isoformat()}" if e.snooze else ""
            reasons.append(f"{e.tracker or e.pattern}{until}")
        return Decision(skip="denylisted: " + "; ".join(reasons), entries=hits)
    warning = [e for e in hits if e.warn]
    if warning:
        return Decision(warn="warn-only: " + "; ".join(e.tracker or e.pattern for e in warning), entries=hits)
    return Decision(entries=hits)
