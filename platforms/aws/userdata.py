"""How the Ignition config reaches an EC2 instance: as user data, or through S3 when it is too big.

EC2 refuses user data over 16 KiB (counted on the raw bytes, before base64). A larger config is stored as an S3
object and the user data is a small pointer config whose `ignition.config.replace` names it.

The pointer uses a presigned HTTPS URL, not an `s3://` URL: Flatcar's Ignition can read `s3://` but only with the
instance's own credentials, which needs an IAM instance profile allowed to read the bucket; a presigned URL works
with any Ignition and no IAM set-up, keeps the object private, and expires by itself. The pointer also carries
the config's SHA-512, so Ignition refuses anything else at that URL.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError

USER_DATA_LIMIT = 16384


@dataclass(frozen=True)
class UserDataPlan:
    """What a launch sends: the config inline, or a pointer to an S3 copy of it."""

    config: bytes
    """The full Ignition config, as the guest must see it."""
    inline: bool

    @property
    def size(self) -> int:
        return len(self.config)


def plan_user_data(ignition: str, bucket: str | None) -> UserDataPlan:
    """Decide, before any request, how the config travels; ConfigError when it cannot."""
    data = ignition.encode()
    if len(data) <= USER_DATA_LIMIT:
        return UserDataPlan(data, inline=True)
    if not bucket:
        raise ConfigError(
            f"the Ignition config is {len(data)} bytes, over EC2's user-data limit of {USER_DATA_LIMIT} bytes: "
            "pass --aws-bucket=NAME so that it goes through S3, or make the config smaller"
        )
    return UserDataPlan(data, inline=False)


def pointer_config(url: str, config: bytes, version: str) -> bytes:
    """A config that replaces itself with the one at `url`, checked by its SHA-512."""
    digest = hashlib.sha512(config).hexdigest()
    pointer: dict[str, Any] = {
        "ignition": {
            "version": version,
            "config": {"replace": {"source": url, "verification": {"hash": f"sha512-{digest}"}}},
        }
    }
    data = json.dumps(pointer, separators=(",", ":")).encode()
    if len(data) > USER_DATA_LIMIT:
        raise ConfigError(
            f"the pointer config is {len(data)} bytes, over EC2's limit of {USER_DATA_LIMIT}: the S3 URL is "
            "too long (use a shorter --aws-bucket or endpoint)"
        )
    return data


def key_material(public_line: str) -> bytes:
    """The `type base64` part of an authorized_keys line (ImportKeyPair takes no options or comment)."""
    parts = public_line.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise ConfigError(f"not an OpenSSH public key: {public_line[:40]!r}...")
    return f"{parts[0]} {parts[1]}".encode()
