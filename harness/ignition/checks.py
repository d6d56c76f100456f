"""Semantic checks of an Ignition 3.x config that a JSON Schema cannot express.

Each check returns messages of the form ``"$.json.path: what is wrong; how to fix it"``. The
config is assumed to have passed the schema of :mod:`harness.ignition.schema`.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from harness.ignition.dataurl import DataURLError, decode_resource
from harness.ignition.versions import spec_level

__all__ = ["UNIT_SUFFIXES", "Problems", "json_path", "semantic_checks"]

log = logging.getLogger(__name__)

Problems = list[str]
JPath = Sequence[str | int]

#: Unit types systemd knows (systemd.unit(5)); Ignition refuses other suffixes.
UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".snapshot",
    ".slice",
    ".scope",
)
_SCHEMES = ("http", "https", "tftp", "s3", "gs", "arn", "data")
_UNIT_NAME_RE = re.compile(r"[A-Za-z0-9:_.\\@-]+")


def json_path(path: Iterable[str | int]) -> str:
    """``("storage", "files", 0, "path")`` -> ``"$.storage.files[0].path"``."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _items(data: Mapping[str, Any], *path: str) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    node: Any = data
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    for i, item in enumerate(node or []):
        if isinstance(item, dict):
            yield (*path, i), item


def _check_abs_path(value: Any, where: JPath, what: str) -> Problems:
    if not isinstance(value, str):
        return []
    if not value.startswith("/"):
        return [f"{json_path(where)}: {what} {value!r} is not absolute; start it with '/'"]
    clean = posixpath.normpath(value)
    if clean.startswith("//"):
        clean = clean[1:]
    if clean != value:
        return [
            f"{json_path(where)}: {what} {value!r} is not normalized; write {clean!r} "
            "(no '.', '..', '//' or trailing '/')"
        ]
    return []


def _duplicates(entries: Iterable[tuple[JPath, Any]], what: str) -> Problems:
    seen: dict[Any, JPath] = {}
    problems = []
    for where, key in entries:
        if key is None:
            continue
        if key in seen:
            problems.append(
                f"{json_path(where)}: duplicate {what} {key!r} (also at {json_path(seen[key])}); "
                "each must be unique: remove one or combine them"
            )
        else:
            seen[key] = where
    return problems


def _resources(data: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    ign = data.get("ignition") or {}
    for where, res in _items(data, "ignition", "config", "merge"):
        yield where, res
    replace = (ign.get("config") or {}).get("replace")
    if isinstance(replace, dict) and replace.get("source") is not None:
        yield ("ignition", "config", "replace"), replace
    yield from _items(data, "ignition", "security", "tls", "certificateAuthorities")
    for where, entry in _items(data, "storage", "files"):
        if isinstance(entry.get("contents"), dict):
            yield (*where, "contents"), entry["contents"]
        for i, res in enumerate(entry.get("append") or []):
            if isinstance(res, dict):
                yield (*where, "append", i), res
    for where, entry in _items(data, "storage", "luks"):
        if isinstance(entry.get("keyFile"), dict):
            yield (*where, "keyFile"), entry["keyFile"]


def _check_resource(where: tuple[str | int, ...], res: Mapping[str, Any], level: tuple[int, ...]) -> Problems:
    source = res.get("source")
    if source is None:
        if res.get("httpHeaders") or res.get("verification") or res.get("compression"):
            return [f"{json_path(where)}: has options but no 'source'; add the source URL"]
        return []
    src = json_path((*where, "source"))
    scheme = urllib.parse.urlsplit(source).scheme if ":" in source else ""
    if scheme not in _SCHEMES:
        return [
            f"{src}: URL scheme {scheme or '(none)'!r} is not supported; use one of {', '.join(_SCHEMES)}"
        ]
    problems = []
    if scheme == "arn" and level < (3, 4, 0):
        problems.append(f"{src}: 'arn:' URLs need spec 3.4.0 or later; use an s3:// URL or raise the version")
    if res.get("httpHeaders") and scheme not in ("http", "https"):
        problems.append(
            f"{json_path((*where, 'httpHeaders'))}: HTTP headers need an http(s) source, not {scheme}"
        )
    hash_spec = (res.get("verification") or {}).get("hash")
    if isinstance(hash_spec, str) and hash_spec.startswith("sha256-") and level < (3, 1, 0):
        problems.append(f"{json_path((*where, 'verification', 'hash'))}: sha256 needs spec 3.1.0; use sha512")
    if scheme == "data":
        try:
            contents = decode_resource(res)
        except DataURLError as exc:
            problems.append(f"{src}: {exc}")
        else:
            if isinstance(hash_spec, str) and "-" in hash_spec:
                algo, _, want = hash_spec.partition("-")
                got = hashlib.new(algo, contents).hexdigest()
                if got != want.lower():
                    problems.append(
                        f"{json_path((*where, 'verification', 'hash'))}: does not match the data URL's "
                        f"contents ({algo}-{got}); fix or remove the hash"
                    )
    return problems


def _check_unit_contents(where: JPath, text: str) -> Problems:
    """A light syntax check: after a [Section], every line is blank, a comment or Key=Value."""
    in_section = False
    continued = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if continued:
            continued = line.endswith("\\")
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            in_section = True
            continue
        if in_section and "=" not in line:
            return [
                f"{json_path(where)}: line {lineno} {line[:40]!r} is not 'Key=Value', a [Section] or a "
                "comment; systemd would not parse it"
            ]
        continued = line.endswith("\\")
    return []


def _storage_checks(data: Mapping[str, Any], level: tuple[int, ...], version: str) -> Problems:
    problems: Problems = []
    nodes: list[tuple[JPath, Any]] = []
    links: dict[str, JPath] = {}
    for kind in ("files", "directories", "links"):
        for where, entry in _items(data, "storage", kind):
            path = entry.get("path")
            problems += _check_abs_path(path, (*where, "path"), f"{kind[:-1].replace('ie', 'y')} path")
            nodes.append(((*where, "path"), path))
            mode = entry.get("mode")
            if isinstance(mode, int) and mode > 0o777 and level < (3, 4, 0):
                log.warning(
                    "%s: setuid/setgid/sticky bits in mode %o are ignored before spec 3.4.0 (this is %s)",
                    json_path((*where, "mode")),
                    mode,
                    version,
                )
            for owner in ("user", "group"):
                spec = entry.get(owner) or {}
                if spec.get("id") is not None and spec.get("name") is not None:
                    problems.append(f"{json_path((*where, owner))}: set either 'id' or 'name', not both")
            if kind == "files" and entry.get("overwrite") and not (entry.get("contents") or {}).get("source"):
                problems.append(
                    f"{json_path((*where, 'overwrite'))}: overwrite is true but contents.source is not set; "
                    "add contents (e.g. 'data:,' for an empty file) or set overwrite false"
                )
            if kind == "links" and isinstance(path, str):
                links[path] = where
                if entry.get("hard"):
                    problems += _check_abs_path(entry.get("target"), (*where, "target"), "hard link target")
    problems += _duplicates(nodes, "path among files, directories and links")
    for node_where, path in nodes:
        if not isinstance(path, str):
            continue
        for parent in _ancestors(path):
            if parent in links:
                problems.append(
                    f"{json_path(node_where)}: {path!r} is below the link {parent!r} "
                    f"({json_path(links[parent])}); Ignition refuses paths through links in the config"
                )
    for where, disk in _items(data, "storage", "disks"):
        problems += _check_abs_path(disk.get("device"), (*where, "device"), "device")
        parts = list(_items(disk, "partitions"))
        problems += _duplicates(
            [((*where, *w, "number"), p.get("number")) for w, p in parts if p.get("number")],
            "partition number",
        )
        problems += _duplicates(
            [((*where, *w, "label"), p.get("label")) for w, p in parts if not p.get("number")],
            "partition label (of partitions without a number)",
        )
    problems += _duplicates(
        [((*w, "device"), d.get("device")) for w, d in _items(data, "storage", "disks")], "disk device"
    )
    for where, fs in _items(data, "storage", "filesystems"):
        problems += _check_abs_path(fs.get("device"), (*where, "device"), "device")
        problems += _check_abs_path(fs.get("path"), (*where, "path"), "mount path")
    problems += _duplicates(
        [((*w, "device"), f.get("device")) for w, f in _items(data, "storage", "filesystems")],
        "filesystem device",
    )
    for section in ("raid", "luks"):
        problems += _duplicates(
            [((*w, "name"), e.get("name")) for w, e in _items(data, "storage", section)], f"{section} name"
        )
    return problems


def _ancestors(path: str) -> Iterator[str]:
    while True:
        path = posixpath.dirname(path)
        if path in ("/", ""):
            return
        yield path


def _systemd_checks(data: Mapping[str, Any]) -> Problems:
    problems: Problems = []
    units = list(_items(data, "systemd", "units"))
    problems += _duplicates([((*w, "name"), u.get("name")) for w, u in units], "unit name")
    for where, unit in units:
        name = unit.get("name")
        if isinstance(name, str) and (not name.endswith(UNIT_SUFFIXES) or not _UNIT_NAME_RE.fullmatch(name)):
            problems.append(
                f"{json_path((*where, 'name'))}: {name!r} is not a unit name with a valid type suffix "
                f"({', '.join(UNIT_SUFFIXES)}), e.g. 'hello.service'"
            )
        if isinstance(unit.get("contents"), str):
            problems += _check_unit_contents((*where, "contents"), unit["contents"])
        dropins = list(_items(unit, "dropins"))
        problems += _duplicates([((*where, *w, "name"), d.get("name")) for w, d in dropins], "drop-in name")
        for w, dropin in dropins:
            dname = dropin.get("name")
            if isinstance(dname, str) and (not dname.endswith(".conf") or "/" in dname or dname == ".conf"):
                problems.append(
                    f"{json_path((*where, *w, 'name'))}: drop-in name {dname!r} must be a file name ending "
                    "in '.conf', e.g. '10-override.conf'"
                )
            if isinstance(dropin.get("contents"), str):
                problems += _check_unit_contents((*where, *w, "contents"), dropin["contents"])
    return problems


def _passwd_checks(data: Mapping[str, Any]) -> Problems:
    problems: Problems = []
    users = list(_items(data, "passwd", "users"))
    problems += _duplicates([((*w, "name"), u.get("name")) for w, u in users], "user name")
    problems += _duplicates(
        [((*w, "name"), g.get("name")) for w, g in _items(data, "passwd", "groups")], "group name"
    )
    for where, user in users:
        keys = user.get("sshAuthorizedKeys") or []
        problems += _duplicates(
            [((*where, "sshAuthorizedKeys", i), k) for i, k in enumerate(keys)], "SSH authorized key"
        )
        if user.get("homeDir") is not None:
            problems += _check_abs_path(user["homeDir"], (*where, "homeDir"), "home directory")
    return problems


def semantic_checks(data: Mapping[str, Any], version: str) -> Problems:
    """All checks beyond the schema; an empty list means the config is fine."""
    level = spec_level(version)
    problems: Problems = []
    for where, res in _resources(data):
        problems += _check_resource(where, res, level)
    problems += _duplicates(
        [((*w, "source"), r.get("source")) for w, r in _items(data, "ignition", "config", "merge")],
        "merged config source",
    )
    problems += _storage_checks(data, level, version)
    problems += _systemd_checks(data)
    problems += _passwd_checks(data)
    return problems
