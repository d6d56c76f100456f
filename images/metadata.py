"""The sidecar JSON next to an image (``image.with_suffix('.json')``) that the harness reads."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ImageError

IGNITION_FW_CFG = "opt/com.coreos/config"


FEATURE_FIRSTBOOT_CHECKPOINT = "firstboot-checkpoint"
"""The initramfs waits before Ignition for a first-boot checkpoint when fw_cfg asks it to."""
FEATURE_SSH_READY_LINE = "ssh-ready-line"
"""Every boot writes `railyard: ready for SSH` on the serial console once sshd listens and a link has a routable
address (harness.restarts.SSH_READY_HINT): the harness can wait for that line instead of probing."""


@dataclass(frozen=True)
class ImageMetadata:
    name: str
    version: str
    build_key: str
    os_id: str = "railyard"
    channel: str = "stable"
    distro: str = "railyard"
    default_user: str = "core"
    ignition_fw_cfg: str = IGNITION_FW_CFG
    firmware: str = "uefi"
    kernel_version: str = ""
    kernel_cmdline: str = ""
    partitions: dict[str, int] = field(default_factory=dict)
    usr_slots: tuple[str, ...] = ("USR-A", "USR-B")
    built_at: str = ""
    build_seconds: dict[str, float] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    """The Debian packages in the image (name -> version): kernel, systemd, Ignition... as built."""
    features: tuple[str, ...] = ()
    """What the image can do beyond booting, for the harness: FEATURE_FIRSTBOOT_CHECKPOINT, FEATURE_SSH_READY_LINE."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["usr_slots"] = list(self.usr_slots)
        data["features"] = list(self.features)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageMetadata:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("usr_slots", "features"):
            if name in values:
                values[name] = tuple(values[name])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ImageError(f"image metadata lacks required fields: {exc}") from exc


def metadata_path(image: Path) -> Path:
    return image.with_suffix(".json")


def write_metadata(path: Path, metadata: ImageMetadata) -> None:
    path.write_text(json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n")


def read_metadata(image: Path) -> ImageMetadata | None:
    """Metadata of an image, or None when it has no sidecar JSON."""
    path = metadata_path(image)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ImageError(f"cannot read image metadata {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ImageError(f"image metadata {path} is not a JSON object")
    return ImageMetadata.from_dict(data)
