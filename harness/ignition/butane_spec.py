"""The Butane spec tree the translator in :mod:`harness.ignition.butane` walks.

A spec is ``"str"``, ``"int"``, ``"bool"``, ``"strs"`` (list of strings), ``"mode"``, ``"resource"``
(Butane's source/inline/local contents), a dict of keys to specs (a closed mapping), a one-element
list (a list of that spec), :class:`Since` (a field added in a later Ignition spec) or
:class:`Unsupported`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FLATCAR_REFUSED", "RESOURCE", "SPEC", "SPECIAL_CAMEL", "VARIANTS", "Since", "Spec", "Unsupported"]

#: Butane variant -> spec version -> Ignition spec version it produces.
VARIANTS: dict[str, dict[str, str]] = {
    "fcos": {
        "1.0.0": "3.0.0",
        "1.1.0": "3.1.0",
        "1.2.0": "3.2.0",
        "1.3.0": "3.2.0",
        "1.4.0": "3.3.0",
        "1.5.0": "3.4.0",
    },
    "flatcar": {"1.0.0": "3.3.0", "1.1.0": "3.4.0"},
}

Spec = Any  # "str" | "int" | "bool" | "strs" | "mode" | "resource" | dict[str, Spec] | list[Spec] | Since
V31, V32, V33, V34 = (3, 1, 0), (3, 2, 0), (3, 3, 0), (3, 4, 0)


class Since:
    def __init__(self, level: tuple[int, int, int], spec: Spec) -> None:
        self.level = level
        self.spec = spec


class Unsupported:
    def __init__(self, why: str) -> None:
        self.why = why


HEADERS: Spec = Since(V31, [{"name": "str", "value": "str"}])
RESOURCE: dict[str, Spec] = {
    "source": "str",
    "inline": "str",
    "local": "str",
    "compression": "str",
    "http_headers": HEADERS,
    "verification": {"hash": "str"},
}
OWNER: Spec = {"id": "int", "name": "str"}
NODE: dict[str, Spec] = {"path": "str", "overwrite": "bool", "user": OWNER, "group": OWNER}

SPEC: dict[str, Spec] = {
    "variant": "str",
    "version": "str",
    "ignition": {
        "config": {"merge": ["resource"], "replace": "resource"},
        "timeouts": {"http_response_headers": "int", "http_total": "int"},
        "security": {"tls": {"certificate_authorities": ["resource"]}},
        "proxy": Since(V31, {"http_proxy": "str", "https_proxy": "str", "no_proxy": "strs"}),
    },
    "storage": {
        "disks": [
            {
                "device": "str",
                "wipe_table": "bool",
                "partitions": [
                    {
                        "label": "str",
                        "number": "int",
                        "size_mib": "int",
                        "start_mib": "int",
                        "type_guid": "str",
                        "guid": "str",
                        "wipe_partition_entry": "bool",
                        "should_exist": "bool",
                        "resize": Since(V32, "bool"),
                    }
                ],
            }
        ],
        "raid": [{"name": "str", "level": "str", "devices": "strs", "spares": "int", "options": "strs"}],
        "filesystems": [
            {
                "device": "str",
                "format": "str",
                "path": "str",
                "wipe_filesystem": "bool",
                "label": "str",
                "uuid": "str",
                "options": "strs",
                "mount_options": Since(V31, "strs"),
                "with_mount_unit": Unsupported("write the .mount unit in systemd.units instead"),
            }
        ],
        "files": [{**NODE, "contents": "resource", "append": ["resource"], "mode": "mode"}],
        "directories": [{**NODE, "mode": "mode"}],
        "links": [{**NODE, "target": "str", "hard": "bool"}],
        "luks": Since(
            V32,
            [
                {
                    "name": "str",
                    "device": "str",
                    "key_file": "resource",
                    "label": "str",
                    "uuid": "str",
                    "options": "strs",
                    "discard": Since(V34, "bool"),
                    "open_options": Since(V34, "strs"),
                    "wipe_volume": "bool",
                    "clevis": {
                        "tang": [{"url": "str", "thumbprint": "str", "advertisement": Since(V34, "str")}],
                        "tpm2": "bool",
                        "threshold": "int",
                        "custom": {"pin": "str", "config": "str", "needs_network": "bool"},
                    },
                }
            ],
        ),
        "trees": Unsupported("list each file in storage.files (contents.local) instead"),
    },
    "systemd": {
        "units": [
            {
                "name": "str",
                "enabled": "bool",
                "mask": "bool",
                "contents": "str",
                "contents_local": Since(V34, "str"),
                "dropins": [{"name": "str", "contents": "str", "contents_local": Since(V34, "str")}],
            }
        ]
    },
    "passwd": {
        "users": [
            {
                "name": "str",
                "password_hash": "str",
                "ssh_authorized_keys": "strs",
                "ssh_authorized_keys_local": Since(V33, "strs"),
                "uid": "int",
                "gecos": "str",
                "home_dir": "str",
                "no_create_home": "bool",
                "primary_group": "str",
                "groups": "strs",
                "no_user_group": "bool",
                "no_log_init": "bool",
                "shell": "str",
                "should_exist": Since(V32, "bool"),
                "system": "bool",
            }
        ],
        "groups": [
            {
                "name": "str",
                "gid": "int",
                "password_hash": "str",
                "should_exist": Since(V32, "bool"),
                "system": "bool",
            }
        ],
    },
    "kernel_arguments": Since(V33, {"should_exist": "strs", "should_not_exist": "strs"}),
    "boot_device": Unsupported("partition the disk with storage.disks/luks/raid instead"),
    "grub": Unsupported("set GRUB users with a file under /boot instead"),
}
# Keys Butane's flatcar variant does not have (Flatcar's Ignition lacks these stages).
FLATCAR_REFUSED: dict[tuple[str, ...], str] = {
    (
        "kernel_arguments",
    ): "Flatcar's Ignition does not set kernel arguments; write /oem/grub.cfg with storage.files",
    (
        "storage",
        "luks",
        "*",
        "clevis",
    ): "Flatcar's Ignition does not bind LUKS volumes to clevis; use key_file",
    ("boot_device",): "the flatcar variant has no boot_device",
    ("grub",): "the flatcar variant has no grub section",
}
SPECIAL_CAMEL = {"size_mib": "sizeMiB", "start_mib": "startMiB"}
