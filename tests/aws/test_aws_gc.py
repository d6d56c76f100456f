"""`railyard gc --platform=aws` against moto_server: only old resources tagged by a run are deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from platforms.aws.naming import TAG_CREATED, TAG_RUN
from platforms.base import GarbageRequest
from platforms.cloud import iso_utc, utc_now
from tests.aws.conftest import BUCKET, RUN_ID, ignition_json, platform_context
from tests.aws.test_aws_launch import BIG

OLD = "2000-01-01T00:00:00Z"


def gc(options, older_than, dry_run=False):
    from platforms.aws import AwsPlatform

    request = GarbageRequest(
        options=options, older_than=older_than, output_root=Path("_railyard"), dry_run=dry_run
    )
    return AwsPlatform.collect_garbage(request)


@pytest.fixture
def leaked(aws, aws_options, make_spec, tmp_path):
    """What a crashed run leaves: an instance, its group and key pair, an S3 config (the platform is never
    closed)."""
    from platforms.aws import AwsPlatform

    aws.register_ami("railyard-stable-1.0.0")
    aws.make_bucket()
    platform = AwsPlatform(platform_context({**aws_options, "aws_bucket": BUCKET}, tmp_path))
    return platform.boot(make_spec(ignition=ignition_json(padding=BIG)))


def test_young_resources_are_kept(aws, aws_options, leaked):
    lines = gc({**aws_options, "aws_bucket": BUCKET}, older_than=3600)
    assert lines == []
    assert len(aws.live_instances()) == 1
    assert len(aws.our_groups()) == 1
    assert len(aws.key_pairs()) == 1
    assert len(aws.objects()) == 1


def test_default_age_is_six_hours(aws, aws_options, leaked):
    assert gc({**aws_options, "aws_bucket": BUCKET}, older_than=None) == []
    assert len(aws.live_instances()) == 1


def test_old_resources_are_deleted(aws, aws_options, leaked):
    lines = gc({**aws_options, "aws_bucket": BUCKET}, older_than=0)
    text = "\n".join(lines)
    assert f"terminated instance {leaked.instance_id}" in text
    assert "deleted security group" in text
    assert "deleted key pair" in text
    assert "deleted s3://" in text
    assert all(RUN_ID in line for line in lines)
    assert aws.live_instances() == []
    assert aws.our_groups() == []
    assert aws.key_pairs() == []
    assert aws.objects() == []


def test_dry_run_deletes_nothing(aws, aws_options, leaked):
    lines = gc({**aws_options, "aws_bucket": BUCKET}, older_than=0, dry_run=True)
    assert len(lines) == 4
    assert all(line.startswith("would ") for line in lines)
    assert len(aws.live_instances()) == 1
    assert len(aws.our_groups()) == 1
    assert len(aws.key_pairs()) == 1
    assert len(aws.objects()) == 1


def test_untagged_and_unreadable_resources_are_never_touched(aws, aws_options):
    aws.make_bucket()
    no_time = [{"Key": TAG_RUN, "Value": "someone"}, {"Key": TAG_CREATED, "Value": "yesterday"}]
    aws.ec2.create_security_group(GroupName="untagged", Description="not ours")
    aws.ec2.create_security_group(
        GroupName="bad-time",
        Description="x",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": no_time}],
    )
    aws.ec2.create_key_pair(KeyName="someone-elses")
    aws.s3.put_object(Bucket=BUCKET, Key="railyard/ignition/x.ign", Body=b"{}")
    aws.s3.put_object(
        Bucket=BUCKET, Key="elsewhere/y", Body=b"{}", Tagging=f"{TAG_RUN}=r&{TAG_CREATED}={OLD}"
    )
    assert gc({**aws_options, "aws_bucket": BUCKET}, older_than=0) == []
    assert {g["GroupName"] for g in aws.our_groups()} == {"untagged", "bad-time"}
    assert [k["KeyName"] for k in aws.key_pairs()] == ["someone-elses"]
    assert sorted(aws.objects()) == ["elsewhere/y", "railyard/ignition/x.ign"]


def test_old_tag_is_deleted_young_tag_is_kept_at_the_default_age(aws, aws_options):

    def tags(created):
        return [
            {
                "ResourceType": "key-pair",
                "Tags": [{"Key": TAG_RUN, "Value": "r"}, {"Key": TAG_CREATED, "Value": created}],
            }
        ]

    aws.ec2.create_key_pair(KeyName="old", TagSpecifications=tags(OLD))
    aws.ec2.create_key_pair(KeyName="young", TagSpecifications=tags(iso_utc(utc_now())))
    lines = gc(aws_options, older_than=None)
    assert lines == [f"deleted key pair old (run r, created {OLD})"]
    assert [k["KeyName"] for k in aws.key_pairs()] == ["young"]


def test_orphaned_upload_snapshots_are_deleted(aws, aws_options):
    volume = aws.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    tagged = [
        {
            "ResourceType": "snapshot",
            "Tags": [{"Key": TAG_RUN, "Value": "upload-1"}, {"Key": TAG_CREATED, "Value": OLD}],
        }
    ]
    orphan = aws.ec2.create_snapshot(VolumeId=volume, TagSpecifications=tagged)["SnapshotId"]
    mine = aws.ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    lines = gc(aws_options, older_than=0)
    assert lines == [f"deleted snapshot {orphan} (run upload-1, created {OLD})"]
    remaining = {s["SnapshotId"] for s in aws.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert mine in remaining
    assert orphan not in remaining


def test_gc_without_credentials_says_so(no_credentials):
    from harness.errors import PlatformError

    options = {"aws_endpoint_url": no_credentials, "aws_region": "us-east-1"}
    with pytest.raises(PlatformError, match=r"no usable AWS credentials.*AWS_PROFILE"):
        gc(options, older_than=0)
