"""Pure rules of the AWS platform: tags, names, times, AMI name patterns. No requests here."""

from __future__ import annotations

import datetime
import fnmatch
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from platforms.cloud import iso_utc, parse_created

if TYPE_CHECKING:
    from mypy_boto3_ec2.literals import ResourceTypeType
    from mypy_boto3_ec2.type_defs import FilterTypeDef, TagSpecificationTypeDef, TagTypeDef

TAG_RUN = "railyard-run"
TAG_TEST = "railyard-test"
TAG_CREATED = "railyard-created"
TAG_IMAGE = "railyard-image"
# The tag value limit of EC2 and S3.
TAG_VALUE_MAX = 256
# The characters every AWS service accepts in tags (S3 object tags are the strictest).
_TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]")
# Prefix of every S3 key the platform writes.
S3_PREFIX = "railyard/"


def tag_value(text: str) -> str:
    """`text` made safe for any AWS tag value: unusual characters become `_`, at most 256 characters."""
    return _TAG_UNSAFE.sub("_", text)[:TAG_VALUE_MAX]


def run_tags(run_id: str, created: datetime.datetime, test_id: str = "", name: str = "") -> dict[str, str]:
    """The tags of every resource a run creates (`railyard gc` finds leftovers by them)."""
    tags = {TAG_RUN: tag_value(run_id), TAG_CREATED: iso_utc(created)}
    if test_id:
        tags[TAG_TEST] = tag_value(test_id)
    if name:
        tags["Name"] = tag_value(name)
    return tags


def tag_list(tags: Mapping[str, str]) -> list[TagTypeDef]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def tag_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """EC2's `[{"Key": k, "Value": v}]` as a plain dict."""
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags or ()}


def tag_specifications(
    tags: Mapping[str, str], resource_types: Sequence[ResourceTypeType]
) -> list[TagSpecificationTypeDef]:
    return [{"ResourceType": kind, "Tags": tag_list(tags)} for kind in resource_types]


def s3_tagging(tags: Mapping[str, str]) -> str:
    """Tags as S3's `Tagging` header (URL-encoded query form)."""
    from urllib.parse import urlencode

    return urlencode(dict(tags))


def resource_name(run_id: str, kind: str) -> str:
    """A unique name of a run's key pair or security group (each xdist worker makes its own)."""
    return f"railyard-{tag_value(run_id)}-{kind}-{secrets.token_hex(3)}"[:255]


def is_old(tags: Mapping[str, str], now: datetime.datetime, older_than: float) -> bool:
    """Whether a resource carries the run tag and was created at least `older_than` seconds before `now`.

    A resource without the run tag, or whose creation time is missing or unreadable, is never old."""
    if TAG_RUN not in tags:
        return False
    created = parse_created(tags.get(TAG_CREATED))
    if created is None:
        return False
    return (now - created).total_seconds() >= older_than


# -- AMI names --------------------------------------------------------------------------------------------


def ami_name_pattern(template: str, channel: str, version: str = "*") -> str:
    """The name filter of an AMI search: `{channel}` and `{version}` replaced, EC2 wildcards (`*`, `?`) kept."""
    try:
        return template.format(channel=channel or "stable", version=version or "*")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"--aws-ami-name={template!r}: only {{channel}} and {{version}} can be replaced ({exc})"
        ) from exc


def ami_name_matches(pattern: str, name: str) -> bool:
    """Whether `name` matches an EC2 name filter (`*` any run, `?` one character; case-sensitive)."""
    return fnmatch.fnmatchcase(name, pattern.replace("[", "[[]"))


def image_filters(pattern: str, architecture: str) -> list[FilterTypeDef]:
    return [
        {"Name": "name", "Values": [pattern]},
        {"Name": "architecture", "Values": [architecture]},
        {"Name": "state", "Values": ["available"]},
    ]


def newest_image(images: Iterable[Mapping[str, Any]], pattern: str) -> Mapping[str, Any] | None:
    """The newest image (by CreationDate, then name) whose name matches `pattern`, or None."""
    matching = [image for image in images if ami_name_matches(pattern, str(image.get("Name", "")))]
    if not matching:
        return None
    return max(matching, key=lambda image: (str(image.get("CreationDate", "")), str(image.get("Name", ""))))


def boot_mode_for(firmware: str | None) -> str:
    """EC2's BootMode for an image's firmware (`uefi` unless the image says `bios`)."""
    if firmware in (None, "", "uefi"):
        return "uefi"
    if firmware == "bios":
        return "legacy-bios"
    raise ConfigError(f"image firmware {firmware!r} has no EC2 boot mode: use --aws-boot-mode")
