"""A small typed builder of Ignition 3.x configs.

>>> cfg = (IgnitionConfig()
...        .add_user("core", ssh_keys=["ssh-ed25519 AAAA... me"])
...        .add_file("/etc/motd", "hello\\n", mode=0o644)
...        .add_unit("hello.service", "[Service]\\nExecStart=/bin/true\\n", enabled=False))
>>> cfg.to_json()  # doctest: +SKIP

The builder holds the config as a plain dict (``to_dict()`` returns a copy), so a config read
with ``from_dict()``/``from_json()`` round-trips unchanged.
"""

from __future__ import annotations

import copy
import json
import logging
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from harness.errors import ConfigError
from harness.ignition.checks import UNIT_SUFFIXES
from harness.ignition.dataurl import encode_contents
from harness.ignition.merge import merge as merge_configs
from harness.ignition.versions import DEFAULT_VERSION, check_version

__all__ = ["IgnitionConfig"]

log = logging.getLogger(__name__)

_NODE_KINDS = ("files", "directories", "links")


def _owner(value: str | int | None, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{what} must be a name (str) or a numeric id (int), not {value!r}")
    return {"id": value} if isinstance(value, int) else {"name": value}


def _check_path(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{what} path {path!r} must be absolute (start with '/')")
    if posixpath.normpath(path) != path or path.startswith("//"):
        raise ConfigError(
            f"{what} path {path!r} is not normalized: write it as {posixpath.normpath(path)!r} "
            "(no '..', '.', '//' or trailing '/')"
        )
    return path


def _check_mode(mode: int, what: str) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ConfigError(f"{what} mode {mode!r} must be an int between 0 and 0o7777, e.g. 0o644")
    return mode


class IgnitionConfig:
    """An Ignition config under construction; every ``add_*`` method returns ``self``."""

    def __init__(self, version: str = DEFAULT_VERSION) -> None:
        check_version(version)
        self._data: dict[str, Any] = {"ignition": {"version": version}}

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        version: str = self._data["ignition"]["version"]
        return version

    def _list(self, section: str, name: str) -> list[dict[str, Any]]:
        sec = self._data.setdefault(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"$.{section} must be an object, not {type(sec).__name__}")
        lst = sec.setdefault(name, [])
        if not isinstance(lst, list):
            raise ConfigError(f"$.{section}.{name} must be a list, not {type(lst).__name__}")
        return lst

    def _find_node(self, path: str) -> tuple[str, dict[str, Any]] | None:
        storage = self._data.get("storage") or {}
        for kind in _NODE_KINDS:
            for entry in storage.get(kind) or []:
                if isinstance(entry, dict) and entry.get("path") == path:
                    return kind, entry
        return None

    def _new_node(self, kind: str, path: str) -> dict[str, Any]:
        existing = self._find_node(path)
        if existing is not None:
            raise ConfigError(
                f"{path!r} is already in storage.{existing[0]}; every file, directory and link needs "
                "its own path (to override an entry, build a second config and merge() it)"
            )
        entry: dict[str, Any] = {"path": path}
        self._list("storage", kind).append(entry)
        return entry

    # -- passwd -----------------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        ssh_keys: Iterable[str] = (),
        groups: Iterable[str] = (),
        password_hash: str | None = None,
        shell: str | None = None,
    ) -> IgnitionConfig:
        """Add a user, or extend the user of that name (keys and groups are added, not replaced)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"user name must be a non-empty string, not {name!r}")
        keys = [ssh_keys] if isinstance(ssh_keys, str) else list(ssh_keys)
        group_list = [groups] if isinstance(groups, str) else list(groups)
        for key in keys:
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(f"user {name!r}: SSH keys must be non-empty strings, not {key!r}")
        entry: dict[str, Any] = {"name": name}
        if keys:
            entry["sshAuthorizedKeys"] = [k.strip() for k in keys]
        if group_list:
            entry["groups"] = group_list
        if password_hash is not None:
            entry["passwordHash"] = password_hash
        if shell is not None:
            entry["shell"] = shell
        users = self._list("passwd", "users")
        for i, user in enumerate(users):
            if user.get("name") == name:
                merged = merge_configs({"passwd": {"users": [user]}}, {"passwd": {"users": [entry]}})
                users[i] = merged["passwd"]["users"][0]
                break
        else:
            users.append(entry)
        return self

    # -- storage ----------------------------------------------------------------------------------

    def add_file(
        self,
        path: str,
        contents: str | bytes = "",
        mode: int | None = None,
        overwrite: bool = True,
        user: str | int | None = None,
        group: str | int | None = None,
        append: bool = False,
        *,
        compress: bool | None = None,
    ) -> IgnitionConfig:
        """Write a file with ``contents`` (text: plain data URL; bytes: base64).

        ``mode`` defaults to 0o644 for a written file. ``append=True`` appends ``contents`` to the
        file instead (to an existing entry at ``path`` if this config has one); then ``overwrite``
        is not emitted and ``mode`` is only set when given. ``compress``: None gzips large
        contents when that is smaller, True/False force it.
        """
        _check_path(path, "file")
        if mode is not None:
            _check_mode(mode, f"file {path!r}")
        source, compression = encode_contents(contents, compress=compress)
        resource: dict[str, Any] = {"source": source}
        if compression:
            resource["compression"] = compression
        if append:
            existing = self._find_node(path)
            if existing is not None and existing[0] != "files":
                raise ConfigError(f"cannot append to {path!r}: it is in storage.{existing[0]}, not a file")
            entry = existing[1] if existing is not None else self._new_node("files", path)
            entry.setdefault("append", []).append(resource)
        else:
            entry = self._new_node("files", path)
            entry["overwrite"] = bool(overwrite)
            entry["contents"] = resource
            if mode is None:
                mode = 0o644
        if mode is not None:
            entry["mode"] = mode
        for field, value in (("user", user), ("group", group)):
            owner = _owner(value, f"file {path!r} {field}")
            if owner is not None:
                entry[field] = owner
        return self

    def add_directory(
        self,
        path: str,
        mode: int = 0o755,
        user: str | int | None = None,
        group: str | int | None = None,
    ) -> IgnitionConfig:
        """Create a directory (parents are created as needed by Ignition, owned by root)."""
        _check_path(path, "directory")
        entry = self._new_node("directories", path)
        entry["mode"] = _check_mode(mode, f"directory {path!r}")
        for field, value in (("user", user), ("group", group)):
            owner = _owner(value, f"directory {path!r} {field}")
            if owner is not None:
                entry[field] = owner
        return self

    def add_link(self, path: str, target: str, hard: bool = False, overwrite: bool = True) -> IgnitionConfig:
        """Create a symbolic (or, with ``hard=True``, a hard) link at ``path`` pointing to ``target``."""
        _check_path(path, "link")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"link {path!r} needs a non-empty target, not {target!r}")
        if hard:
            _check_path(target, f"hard link {path!r} target")
        entry = self._new_node("links", path)
        entry["target"] = target
        if hard:
            entry["hard"] = True
        entry["overwrite"] = bool(overwrite)
        return self

    # -- systemd ----------------------------------------------------------------------------------

    def add_unit(
        self,
        name: str,
        contents: str | None = None,
        enabled: bool | None = None,
        mask: bool | None = None,
        dropins: Mapping[str, str] | None = None,
    ) -> IgnitionConfig:
        """Add a systemd unit, or update the unit of that name (dropins of the same name are replaced)."""
        if not isinstance(name, str) or not name.endswith(UNIT_SUFFIXES) or "/" in name:
            raise ConfigError(
                f"unit name {name!r} must be a file name with a unit type ({', '.join(UNIT_SUFFIXES)}), "
                "e.g. 'foo.service'"
            )
        entry: dict[str, Any] = {"name": name}
        if contents is not None:
            entry["contents"] = contents
        if enabled is not None:
            entry["enabled"] = bool(enabled)
        if mask is not None:
            entry["mask"] = bool(mask)
        if dropins:
            for dname in dropins:
                if not dname.endswith(".conf") or "/" in dname:
                    raise ConfigError(
                        f"unit {name!r}: drop-in name {dname!r} must be a file name ending in '.conf'"
                    )
            entry["dropins"] = [{"name": d, "contents": c} for d, c in dropins.items()]
        units = self._list("systemd", "units")
        for i, unit in enumerate(units):
            if unit.get("name") == name:
                merged = merge_configs({"systemd": {"units": [unit]}}, {"systemd": {"units": [entry]}})
                units[i] = merged["systemd"]["units"][0]
                break
        else:
            units.append(entry)
        return self

    # -- whole configs ----------------------------------------------------------------------------

    def merge(self, child: IgnitionConfig | Mapping[str, Any]) -> IgnitionConfig:
        """A new config: this one with ``child`` merged on top (see :func:`harness.ignition.merge`)."""
        other = child.to_dict() if isinstance(child, IgnitionConfig) else child
        return IgnitionConfig.from_dict(merge_configs(self._data, other))

    def validate(self, *, max_version: str | None = None) -> IgnitionConfig:
        """Validate (see :func:`harness.ignition.validate`); return ``self`` or raise ConfigError."""
        from harness.ignition.validate import validate

        validate(self._data, max_version=max_version)
        return self

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def to_json(self, indent: int | None = None) -> str:
        if indent is None:
            return json.dumps(self._data, separators=(",", ":"), ensure_ascii=False)
        return json.dumps(self._data, indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IgnitionConfig:
        """Wrap an existing config dict (copied). Only ``ignition.version`` is checked here."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"an Ignition config must be a JSON object, not {type(data).__name__}")
        ign = data.get("ignition")
        if not isinstance(ign, Mapping) or "version" not in ign:
            raise ConfigError(
                'config has no ignition.version: add {"ignition": {"version": "3.3.0"}} at the top level'
            )
        check_version(ign["version"])
        obj = cls.__new__(cls)
        obj._data = copy.deepcopy(dict(data))
        return obj

    @classmethod
    def from_json(cls, text: str | bytes) -> IgnitionConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"Ignition config is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IgnitionConfig):
            return self._data == other._data
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IgnitionConfig({self.to_json()[:200]})"
