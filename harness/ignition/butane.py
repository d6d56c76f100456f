"""Translation of Butane YAML (variants ``fcos`` and ``flatcar``) to Ignition 3.x JSON dicts.

Supported: ``ignition`` (config merge/replace, timeouts, security, proxy), ``passwd``,
``storage`` (disks, raid, filesystems, files, directories, links, luks), ``systemd``, and
``kernel_arguments`` (fcos only). Not supported, and refused with a clear error: ``storage.trees``,
``filesystems[].with_mount_unit``, ``boot_device`` and ``grub``. Like Butane, the translation is
strict: unknown keys, wrong types, duplicate YAML keys and fields newer than the spec version are
errors that name the YAML key path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.ignition.butane_spec import (
    FLATCAR_REFUSED,
    RESOURCE,
    SPEC,
    SPECIAL_CAMEL,
    VARIANTS,
    Since,
    Spec,
    Unsupported,
)
from harness.ignition.dataurl import encode_contents
from harness.ignition.versions import spec_level

__all__ = ["VARIANTS", "translate"]

log = logging.getLogger(__name__)


def _camel(key: str) -> str:
    if key in SPECIAL_CAMEL:
        return SPECIAL_CAMEL[key]
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys, as Butane does."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(
                f"Butane config: duplicate key {key!r} at line {mark.line + 1}: keep only one of them"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Translator:
    def __init__(self, variant: str, level: tuple[int, int, int], label: str, files_dir: Path | None) -> None:
        self.variant = variant
        self.level = level
        self.label = label  # e.g. "fcos 1.4.0"
        self.files_dir = files_dir

    def error(self, ypath: str, message: str) -> ConfigError:
        return ConfigError(f"Butane config ({self.label}): {ypath or 'top level'}: {message}")

    def convert(self, value: Any, spec: Spec, ypath: str, pattern: tuple[str, ...]) -> Any:
        if self.variant == "flatcar" and pattern in FLATCAR_REFUSED:
            raise self.error(ypath, f"is not allowed in the flatcar variant: {FLATCAR_REFUSED[pattern]}")
        if isinstance(spec, Since):
            if self.level < spec.level:
                raise self.error(
                    ypath,
                    f"not available in {self.label} (its Ignition spec lacks it); use a newer "
                    f"{self.variant} spec version or remove it",
                )
            spec = spec.spec
        if isinstance(spec, Unsupported):
            raise self.error(ypath, f"is not supported by this translator: {spec.why}")
        if isinstance(spec, dict):
            return self.convert_object(value, spec, ypath, pattern)
        if isinstance(spec, list):
            if not isinstance(value, list):
                raise self.error(ypath, f"must be a list, not {_kind(value)}")
            return [self.convert(v, spec[0], f"{ypath}[{i}]", (*pattern, "*")) for i, v in enumerate(value)]
        return self.convert_scalar(value, spec, ypath)

    def convert_scalar(self, value: Any, spec: str, ypath: str) -> Any:
        if spec == "resource":
            return self.resource(value, ypath)
        if spec == "mode":
            if isinstance(value, str) and re.fullmatch(r"0o[0-7]{1,4}", value):
                return int(value[2:], 8)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(
                    ypath, f"must be an integer mode such as 0644 (YAML octal) or 420, not {value!r}"
                )
            if not 0 <= value <= 0o7777:
                raise self.error(ypath, f"mode {value} is outside 0..0o7777; write it in octal, e.g. 0644")
            return value
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[spec]
        if not ok:
            want = {
                "str": "a string",
                "int": "an integer",
                "bool": "true or false",
                "strs": "a list of strings",
            }
            hint = " (quote it)" if spec == "str" and isinstance(value, int | float | bool) else ""
            raise self.error(ypath, f"must be {want[spec]}, not {_kind(value)} {value!r}{hint}")
        return list(value) if spec == "strs" else value

    def convert_object(
        self, value: Any, spec: dict[str, Spec], ypath: str, pattern: tuple[str, ...]
    ) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(ypath, f"must be a mapping (key: value), not {_kind(value)}")
        out: dict[str, Any] = {}
        local: list[tuple[str, Any, str]] = []
        for key, item in value.items():
            sub = f"{ypath}.{key}" if ypath else str(key)
            if key not in spec:
                guess = _snake(str(key))
                hint = f"; did you mean {guess!r}? (Butane keys are snake_case)" if guess in spec else ""
                raise self.error(sub, f"unknown key{hint}; allowed here: {', '.join(sorted(spec))}")
            if item is None or (not pattern and key in ("variant", "version")):
                continue
            converted = self.convert(item, spec[key], sub, (*pattern, str(key)))
            if key in ("contents_local", "ssh_authorized_keys_local"):
                local.append((key, converted, sub))
            else:
                out[_camel(str(key))] = converted
        for key, converted, sub in local:
            if key == "contents_local":
                if value.get("contents") is not None:
                    raise self.error(sub, "contents and contents_local are mutually exclusive; keep one")
                out["contents"] = self.read_text(converted, sub)
            else:
                keys = out.setdefault("sshAuthorizedKeys", [])
                for i, rel in enumerate(converted):
                    text = self.read_text(rel, f"{sub}[{i}]")
                    keys.extend(ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#")
        return out

    def read_text(self, rel: str, ypath: str) -> str:
        try:
            return self.read_local(rel, ypath).decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(ypath, f"local file {rel!r} is not UTF-8 text") from None

    def read_local(self, rel: str, ypath: str) -> bytes:
        if self.files_dir is None:
            raise self.error(
                ypath, "local files need a files directory: pass files_dir= (Butane's --files-dir)"
            )
        base = Path(self.files_dir).resolve()
        target = (base / rel).resolve()
        if Path(rel).is_absolute() or not target.is_relative_to(base):
            raise self.error(
                ypath, f"{rel!r} is outside the files directory {base}; use a relative path inside it"
            )
        try:
            return target.read_bytes()
        except OSError as exc:
            raise self.error(ypath, f"cannot read local file {str(target)!r}: {exc.strerror}") from None

    def resource(self, value: Any, ypath: str) -> dict[str, Any]:
        res = self.convert_object(value, RESOURCE, ypath, ("resource",))
        given = [k for k in ("source", "inline", "local") if k in res]
        if len(given) > 1:
            raise self.error(ypath, f"{' and '.join(given)} are mutually exclusive; keep one")
        if given and given[0] in ("inline", "local"):
            if "compression" in res:
                raise self.error(
                    f"{ypath}.compression",
                    "is chosen automatically for inline and local contents; remove it",
                )
            if given[0] == "inline":
                data: str | bytes = res.pop("inline")
            else:
                raw = self.read_local(res.pop("local"), f"{ypath}.local")
                try:
                    data = raw.decode("utf-8")
                except UnicodeDecodeError:
                    data = raw
            source, compression = encode_contents(data)
            res = {"source": source, **({"compression": compression} if compression else {}), **res}
        return res


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), type(value).__name__
    )


def translate(yaml_text: str, *, files_dir: Path | None = None) -> dict[str, Any]:
    """Translate a Butane config to an Ignition config dict; raise ConfigError on any problem."""
    try:
        doc = yaml.load(yaml_text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"Butane config is not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError("Butane config must be a YAML mapping with 'variant' and 'version' at the top")
    variant, version = doc.get("variant"), doc.get("version")
    if variant not in VARIANTS:
        raise ConfigError(
            f"Butane config: variant: {variant!r} is not supported; use one of {', '.join(VARIANTS)}"
        )
    if not isinstance(version, str) or version not in VARIANTS[variant]:
        known = ", ".join(VARIANTS[variant])
        raise ConfigError(
            f"Butane config: version: {version!r} is not a supported {variant} spec version; use one of "
            f"{known} (as a quoted string)"
        )
    ign_version = VARIANTS[variant][version]
    tr = _Translator(variant, spec_level(ign_version), f"{variant} {version}", files_dir)
    body = tr.convert_object(doc, SPEC, "", ())
    ignition = body.pop("ignition", {}) or {}
    result: dict[str, Any] = {"ignition": {"version": ign_version, **ignition}}
    result.update({k: v for k, v in body.items() if v not in ({}, [])})
    _check_result(result, tr)
    log.debug("translated Butane %s %s to Ignition %s", variant, version, ign_version)
    return result


def _check_result(result: dict[str, Any], tr: _Translator) -> None:
    from harness.ignition.validate import validate

    try:
        validate(result, external=False)
    except ConfigError as exc:
        # JSON paths ($.storage.files[0].path) name the same place as the YAML keys, in camelCase.
        raise ConfigError(
            f"Butane config ({tr.label}) translates to an invalid Ignition config: {exc}"
        ) from None
