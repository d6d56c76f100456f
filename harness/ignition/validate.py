"""Validation of Ignition 3.x configs before they are handed to a guest.

:func:`validate` runs, in order: JSON parsing, the ``ignition.version`` check (known 3.x version,
optionally bounded by what the guest's Ignition reads), a JSON Schema of the config
(:mod:`harness.ignition.schema`), fields newer than the declared version, the semantic checks of
:mod:`harness.ignition.checks`, and finally ``ignition-validate`` when it is on PATH.

About ``ignition-validate`` 2.14 (Debian bookworm's package ``ignition``): it reads specs 3.0.0 to
3.3.0 and ``3.4.0-experimental``, and refuses ``3.4.0`` as "unsupported config version". A 3.4.0
config is therefore checked by it as ``3.4.0-experimental``, whose fields are nearly the same (it
lacks ``luks[].discard``, ``luks[].openOptions`` and ``tang[].advertisement``, which it only warns
about as unused). It reports problems on stdout as ``error at $.path, line L col C: message`` and
exits 1; warnings alone leave the exit status 0.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from harness.errors import ConfigError
from harness.ignition.checks import json_path, semantic_checks
from harness.ignition.schema import SCHEMA
from harness.ignition.versions import check_version, spec_level

__all__ = ["run_ignition_validate", "validate"]

log = logging.getLogger(__name__)

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
_MAX_SHOWN = 20
_LINE_COL_RE = re.compile(r",? ?line \d+ col \d+")

# Fields newer than spec 3.0.0: (path pattern, first spec version with it). "*" is any list item;
# a leading "**" matches at any depth.
_FEATURES: tuple[tuple[tuple[str, ...], tuple[int, int, int]], ...] = (
    (("ignition", "proxy"), (3, 1, 0)),
    (("**", "httpHeaders"), (3, 1, 0)),
    (("ignition", "config", "merge", "*", "compression"), (3, 1, 0)),
    (("ignition", "config", "replace", "compression"), (3, 1, 0)),
    (("ignition", "security", "tls", "certificateAuthorities", "*", "compression"), (3, 1, 0)),
    (("storage", "filesystems", "*", "mountOptions"), (3, 1, 0)),
    (("storage", "luks"), (3, 2, 0)),
    (("storage", "disks", "*", "partitions", "*", "resize"), (3, 2, 0)),
    (("passwd", "users", "*", "shouldExist"), (3, 2, 0)),
    (("passwd", "groups", "*", "shouldExist"), (3, 2, 0)),
    (("kernelArguments",), (3, 3, 0)),
    (("storage", "luks", "*", "discard"), (3, 4, 0)),
    (("storage", "luks", "*", "openOptions"), (3, 4, 0)),
    (("storage", "luks", "*", "clevis", "tang", "*", "advertisement"), (3, 4, 0)),
)


def _fail(problems: Sequence[str], what: str = "invalid Ignition config") -> ConfigError:
    shown = list(problems[:_MAX_SHOWN])
    if len(problems) > _MAX_SHOWN:
        shown.append(f"... and {len(problems) - _MAX_SHOWN} more")
    if len(shown) == 1:
        return ConfigError(f"{what}: {shown[0]}")
    return ConfigError(f"{what} ({len(problems)} problems):\n" + "\n".join(f"  - {p}" for p in shown))


def _parse(config: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    if isinstance(config, str | bytes | bytearray):
        try:
            data = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"Ignition config is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    elif isinstance(config, Mapping):
        # A round trip through JSON both copies the config and rejects what JSON cannot hold.
        try:
            data = json.loads(json.dumps(config, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Ignition config holds a value JSON cannot represent: {exc}") from None
    else:
        raise ConfigError(f"an Ignition config must be a JSON text or a dict, not {type(config).__name__}")
    if not isinstance(data, dict):
        raise ConfigError(f"an Ignition config must be a JSON object at the top, not {type(data).__name__}")
    return data


def _schema_problems(data: Mapping[str, Any]) -> list[str]:
    problems = []
    for err in sorted(_VALIDATOR.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        where = json_path(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
            problems.append(
                f"{where}: unknown key(s) {', '.join(map(repr, extra))}; "
                f"allowed here: {', '.join(allowed)} (keys are camelCase, e.g. sshAuthorizedKeys)"
            )
        elif err.validator == "required":
            problems.append(f"{where}: {err.message}; add it")
        elif err.validator == "type":
            expected = err.validator_value
            kinds = [k for k in (expected if isinstance(expected, list) else [expected]) if k != "null"]
            problems.append(f"{where}: {err.instance!r} is not of type {' or '.join(kinds)}")
        elif err.validator in ("maximum", "minimum") and where.endswith(".mode"):
            problems.append(
                f"{where}: mode {err.instance!r} is out of range: write it in decimal between 0 and "
                f"4095 (0o7777), e.g. 420 for 0644"
            )
        elif err.validator == "pattern" and where.endswith(".hash"):
            problems.append(
                f"{where}: {err.instance!r} is not a hash: write 'sha512-' plus 128 hex digits "
                "or 'sha256-' plus 64"
            )
        else:
            problems.append(f"{where}: {err.message}")
    return problems


def _walk(node: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], Any]]:
    out: list[tuple[tuple[str | int, ...], Any]] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if value is not None:
                out.append(((*path, key), value))
                out.extend(_walk(value, (*path, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_walk(value, (*path, i)))
    return out


def _matches(pattern: tuple[str, ...], path: tuple[str | int, ...]) -> bool:
    if pattern[0] == "**":
        return bool(path) and path[-1] == pattern[-1]
    if len(pattern) != len(path):
        return False
    return all((p == "*" and isinstance(k, int)) or p == k for p, k in zip(pattern, path, strict=True))


def _feature_problems(data: Mapping[str, Any], version: str) -> list[str]:
    level = spec_level(version)
    problems = []
    for path, _value in _walk(data, ()):
        for pattern, since in _FEATURES:
            if level < since and _matches(pattern, path):
                first = ".".join(map(str, since))
                problems.append(
                    f"{json_path(path)}: not in spec {version} (added in {first}); Ignition would "
                    f"ignore it: raise ignition.version to {first} or later, or remove it"
                )
    return problems


def validate(
    config: Mapping[str, Any] | str | bytes,
    *,
    max_version: str | None = None,
    external: bool = True,
) -> dict[str, Any]:
    """Check an Ignition config; return it parsed (a new dict) or raise ConfigError.

    ``max_version`` is the newest spec the guest's Ignition reads (e.g. ``"3.3.0"`` for Debian
    bookworm's Ignition 2.14, or ``"3.4.0-experimental"`` to also allow that). ``external=False``
    skips ``ignition-validate`` even when it is installed.
    """
    data = _parse(config)
    ign = data.get("ignition")
    if not isinstance(ign, dict) or "version" not in ign:
        raise ConfigError(
            "invalid Ignition config: $.ignition.version is missing: every config starts with "
            '{"ignition": {"version": "3.3.0"}}'
        )
    version = check_version(ign["version"], max_version=max_version)
    problems = _schema_problems(data)
    if problems:
        raise _fail(problems)
    problems = _feature_problems(data, version)
    problems += semantic_checks(data, version)
    if problems:
        raise _fail(problems)
    if external:
        run_ignition_validate(data)
    return data


def run_ignition_validate(config: Mapping[str, Any], *, binary: str | None = None) -> bool:
    """Run ``ignition-validate`` on ``config``; return False if it is not installed.

    Raises ConfigError with its report when it rejects the config. A ``3.4.0`` config is checked
    as ``3.4.0-experimental`` by a build that does not read ``3.4.0`` yet; a version it does not
    know at all (newer than the build) is skipped with a log message.
    """
    exe = binary or shutil.which("ignition-validate")
    if exe is None:
        log.debug("ignition-validate not on PATH; skipping the external check")
        return False
    data = json.loads(json.dumps(config))
    rc, out = _run(exe, data)
    version = (data.get("ignition") or {}).get("version")
    ignore_unused = False
    if rc != 0 and "unsupported config version" in out and version == "3.4.0":
        log.debug("%s does not read spec 3.4.0; checking as 3.4.0-experimental", exe)
        data["ignition"]["version"] = "3.4.0-experimental"
        rc, out = _run(exe, data)
        ignore_unused = True
    if rc != 0 and "unsupported config version" in out:
        log.info("%s does not read spec %s; skipping the external check", exe, version)
        return True
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for line in lines:
        if line.startswith("warning") and not (ignore_unused and "Unused key" in line):
            log.warning("ignition-validate: %s", line)
    if rc != 0:
        errors = [ln for ln in lines if not ln.startswith("warning")] or lines
        raise _fail(errors, "ignition-validate rejected the Ignition config")
    return True


def _run(exe: str, data: Mapping[str, Any]) -> tuple[int, str]:
    fd, name = tempfile.mkstemp(prefix="railyard-ign-", suffix=".ign")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        try:
            proc = subprocess.run(
                [exe, name], capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"could not run {exe}: {exc}; fix or remove it from PATH") from None
    finally:
        os.unlink(name)
    out = (proc.stdout + proc.stderr).replace(name, "<config>")
    return proc.returncode, _LINE_COL_RE.sub("", out)
