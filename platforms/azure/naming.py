"""Pure rules of the Azure platform: resource names, tags, custom data, SSH keys, image references.

Nothing here talks to Azure, so all of it is unit-tested without the SDK.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from harness.errors import ConfigError
from platforms.cloud import iso_utc

# Tags every resource of a run carries; `railyard gc --platform=azure` finds leaked resource groups by them.
TAG_RUN = "railyard-run"
TAG_CREATED = "railyard-created"
TAG_TEST = "railyard-test"
TAG_MACHINE = "railyard-machine"

# Azure's limits (https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources).
TAG_VALUE_MAX = 256
# OSProfile.customData: "the base-64 encoded string is decoded to a binary array ... The maximum length of the
# binary array is 65535 bytes."
CUSTOM_DATA_MAX_BYTES = 65535
RESOURCE_GROUP_MAX = 90
VM_NAME_MAX = 64

DEFAULT_IMAGE = "kinvolk:flatcar-container-linux-free:{channel}:latest"
FLATCAR_PUBLISHER = "kinvolk"


def run_tags(run_id: str, created: datetime.datetime) -> dict[str, str]:
    return {TAG_RUN: run_id, TAG_CREATED: iso_utc(created)}


def machine_tags(base: Mapping[str, str], machine: str, test_id: str) -> dict[str, str]:
    """The run's tags plus the machine and the test it was booted for (cut to Azure's 256 characters)."""
    tags = dict(base)
    tags[TAG_MACHINE] = machine[:TAG_VALUE_MAX]
    if test_id:
        tags[TAG_TEST] = test_id[-TAG_VALUE_MAX:] if len(test_id) > TAG_VALUE_MAX else test_id
    return tags


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def resource_group_name(run_id: str, instance: str) -> str:
    """The resource group of one platform instance (one pytest process) of a run."""
    name = re.sub(r"[^A-Za-z0-9_.()-]+", "-", f"railyard-{run_id}-{instance}").rstrip(".")
    return name[:RESOURCE_GROUP_MAX]


def vm_name(machine: str, unique: str) -> str:
    """A VM name (and host name) for a machine: lower case letters, digits and '-', at most 64 characters,
    made unique by `unique`. A machine name that had to be shortened keeps a hash of the whole name."""
    base = re.sub(r"[^a-z0-9-]+", "-", machine.lower()).strip("-") or "machine"
    room = VM_NAME_MAX - len(unique) - 1
    if len(base) > room:
        digest = _short_hash(base)
        base = base[: room - len(digest) - 1].rstrip("-") + "-" + digest
    return f"{base}-{unique}"


@dataclass(frozen=True)
class MachineNames:
    """The names of the resources of one machine, all derived from its VM name."""

    vm: str

    @property
    def nic(self) -> str:
        return f"{self.vm}-nic"

    @property
    def public_ip(self) -> str:
        return f"{self.vm}-ip"

    @property
    def os_disk(self) -> str:
        return f"{self.vm}-osdisk"


# -- custom data ----------------------------------------------------------------------------------------------


def custom_data(ignition: str) -> str:
    """The Ignition config as Azure customData (base64), after checking Azure's size limit."""
    raw = ignition.encode()
    if len(raw) > CUSTOM_DATA_MAX_BYTES:
        raise ConfigError(
            f"the Ignition config is {len(raw)} bytes, but Azure accepts at most {CUSTOM_DATA_MAX_BYTES} bytes "
            "of custom data: move large files out of the config (e.g. fetch them from a URL with "
            "`contents.source: https://...`) or compress them (`contents.compression: gzip`)"
        )
    return base64.b64encode(raw).decode("ascii")


# -- images ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarketplaceImage:
    publisher: str
    offer: str
    sku: str
    version: str

    @property
    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"

    @property
    def needs_plan(self) -> bool:
        """Flatcar's marketplace images are third-party images: a VM must name their purchase plan."""
        return self.publisher.lower() == FLATCAR_PUBLISHER


@dataclass(frozen=True)
class ImageId:
    """A managed image or a gallery image (version) by its resource id."""

    id: str


ImageRef = MarketplaceImage | ImageId

_IMAGE_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(images/[^/]+|galleries/[^/]+/images/[^/]+(/versions/[^/]+)?)",
    re.IGNORECASE,
)


def parse_image(text: str, channel: str) -> ImageRef:
    """A marketplace URN (`publisher:offer:sku:version`, `{channel}` allowed) or an image resource id."""
    value = text.strip().replace("{channel}", channel or "stable")
    if value.startswith("/"):
        if not _IMAGE_ID.fullmatch(value):
            raise ConfigError(
                f"--azure-image={text}: not a managed or gallery image id; expected "
                "/subscriptions/SUB/resourceGroups/GROUP/providers/Microsoft.Compute/images/NAME or "
                ".../galleries/GALLERY/images/DEFINITION[/versions/VERSION]"
            )
        return ImageId(value)
    parts = value.split(":")
    if len(parts) != 4 or not all(p.strip() for p in parts):
        raise ConfigError(
            f"--azure-image={text}: expected a marketplace URN publisher:offer:sku:version "
            f"(e.g. {DEFAULT_IMAGE}) or an image resource id"
        )
    publisher, offer, sku, version = (p.strip() for p in parts)
    return MarketplaceImage(publisher, offer, sku, version)
