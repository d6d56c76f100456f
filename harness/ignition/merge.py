"""Merging two Ignition 3.x configs the way Ignition merges ``ignition.config.merge`` children.

The rules (Ignition's operator notes, "Config merging"):

* Objects merge field by field; a field the child sets (not absent, not ``null``) wins, else the
  parent's is kept. Nested objects merge recursively.
* Lists of objects are keyed (files by ``path``, units by ``name``...): a child entry with the key
  of a parent entry is merged into it in place; other child entries are appended.
* ``storage.files``, ``storage.directories`` and ``storage.links`` share one key space: a child
  entry at a path replaces a parent entry of another kind at that path.
  ``kernelArguments.shouldExist``/``shouldNotExist`` share one key space in the same way.
* Lists of strings are keyed by value (appended without duplicates), except command arguments
  (``options``, ``mountOptions``) and ``files[].append``, which are appended as they are.
* An HTTP header in the child without a ``value`` removes the parent's header of that name.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.errors import ConfigError
from harness.ignition.versions import parse_version

__all__ = ["list_key", "merge"]

log = logging.getLogger(__name__)

Path = tuple[str, ...]
KeyFunc = Callable[[Any], str | None]

# Item position in a list is written "*" in these patterns.
_APPEND_LISTS: frozenset[Path] = frozenset(
    {
        ("storage", "files", "*", "append"),
        ("storage", "filesystems", "*", "options"),
        ("storage", "filesystems", "*", "mountOptions"),
        ("storage", "raid", "*", "options"),
        ("storage", "luks", "*", "options"),
        ("storage", "luks", "*", "openOptions"),
    }
)

# Lists of objects that share one key space with their siblings in the same parent object.
_SHARED: dict[Path, tuple[str, ...]] = {
    ("storage",): ("files", "directories", "links"),
    ("kernelArguments",): ("shouldExist", "shouldNotExist"),
}


def _field(name: str) -> KeyFunc:
    def key(item: Any) -> str | None:
        if isinstance(item, Mapping):
            value = item.get(name)
            return None if value is None else f"{name}:{value}"
        return None

    return key


def _partition_key(item: Any) -> str | None:
    if not isinstance(item, Mapping):
        return None
    if item.get("number"):
        return f"number:{item['number']}"
    if item.get("label") is not None:
        return f"label:{item['label']}"
    return None


def _value_key(item: Any) -> str | None:
    if isinstance(item, str | int | float | bool):
        return f"value:{item!r}"
    return None


_KEYS: dict[Path, KeyFunc] = {
    ("ignition", "config", "merge"): _field("source"),
    ("ignition", "security", "tls", "certificateAuthorities"): _field("source"),
    ("storage", "disks"): _field("device"),
    ("storage", "disks", "*", "partitions"): _partition_key,
    ("storage", "raid"): _field("name"),
    ("storage", "filesystems"): _field("device"),
    ("storage", "files"): _field("path"),
    ("storage", "directories"): _field("path"),
    ("storage", "links"): _field("path"),
    ("storage", "luks"): _field("name"),
    ("storage", "luks", "*", "clevis", "tang"): _field("url"),
    ("systemd", "units"): _field("name"),
    ("systemd", "units", "*", "dropins"): _field("name"),
    ("passwd", "users"): _field("name"),
    ("passwd", "groups"): _field("name"),
}


def list_key(path: Sequence[str]) -> KeyFunc | None:
    """The key function of the list at ``path`` (``"*"`` for list positions), or None if appended."""
    path = tuple(path)
    if path in _APPEND_LISTS:
        return None
    if path in _KEYS:
        return _KEYS[path]
    if path and path[-1] == "httpHeaders":
        return _field("name")
    return _value_key


def _higher_version(parent: Any, child: Any) -> Any:
    if not isinstance(parent, str):
        return child
    if not isinstance(child, str):
        return parent
    try:
        return child if parse_version(child) >= parse_version(parent) else parent
    except ConfigError:
        return child


def _version_of(cfg: Mapping[str, Any]) -> Any:
    ign = cfg.get("ignition")
    return ign.get("version") if isinstance(ign, Mapping) else None


def merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``child`` into ``parent`` as Ignition merges a child config; neither input is changed.

    The result's ``ignition.version`` is the higher of the two (the child's when they are equal);
    ``ignition.config`` of both is merged like any other field.
    """
    for name, cfg in (("parent", parent), ("child", child)):
        if not isinstance(cfg, Mapping):
            raise ConfigError(
                f"merge: the {name} config must be a JSON object (a dict), not {type(cfg).__name__}"
            )
    result = _merge_obj(parent, child, ())
    p_ver = _version_of(parent)
    c_ver = _version_of(child)
    version = _higher_version(p_ver, c_ver)
    if version is not None:
        ign = result.setdefault("ignition", {})
        if isinstance(ign, dict):
            ign["version"] = version
    return result


def _merge_value(parent: Any, child: Any, path: Path) -> Any:
    if child is None:
        return copy.deepcopy(parent)
    if isinstance(parent, Mapping) and isinstance(child, Mapping):
        return _merge_obj(parent, child, path)
    if isinstance(parent, list) and isinstance(child, list):
        return _merge_list(parent, child, path)
    return copy.deepcopy(child)


def _merge_obj(parent: Mapping[str, Any], child: Mapping[str, Any], path: Path) -> dict[str, Any]:
    shared = _SHARED.get(path, ())
    out: dict[str, Any] = {}
    for key in list(parent) + [k for k in child if k not in parent]:
        if key in shared:
            continue
        if key in child:
            out[key] = _merge_value(parent.get(key), child[key], (*path, key))
        else:
            out[key] = copy.deepcopy(parent[key])
    if shared:
        out.update(_merge_shared(parent, child, path, shared))
    return out


def _merge_list(parent: list[Any], child: list[Any], path: Path) -> list[Any]:
    keyfunc = list_key(path)
    if keyfunc is None:
        return copy.deepcopy(parent) + copy.deepcopy(child)
    name = path[-1]
    merged = _merge_keyed({name: parent}, {name: child}, path[:-1], {name: keyfunc})
    result: list[Any] = merged[name]
    return result


def _merge_shared(
    parent: Mapping[str, Any], child: Mapping[str, Any], path: Path, names: tuple[str, ...]
) -> dict[str, Any]:
    keyfuncs: dict[str, KeyFunc] = {}
    for name in names:
        keyfunc = list_key((*path, name))
        assert keyfunc is not None, f"{path}/{name} must be a keyed list"
        keyfuncs[name] = keyfunc
    return _merge_keyed(parent, child, path, keyfuncs)


def _merge_keyed(
    parent: Mapping[str, Any], child: Mapping[str, Any], path: Path, keyfuncs: Mapping[str, KeyFunc]
) -> dict[str, Any]:
    """Merge the keyed lists named in ``keyfuncs`` of ``parent`` and ``child``, in one key space."""

    def items(cfg: Mapping[str, Any], name: str) -> list[Any]:
        value = cfg.get(name)
        return value if isinstance(value, list) else []

    # Index the child: key -> (list name, item); a later duplicate wins, as in Ignition.
    child_index: dict[str, tuple[str, Any]] = {}
    for name, keyfunc in keyfuncs.items():
        for item in items(child, name):
            key = keyfunc(item)
            if key is not None:
                child_index[key] = (name, item)

    out: dict[str, Any] = {}
    for name, keyfunc in keyfuncs.items():
        if name not in parent and name not in child:
            continue
        p_val, c_val = parent.get(name), child.get(name)
        if not isinstance(p_val, list | None) or not isinstance(c_val, list | None):
            # Malformed input: keep it as Ignition's "child wins" would; validation reports it.
            out[name] = copy.deepcopy(c_val if c_val is not None else p_val)
            continue
        if p_val is None and c_val is None:
            out[name] = None
            continue
        item_path = (*path, name, "*")
        result: list[Any] = []
        parent_keys: set[str] = set()
        for item in items(parent, name):
            key = keyfunc(item)
            if key is None or key not in child_index:
                result.append(copy.deepcopy(item))
                if key is not None:
                    parent_keys.add(key)
                continue
            parent_keys.add(key)
            child_list, child_item = child_index[key]
            if child_list != name:
                log.debug("merge: %s entry %s replaced by a %s entry", name, key, child_list)
                continue
            if _is_header_removal(item_path, child_item):
                continue
            result.append(_merge_value(item, child_item, item_path))
        for item in items(child, name):
            key = keyfunc(item)
            if key is None or key not in parent_keys:
                result.append(copy.deepcopy(item))
        out[name] = result
    return out


def _is_header_removal(path: Path, child_item: Any) -> bool:
    return (
        len(path) >= 2
        and path[-2] == "httpHeaders"
        and isinstance(child_item, Mapping)
        and child_item.get("value") is None
    )
