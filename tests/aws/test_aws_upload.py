"""`railyard image upload --platform=aws` against moto_server, up to the snapshot import (moto has no
ImportSnapshot: a stand-in importer makes the snapshot from a volume)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.errors import ConfigError
from platforms.aws.naming import TAG_CREATED, TAG_IMAGE, TAG_RUN, tag_dict, tag_list
from platforms.base import UploadRequest
from tests.aws.conftest import BUCKET

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


class VolumeSnapshotImporter:
    """Checks the raw disk is in S3, then makes a snapshot of a fresh volume with the given tags."""

    def __init__(self, clients, settings=None) -> None:
        self.clients = clients
        self.seen: list[tuple[str, str, bytes]] = []
        self.made: list[str] = []

    def import_snapshot(self, *, bucket, key, description, tags):
        body = self.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        self.seen.append((bucket, key, body))
        volume = self.clients.ec2.create_volume(AvailabilityZone=f"{self.clients.region}a", Size=1)[
            "VolumeId"
        ]
        snapshot_id = self.clients.ec2.create_snapshot(
            VolumeId=volume,
            Description=description,
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
        )["SnapshotId"]
        self.made.append(snapshot_id)
        return snapshot_id


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "railyard-stable.raw"
    path.write_bytes(os.urandom(256 * 1024) + b"\0" * (768 * 1024))
    return path


def write_metadata(disk: Path, firmware: str) -> None:
    disk.with_suffix(".json").write_text(
        json.dumps({"name": "railyard", "version": "1.2.3", "build_key": "k", "firmware": firmware})
    )


@pytest.fixture
def uploader(aws, aws_options):
    """(clients, settings, register-image calls) with RegisterImage's parameters recorded."""
    from platforms.aws.clients import make_clients
    from platforms.aws.settings import settings_from

    aws.make_bucket()
    settings = settings_from({**aws_options, "aws_bucket": BUCKET})
    clients = make_clients(settings)
    calls: list[dict] = []
    clients.ec2.meta.events.register(
        "provide-client-params.ec2.RegisterImage", lambda params, **kw: calls.append(dict(params))
    )
    return clients, settings, calls


def request(disk: Path, name: str = "railyard-stable-1.2.3") -> UploadRequest:
    return UploadRequest(
        options={}, image=disk, name=name, metadata={"version": "1.2.3", "channel": "stable"}
    )


def test_upload_puts_the_raw_disk_in_s3_and_registers_a_uefi_ena_image(aws, uploader, disk):
    from platforms.aws.upload import upload_image

    clients, settings, calls = uploader
    write_metadata(disk, "uefi")
    importer = VolumeSnapshotImporter(clients)
    image_id = upload_image(clients, settings, request(disk), importer)

    [(bucket, key, body)] = importer.seen
    assert (bucket, key) == (BUCKET, "railyard/images/railyard-stable-1.2.3.raw")
    assert body == disk.read_bytes()
    assert aws.objects() == [], "the raw disk in S3 is temporary"

    [params] = calls
    assert params["BootMode"] == "uefi"
    assert params["EnaSupport"] is True
    assert params["VirtualizationType"] == "hvm"
    assert params["Architecture"] == "x86_64"
    [mapping] = params["BlockDeviceMappings"]
    snapshot_id = mapping["Ebs"]["SnapshotId"]
    assert mapping["DeviceName"] == params["RootDeviceName"]

    [image] = aws.ec2.describe_images(ImageIds=[image_id])["Images"]
    assert image["Name"] == "railyard-stable-1.2.3"
    tags = tag_dict(image["Tags"])
    assert tags[TAG_IMAGE] == "railyard-stable-1.2.3"
    assert tags["railyard-version"] == "1.2.3"
    assert tags["railyard-channel"] == "stable"
    assert TAG_CREATED in tags
    assert TAG_RUN not in tags, "an uploaded image is a product, never garbage"
    [snapshot] = aws.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    snapshot_tags = tag_dict(snapshot["Tags"])
    assert snapshot_tags[TAG_IMAGE] == "railyard-stable-1.2.3"
    assert TAG_RUN not in snapshot_tags, "the snapshot now belongs to the image"


def test_bios_image_registers_legacy_bios(uploader, disk):
    from platforms.aws.upload import upload_image

    clients, settings, calls = uploader
    write_metadata(disk, "bios")
    upload_image(clients, settings, request(disk), VolumeSnapshotImporter(clients))
    assert calls[0]["BootMode"] == "legacy-bios"


def test_no_metadata_means_uefi(uploader, disk):
    from platforms.aws.upload import upload_image

    clients, settings, calls = uploader
    upload_image(clients, settings, request(disk), VolumeSnapshotImporter(clients))
    assert calls[0]["BootMode"] == "uefi"


def test_failed_registration_leaves_no_snapshot_and_no_object(aws, uploader, disk):
    from platforms.aws.upload import upload_image

    clients, settings, _ = uploader

    def refuse(**kwargs):
        raise RuntimeError("injected RegisterImage failure")

    clients.ec2.meta.events.register("before-call.ec2.RegisterImage", refuse)
    importer = VolumeSnapshotImporter(clients)
    with pytest.raises(RuntimeError, match="injected"):
        upload_image(clients, settings, request(disk), importer)
    [snapshot_id] = importer.made
    assert aws.objects() == []
    assert (
        aws.ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["Snapshots"]
        == []
    )


def test_existing_name_is_refused_before_uploading(aws, uploader, disk):
    from platforms.aws.upload import upload_image

    clients, settings, _ = uploader
    aws.register_ami("railyard-stable-1.2.3")
    importer = VolumeSnapshotImporter(clients)
    with pytest.raises(ConfigError, match="already exists"):
        upload_image(clients, settings, request(disk), importer)
    assert importer.seen == []
    assert aws.objects() == []


def test_upload_needs_a_bucket(aws, aws_options, disk):
    from platforms.aws import AwsPlatform

    with pytest.raises(ConfigError, match="--aws-bucket"):
        AwsPlatform.upload_image(UploadRequest(options=aws_options, image=disk, name="x"))


def test_platform_upload_image_uses_its_snapshot_importer(aws, aws_options, disk, monkeypatch):
    from platforms.aws import AwsPlatform

    aws.make_bucket()
    monkeypatch.setattr(AwsPlatform, "snapshot_importer", VolumeSnapshotImporter)
    options = {**aws_options, "aws_bucket": BUCKET}
    image_id = AwsPlatform.upload_image(UploadRequest(options=options, image=disk, name="railyard-stable-9"))
    [image] = aws.ec2.describe_images(ImageIds=[image_id])["Images"]
    assert image["Name"] == "railyard-stable-9"
