"""What a platform is handed besides machine specs: its context in a run, and the requests of the `railyard`
command (`railyard gc`, `railyard image upload`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.acceleration import Acceleration, Timeouts


@dataclass(frozen=True)
class PlatformContext:
    """What a platform gets from the run: its id, where artifacts go, acceleration and options."""

    run_id: str
    output_dir: Path
    accel: Acceleration
    timeouts: Timeouts
    options: Mapping[str, Any]


@dataclass(frozen=True)
class GarbageRequest:
    """What `railyard gc` asks a platform to delete: leftovers of runs that did not clean up."""

    options: Mapping[str, Any]
    """The platform's own options (as `add_options` declared them), e.g. a region or a libvirt URI."""
    older_than: float | None
    """Only what was created at least this many seconds ago (None: the platform's own rule)."""
    output_root: Path
    """Where runs put their artifacts and local runtime files (`_railyard` by default)."""
    dry_run: bool = False
    """Report what would be deleted, delete nothing."""


@dataclass(frozen=True)
class UploadRequest:
    """What `railyard image upload` asks a platform to do: make a bootable image from a local disk file."""

    options: Mapping[str, Any]
    image: Path
    """A local disk image (qcow2 or raw); the platform converts it to the format it needs."""
    name: str
    """The name to register the image under (unique per platform account)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Tags to put on the image (os id, version, channel...)."""
