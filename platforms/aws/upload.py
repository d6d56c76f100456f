"""`railyard image upload --platform=aws`: local disk image → raw → S3 → EBS snapshot → registered AMI.

The snapshot import is behind `SnapshotImporter`: `Ec2SnapshotImporter` uses EC2's ImportSnapshot (it needs the
`vmimport` service role, or --aws-import-role, allowed to read the bucket); another importer can stand in where
ImportSnapshot is not available. The raw disk in S3 is temporary and deleted in every case. Until the image is
registered, the snapshot carries `railyard-run`, so `railyard gc` can delete it after an interrupted upload;
afterwards it carries `railyard-image` and belongs to the image.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from harness.errors import ConfigError, ImageError, PlatformError, WaitTimeout
from images.metadata import read_metadata
from platforms.aws.cleanup import CleanupStack, Undo
from platforms.aws.clients import AwsClients, aws_errors, wait
from platforms.aws.launch import delete_object, delete_snapshot
from platforms.aws.naming import (
    S3_PREFIX,
    TAG_IMAGE,
    TAG_RUN,
    boot_mode_for,
    run_tags,
    s3_tagging,
    tag_list,
    tag_specifications,
    tag_value,
)
from platforms.aws.settings import AwsSettings
from platforms.base import UploadRequest
from platforms.cloud import utc_now

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import ImportSnapshotRequestTypeDef

log = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
ROOT_DEVICE = "/dev/xvda"
CONVERT_TIMEOUT = 1800.0


class SnapshotImporter(Protocol):
    def import_snapshot(self, *, bucket: str, key: str, description: str, tags: Mapping[str, str]) -> str:
        """Make an EBS snapshot of the raw disk at s3://bucket/key, tagged with `tags`; returns its id."""
        ...


class Ec2SnapshotImporter:
    """ImportSnapshot, then poll the import task until it completes, fails or times out."""

    def __init__(self, clients: AwsClients, settings: AwsSettings) -> None:
        self.clients = clients
        self.settings = settings

    def import_snapshot(self, *, bucket: str, key: str, description: str, tags: Mapping[str, str]) -> str:
        ec2 = self.clients.ec2
        params: ImportSnapshotRequestTypeDef = {
            "Description": description,
            "DiskContainer": {"Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": key}},
            "TagSpecifications": tag_specifications(tags, ["import-snapshot-task"]),
        }
        if self.settings.import_role:
            params["RoleName"] = self.settings.import_role
        with aws_errors(f"importing s3://{bucket}/{key} as a snapshot"):
            task_id = ec2.import_snapshot(**params)["ImportTaskId"]
        log.info("snapshot import %s started", task_id)
        deadline = time.monotonic() + self.settings.timeout
        while True:
            with aws_errors(f"polling snapshot import {task_id}"):
                tasks = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id]).get(
                    "ImportSnapshotTasks", []
                )
            detail = tasks[0].get("SnapshotTaskDetail", {}) if tasks else {}
            status = detail.get("Status", "unknown")
            if status == "completed" and detail.get("SnapshotId"):
                snapshot_id = str(detail["SnapshotId"])
                with aws_errors(f"tagging snapshot {snapshot_id}"):
                    ec2.create_tags(Resources=[snapshot_id], Tags=tag_list(tags))
                return snapshot_id
            if status in ("deleting", "deleted") or "error" in str(detail.get("StatusMessage", "")).lower():
                raise PlatformError(
                    f"snapshot import {task_id} failed: {detail.get('StatusMessage', status)}; check that the "
                    "vmimport role (or --aws-import-role) may read the bucket"
                )
            if time.monotonic() >= deadline:
                with aws_errors(f"cancelling snapshot import {task_id}"):
                    ec2.cancel_import_task(ImportTaskId=task_id)
                raise WaitTimeout(
                    f"snapshot import {task_id} not done within {self.settings.timeout:.0f} s "
                    f"({status}, {detail.get('Progress', '?')}%); raise --aws-timeout"
                )
            time.sleep(max(self.settings.poll_interval, 1.0))


def convert_to_raw(image: Path, dest: Path) -> None:
    """A raw copy of a disk image (qcow2 or raw) made by qemu-img."""
    argv = [QEMU_IMG, "convert", "-O", "raw", str(image), str(dest)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CONVERT_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"{QEMU_IMG} not found: apt-get install qemu-utils") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{shlex.join(argv)} took over {CONVERT_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        raise ImageError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def image_tags(request: UploadRequest, created: str) -> dict[str, str]:
    tags = {"Name": tag_value(request.name), TAG_IMAGE: tag_value(request.name), "railyard-created": created}
    for key, value in request.metadata.items():
        if value:
            tags[f"railyard-{tag_value(key)}"[:128]] = tag_value(value)
    return tags


def upload_image(
    clients: AwsClients, settings: AwsSettings, request: UploadRequest, importer: SnapshotImporter
) -> str:
    """Upload, import and register `request.image`; returns the new AMI id. Leaves nothing behind on failure."""
    bucket = settings.require_bucket("image upload")
    if not request.image.is_file():
        raise ConfigError(f"image {request.image}: no such file")
    metadata = read_metadata(request.image)
    boot_mode = settings.boot_mode or boot_mode_for(metadata.firmware if metadata else None)
    with aws_errors(f"looking for an existing image named {request.name}"):
        existing = clients.ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "name", "Values": [request.name]}]
        ).get("Images", [])
    if existing:
        raise ConfigError(
            f"an image named {request.name!r} already exists ({existing[0]['ImageId']}): pass another --name "
            "or deregister it"
        )
    now = utc_now()
    temporary = run_tags(f"upload-{secrets.token_hex(4)}", now, name=request.name)
    cleanup = CleanupStack()
    try:
        key = f"{S3_PREFIX}images/{request.name}.raw"
        with tempfile.TemporaryDirectory(prefix="railyard-upload-") as tmp:
            raw = Path(tmp) / "disk.raw"
            log.info("converting %s to raw", request.image)
            convert_to_raw(request.image, raw)
            log.info("uploading %s (%d MiB) to s3://%s/%s", raw.name, raw.stat().st_size >> 20, bucket, key)
            with aws_errors(f"uploading the raw disk to s3://{bucket}/{key}"):
                clients.s3.upload_file(str(raw), bucket, key, ExtraArgs={"Tagging": s3_tagging(temporary)})
            cleanup.push(f"delete s3://{bucket}/{key}", lambda: delete_object(clients, bucket, key))
        snapshot_id = importer.import_snapshot(
            bucket=bucket, key=key, description=f"Railyard image {request.name}", tags=temporary
        )
        snapshot_undo = cleanup.push(
            f"delete snapshot {snapshot_id}", lambda: delete_snapshot(clients, snapshot_id)
        )
        image_id, image_undo = _register(clients, settings, request, snapshot_id, boot_mode, cleanup)
        final = image_tags(request, temporary["railyard-created"])
        with aws_errors(f"tagging {image_id} and {snapshot_id}"):
            clients.ec2.create_tags(Resources=[image_id, snapshot_id], Tags=tag_list(final))
            clients.ec2.delete_tags(Resources=[snapshot_id], Tags=[{"Key": TAG_RUN}])
        wait(
            clients.ec2, "image_available", timeout=settings.timeout, poll_interval=settings.poll_interval,
            what=f"waiting for image {image_id} to become available", ImageIds=[image_id],
        )  # fmt: skip
        # The image and its snapshot are the product: only the temporary raw disk goes.
        cleanup.discard(snapshot_undo)
        cleanup.discard(image_undo)
    finally:
        failures = cleanup.unwind()
        if failures:
            log.warning("upload cleanup left: %s", "; ".join(failures))
    log.info("registered %s as %s (%s, %s)", request.name, image_id, boot_mode, settings.architecture)
    return image_id


def _register(
    clients: AwsClients,
    settings: AwsSettings,
    request: UploadRequest,
    snapshot_id: str,
    boot_mode: str,
    cleanup: CleanupStack,
) -> tuple[str, Undo]:
    with aws_errors(f"registering image {request.name}"):
        image_id = clients.ec2.register_image(
            Name=request.name,
            Description=f"Railyard image {request.name}",
            Architecture=settings.architecture,  # type: ignore[arg-type]
            VirtualizationType="hvm",
            RootDeviceName=ROOT_DEVICE,
            BlockDeviceMappings=[
                {
                    "DeviceName": ROOT_DEVICE,
                    "Ebs": {"SnapshotId": snapshot_id, "DeleteOnTermination": True, "VolumeType": "gp3"},
                }
            ],
            EnaSupport=True,
            BootMode=boot_mode,  # type: ignore[arg-type]
        )["ImageId"]
    return image_id, cleanup.push(f"deregister image {image_id}", lambda: _deregister(clients, image_id))


def _deregister(clients: AwsClients, image_id: str) -> None:
    with aws_errors(f"deregistering image {image_id}"):
        clients.ec2.deregister_image(ImageId=image_id)
