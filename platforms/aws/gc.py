"""`railyard gc --platform=aws`: delete what runs leaked, found by their tags, in one region.

Only resources carrying `railyard-run` whose `railyard-created` is at least `older_than` seconds old are touched;
a resource without the tags, or with a creation time that cannot be read, is left alone. What is deleted:
instances (terminated, and waited for), security groups, key pairs, S3 objects under `railyard/` in --aws-bucket,
and snapshots left by an interrupted `railyard image upload`. Registered images are never deregistered: they
carry `railyard-image`, not `railyard-run`, as a deliberate product, and a snapshot that backs an image is
kept too.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from harness.errors import RailyardError
from platforms.aws.clients import AwsClients, aws_errors, is_not_found
from platforms.aws.launch import (
    delete_key_pair,
    delete_object,
    delete_security_group,
    delete_snapshot,
    terminate_instances,
)
from platforms.aws.naming import S3_PREFIX, TAG_CREATED, TAG_RUN, is_old, tag_dict
from platforms.aws.settings import AwsSettings
from platforms.cloud import utc_now

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef

log = logging.getLogger(__name__)

DEFAULT_GC_AGE = 6 * 3600.0
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
TAGGED: list[FilterTypeDef] = [{"Name": "tag-key", "Values": [TAG_RUN]}]


def _describe(tags: Mapping[str, str]) -> str:
    return f"run {tags.get(TAG_RUN)}, created {tags.get(TAG_CREATED)}"


class _Collector:
    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.lines: list[str] = []

    def act(self, verb: str, what: str, tags: Mapping[str, str], action: Callable[[], None]) -> None:
        if self.dry_run:
            self.lines.append(f"would {verb} {what} ({_describe(tags)})")
            return
        try:
            action()
        except RailyardError as exc:
            log.warning("could not %s %s: %s", verb, what, exc)
            self.lines.append(f"FAILED to {verb} {what}: {exc}")
            return
        self.lines.append(f"{verb}d {what} ({_describe(tags)})")


def collect_garbage(
    clients: AwsClients,
    settings: AwsSettings,
    *,
    older_than: float,
    dry_run: bool = False,
    now: datetime.datetime | None = None,
) -> list[str]:
    """Delete (or with `dry_run` list) the old tagged leftovers; one line per resource."""
    now = now or utc_now()
    out = _Collector(dry_run)
    ec2 = clients.ec2
    wait_args = {"timeout": settings.timeout, "poll_interval": settings.poll_interval}

    with aws_errors("listing instances tagged railyard-run"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[*TAGGED, {"Name": "instance-state-name", "Values": LIVE_STATES}]
        )
        instances = [
            i for page in pages for r in page.get("Reservations", []) for i in r.get("Instances", [])
        ]
    for instance in instances:
        tags = tag_dict(instance.get("Tags"))
        if is_old(tags, now, older_than):
            instance_id = instance["InstanceId"]
            out.act("terminate", f"instance {instance_id}", tags,
                    functools.partial(terminate_instances, clients, [instance_id], **wait_args))  # fmt: skip

    with aws_errors("listing security groups tagged railyard-run"):
        groups = ec2.describe_security_groups(Filters=TAGGED).get("SecurityGroups", [])
    for group in groups:
        tags = tag_dict(group.get("Tags"))
        if is_old(tags, now, older_than):
            group_id = group["GroupId"]
            out.act("delete", f"security group {group_id}", tags,
                    functools.partial(delete_security_group, clients, group_id, **wait_args))  # fmt: skip

    with aws_errors("listing key pairs tagged railyard-run"):
        key_pairs = ec2.describe_key_pairs(Filters=TAGGED).get("KeyPairs", [])
    for key_pair in key_pairs:
        tags = tag_dict(key_pair.get("Tags"))
        if is_old(tags, now, older_than):
            name = key_pair["KeyName"]
            out.act("delete", f"key pair {name}", tags, functools.partial(delete_key_pair, clients, name))

    if settings.bucket:
        _collect_objects(clients, settings.bucket, now, older_than, out)
    else:
        log.info("no --aws-bucket: S3 objects are not collected")

    _collect_snapshots(clients, now, older_than, out)
    return out.lines


def _collect_objects(
    clients: AwsClients, bucket: str, now: datetime.datetime, older_than: float, out: _Collector
) -> None:
    with aws_errors(f"listing s3://{bucket}/{S3_PREFIX}"):
        pages = clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=S3_PREFIX)
        keys = [str(obj["Key"]) for page in pages for obj in page.get("Contents", [])]
    for key in keys:
        with aws_errors(f"reading the tags of s3://{bucket}/{key}"):
            try:
                tag_set = clients.s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
            except Exception as exc:
                if is_not_found(exc):
                    continue
                raise
        tags = tag_dict(tag_set)
        if is_old(tags, now, older_than):
            out.act(
                "delete", f"s3://{bucket}/{key}", tags, functools.partial(delete_object, clients, bucket, key)
            )


def _collect_snapshots(
    clients: AwsClients, now: datetime.datetime, older_than: float, out: _Collector
) -> None:
    with aws_errors("listing snapshots tagged railyard-run"):
        snapshots = clients.ec2.describe_snapshots(OwnerIds=["self"], Filters=TAGGED).get("Snapshots", [])
    old = [s for s in snapshots if is_old(tag_dict(s.get("Tags")), now, older_than)]
    if not old:
        return
    with aws_errors("listing this account's images"):
        images = clients.ec2.describe_images(Owners=["self"]).get("Images", [])
    in_use = {
        str(mapping["Ebs"]["SnapshotId"])
        for image in images
        for mapping in image.get("BlockDeviceMappings", [])
        if "Ebs" in mapping and "SnapshotId" in mapping["Ebs"]
    }
    for snapshot in old:
        snapshot_id = snapshot["SnapshotId"]
        tags = tag_dict(snapshot.get("Tags"))
        if snapshot_id in in_use:
            log.info("snapshot %s backs an image: kept", snapshot_id)
            continue
        out.act(
            "delete",
            f"snapshot {snapshot_id}",
            tags,
            functools.partial(delete_snapshot, clients, snapshot_id),
        )
