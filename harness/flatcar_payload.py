"""A Flatcar update payload for the update suites (`--update-payload`), and the Ignition that makes a
machine trust the key it is signed with.

Flatcar's update_engine checks a payload's embedded signature with the public key at
`/usr/share/update_engine/update-payload-key.pub.pem` on the read-only /usr. A payload signed with another
key (a developer build's `flatcar_test_update.gz`) needs that key in its place: the key file is written to
/etc and bind-mounted over the image's before update-engine.service starts (`--update-payload-key`).
A release's own `flatcar_production_update.gz` is signed with the key the image already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.ignition import IgnitionConfig

PAYLOAD_KEY_PATH = "/usr/share/update_engine/update-payload-key.pub.pem"
"""Where update_engine reads the payload signing key (payload_processor.cc, kUpdatePayloadPublicKeyPath)."""
PAYLOAD_KEY_COPY = "/etc/railyard/update-payload-key.pub.pem"
UPDATE_ENGINE_UNIT = "update-engine.service"
ANNOUNCED_VERSION = "9999.9.9"
"""The version offered for a payload of unknown version: above any release, so update_engine takes it."""

_UNESCAPED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def mount_unit_name(path: str) -> str:
    """The name of the mount unit for `path`, escaped as `systemd-escape --path --suffix=mount` does."""
    trimmed = path.strip("/")
    if not trimmed:
        return "-.mount"
    escaped = []
    for i, char in enumerate(trimmed):
        if char == "/":
            escaped.append("-")
        elif char in _UNESCAPED and not (char == "." and i == 0):
            escaped.append(char)
        else:
            escaped.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(escaped) + ".mount"


def payload_key_ignition(public_key_pem: str, version: str = "3.3.0") -> dict[str, Any]:
    """Ignition that puts `public_key_pem` where update_engine reads the payload key (a bind mount)."""
    if "BEGIN PUBLIC KEY" not in public_key_pem:
        raise ConfigError("--update-payload-key must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
    unit = (
        "[Unit]\n"
        "Description=Railyard's update payload key in place of the image's\n"
        f"Before={UPDATE_ENGINE_UNIT}\n"
        f"ConditionPathExists={PAYLOAD_KEY_COPY}\n"
        "\n[Mount]\n"
        f"What={PAYLOAD_KEY_COPY}\n"
        f"Where={PAYLOAD_KEY_PATH}\n"
        "Type=none\n"
        "Options=bind,ro\n"
        "\n[Install]\n"
        f"WantedBy=multi-user.target {UPDATE_ENGINE_UNIT}\n"
    )
    config = IgnitionConfig(version).add_file(PAYLOAD_KEY_COPY, public_key_pem, mode=0o644)
    return config.add_unit(mount_unit_name(PAYLOAD_KEY_PATH), unit, enabled=True).to_dict()


@dataclass(frozen=True)
class FlatcarPayload:
    """`--update-payload` and what goes with it: the signing key to trust, the version it installs."""

    path: Path
    version: str | None = None
    """The version the payload installs (`--update-payload-version`); None: unknown, offered as
    ANNOUNCED_VERSION, and a test then checks that the version changed, not what it became."""
    public_key: Path | None = None

    @classmethod
    def from_options(cls, payload: str | None, version: str | None, key: str | None) -> FlatcarPayload | None:
        if payload is None:
            if version or key:
                raise ConfigError(
                    "--update-payload-version and --update-payload-key go with --update-payload"
                )
            return None
        path = Path(payload).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(f"--update-payload {path}: no such file")
        key_path = Path(key).expanduser().absolute() if key else None
        if key_path is not None and not key_path.is_file():
            raise ConfigError(f"--update-payload-key {key_path}: no such file")
        return cls(path, version, key_path)

    @property
    def announced_version(self) -> str:
        return self.version or ANNOUNCED_VERSION

    def ignition(self, version: str = "3.3.0") -> dict[str, Any] | None:
        """Ignition for machines that are to install this payload (None: the image's own key signs it)."""
        if self.public_key is None:
            return None
        return payload_key_ignition(self.public_key.read_text(), version)
