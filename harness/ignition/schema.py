"""A compact JSON Schema of the Ignition 3.x config (the union of specs 3.0.0 to 3.4.0).

Objects are closed (``additionalProperties: false``) as in the spec; optional fields may be
``null``, which Ignition reads as "not set". Checks across fields and per spec version live in
:mod:`harness.ignition.validate`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMA"]

Schema = dict[str, Any]


def _t(kind: str) -> Schema:
    return {"type": [kind, "null"]}


def _list(items: Schema) -> Schema:
    return {"type": ["array", "null"], "items": items}


def _obj(required: tuple[str, ...] = (), nullable: bool = True, **props: Schema) -> Schema:
    return {
        "type": ["object", "null"] if nullable else "object",
        "properties": props,
        "required": list(required),
        "additionalProperties": False,
    }


_STR = _t("string")
_INT = _t("integer")
_BOOL = _t("boolean")
_STRS = _list({"type": "string"})
_HEADERS = _list(_obj(("name",), nullable=False, name={"type": "string"}, value=_STR))
_VERIFICATION = _obj(
    hash={"type": ["string", "null"], "pattern": "^(sha512-[0-9a-fA-F]{128}|sha256-[0-9a-fA-F]{64})$"}
)
_COMPRESSION = {"enum": ["gzip", "", None]}


def _resource(source_required: bool) -> Schema:
    return _obj(
        ("source",) if source_required else (),
        nullable=not source_required,
        source={"type": "string"} if source_required else _STR,
        compression=_COMPRESSION,
        httpHeaders=_HEADERS,
        verification=_VERIFICATION,
    )


_OWNER = _obj(id=_INT, name=_STR)
_MODE = {"type": ["integer", "null"], "minimum": 0, "maximum": 0o7777}
_NODE: Schema = {"path": {"type": "string"}, "overwrite": _BOOL, "user": _OWNER, "group": _OWNER}

SCHEMA: Schema = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Ignition config 3.x",
    "type": "object",
    "required": ["ignition"],
    "additionalProperties": False,
    "properties": {
        "ignition": _obj(
            ("version",),
            nullable=False,
            version={"type": "string"},
            config=_obj(merge=_list(_resource(True)), replace=_resource(False)),
            timeouts=_obj(httpResponseHeaders=_INT, httpTotal=_INT),
            security=_obj(tls=_obj(certificateAuthorities=_list(_resource(True)))),
            proxy=_obj(httpProxy=_STR, httpsProxy=_STR, noProxy=_STRS),
        ),
        "storage": _obj(
            disks=_list(
                _obj(
                    ("device",),
                    nullable=False,
                    device={"type": "string"},
                    wipeTable=_BOOL,
                    partitions=_list(
                        _obj(
                            nullable=False,
                            label=_STR,
                            number=_INT,
                            sizeMiB=_INT,
                            startMiB=_INT,
                            typeGuid=_STR,
                            guid=_STR,
                            wipePartitionEntry=_BOOL,
                            shouldExist=_BOOL,
                            resize=_BOOL,
                        )
                    ),
                )
            ),
            raid=_list(
                _obj(
                    ("name", "level", "devices"),
                    nullable=False,
                    name={"type": "string"},
                    level={"type": "string"},
                    devices={"type": "array", "items": {"type": "string"}},
                    spares=_INT,
                    options=_STRS,
                )
            ),
            filesystems=_list(
                _obj(
                    ("device",),
                    nullable=False,
                    device={"type": "string"},
                    format=_STR,
                    path=_STR,
                    wipeFilesystem=_BOOL,
                    label=_STR,
                    uuid=_STR,
                    options=_STRS,
                    mountOptions=_STRS,
                )
            ),
            files=_list(
                _obj(
                    ("path",),
                    nullable=False,
                    **_NODE,
                    contents=_resource(False),
                    append=_list(_resource(False)),
                    mode=_MODE,
                )
            ),
            directories=_list(_obj(("path",), nullable=False, **_NODE, mode=_MODE)),
            links=_list(
                _obj(("path", "target"), nullable=False, **_NODE, target={"type": "string"}, hard=_BOOL)
            ),
            luks=_list(
                _obj(
                    ("name", "device"),
                    nullable=False,
                    name={"type": "string"},
                    device={"type": "string"},
                    keyFile=_resource(False),
                    label=_STR,
                    uuid=_STR,
                    options=_STRS,
                    discard=_BOOL,
                    openOptions=_STRS,
                    wipeVolume=_BOOL,
                    clevis=_obj(
                        tang=_list(
                            _obj(
                                ("url",),
                                nullable=False,
                                url={"type": "string"},
                                thumbprint=_STR,
                                advertisement=_STR,
                            )
                        ),
                        tpm2=_BOOL,
                        threshold=_INT,
                        custom=_obj(pin=_STR, config=_STR, needsNetwork=_BOOL),
                    ),
                )
            ),
        ),
        "systemd": _obj(
            units=_list(
                _obj(
                    ("name",),
                    nullable=False,
                    name={"type": "string"},
                    enabled=_BOOL,
                    mask=_BOOL,
                    contents=_STR,
                    dropins=_list(_obj(("name",), nullable=False, name={"type": "string"}, contents=_STR)),
                )
            )
        ),
        "passwd": _obj(
            users=_list(
                _obj(
                    ("name",),
                    nullable=False,
                    name={"type": "string"},
                    passwordHash=_STR,
                    sshAuthorizedKeys=_STRS,
                    uid=_INT,
                    gecos=_STR,
                    homeDir=_STR,
                    noCreateHome=_BOOL,
                    primaryGroup=_STR,
                    groups=_STRS,
                    noUserGroup=_BOOL,
                    noLogInit=_BOOL,
                    shell=_STR,
                    shouldExist=_BOOL,
                    system=_BOOL,
                )
            ),
            groups=_list(
                _obj(
                    ("name",),
                    nullable=False,
                    name={"type": "string"},
                    gid=_INT,
                    passwordHash=_STR,
                    shouldExist=_BOOL,
                    system=_BOOL,
                )
            ),
        ),
        "kernelArguments": _obj(shouldExist=_STRS, shouldNotExist=_STRS),
    },
}
