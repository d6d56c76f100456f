"""The requests that create and delete the resources of a run: security group, key pair, S3 config, instance.

Every creating function pushes the matching delete onto a CleanupStack as soon as AWS returns the new id, so a
failure later in the same launch undoes what came before it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, PlatformError, WaitTimeout
from platforms.aws.cleanup import CleanupStack, Undo
from platforms.aws.clients import AwsClients, aws_errors, error_code, is_not_found, wait
from platforms.aws.naming import (
    ami_name_pattern,
    image_filters,
    newest_image,
    s3_tagging,
    tag_specifications,
)
from platforms.aws.settings import AwsSettings
from platforms.aws.userdata import key_material

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef, RunInstancesRequestTypeDef

log = logging.getLogger(__name__)

SSH_PORT = 22
PRESIGN_MIN_SECONDS = 3600


# -- reading -------------------------------------------------------------------------------------------


def find_ami(clients: AwsClients, settings: AwsSettings, channel: str) -> str:
    """The AMI to boot: --aws-ami after checking it exists, else the newest matching name and owner."""
    if settings.ami:
        with aws_errors(f"looking up AMI {settings.ami}"):
            try:
                found = clients.ec2.describe_images(ImageIds=[settings.ami]).get("Images", [])
            except Exception as exc:
                if is_not_found(exc):
                    found = []
                else:
                    raise
        if not found:
            raise ConfigError(
                f"--aws-ami={settings.ami}: no such AMI in {clients.region} (or not shared with this account); "
                "check the id and the region"
            )
        return settings.ami
    pattern = ami_name_pattern(settings.ami_name, channel, settings.ami_version)
    with aws_errors(f"searching AMIs named {pattern!r}"):
        images = clients.ec2.describe_images(
            Owners=[settings.ami_owner], Filters=image_filters(pattern, settings.architecture)
        ).get("Images", [])
    best = newest_image([dict(image) for image in images], pattern)
    if best is None:
        raise ConfigError(
            f"no {settings.architecture} AMI named {pattern!r} owned by {settings.ami_owner} in {clients.region}: "
            "pass --aws-ami, or fix --aws-ami-owner / --aws-ami-name / --aws-ami-version"
        )
    log.info("channel %s: AMI %s (%s)", channel, best["ImageId"], best.get("Name"))
    return str(best["ImageId"])


def find_subnet(clients: AwsClients, subnet: str | None) -> tuple[str, str]:
    """(VPC, subnet) of the run's machines: --aws-subnet, or one subnet of the region's default VPC (the
    default subnet of the first availability zone by name), so that the machines of a run share a subnet."""
    if subnet:
        with aws_errors(f"looking up subnet {subnet}"):
            try:
                subnets = clients.ec2.describe_subnets(SubnetIds=[subnet]).get("Subnets", [])
            except Exception as exc:
                if is_not_found(exc):
                    subnets = []
                else:
                    raise
        if not subnets:
            raise ConfigError(f"--aws-subnet={subnet}: no such subnet in {clients.region}")
        return str(subnets[0]["VpcId"]), subnet
    with aws_errors("looking up the default VPC"):
        vpcs = clients.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}]).get("Vpcs", [])
    if not vpcs:
        raise ConfigError(
            f"{clients.region} has no default VPC: pass --aws-subnet=subnet-... for the machines"
        )
    vpc_id = str(vpcs[0]["VpcId"])
    with aws_errors(f"looking up the default subnets of {vpc_id}"):
        found = clients.ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "default-for-az", "Values": ["true"]}]
        ).get("Subnets", [])
    if not found:
        raise ConfigError(f"the default VPC {vpc_id} has no default subnet: pass --aws-subnet=subnet-...")
    first = min(found, key=lambda s: (str(s.get("AvailabilityZone", "")), str(s["SubnetId"])))
    return vpc_id, str(first["SubnetId"])


def describe_instance(clients: AwsClients, instance_id: str) -> InstanceTypeDef:
    with aws_errors(f"describing instance {instance_id}"):
        reservations = clients.ec2.describe_instances(InstanceIds=[instance_id]).get("Reservations", [])
    for reservation in reservations:
        for instance in reservation.get("Instances", []):
            return instance
    raise PlatformError(f"instance {instance_id} is gone from {clients.region}")


# -- creating (each registers its undo) ------------------------------------------------------------------


def create_security_group(
    clients: AwsClients,
    stack: CleanupStack,
    *,
    name: str,
    vpc_id: str,
    ssh_cidr: str,
    tags: Mapping[str, str],
    delete_timeout: float,
    poll_interval: float,
) -> str:
    """A security group letting SSH in from `ssh_cidr` only, and anything in from its own members (outbound
    stays open for Ignition and updates)."""
    with aws_errors(f"creating security group {name}"):
        group_id = clients.ec2.create_security_group(
            GroupName=name,
            Description="Railyard test machines: SSH from the test runner only",
            VpcId=vpc_id,
            TagSpecifications=tag_specifications(tags, ["security-group"]),
        )["GroupId"]
    stack.push(
        f"delete security group {group_id}",
        lambda: delete_security_group(clients, group_id, timeout=delete_timeout, poll_interval=poll_interval),
    )
    ip_range = "Ipv6Ranges" if ":" in ssh_cidr else "IpRanges"
    cidr_key = "CidrIpv6" if ":" in ssh_cidr else "CidrIp"
    permission: Any = {
        "IpProtocol": "tcp",
        "FromPort": SSH_PORT,
        "ToPort": SSH_PORT,
        ip_range: [{cidr_key: ssh_cidr, "Description": "SSH from the test runner"}],
    }
    with aws_errors(f"allowing SSH from {ssh_cidr} in {group_id}"):
        clients.ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[permission],
            TagSpecifications=tag_specifications(tags, ["security-group-rule"]),
        )
    # The machines of the run reach each other on every port (a cluster's private network).
    members: Any = {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id, "Description": "the run"}]}
    with aws_errors(f"letting the machines of {group_id} reach each other"):
        clients.ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[members],
            TagSpecifications=tag_specifications(tags, ["security-group-rule"]),
        )
    log.info("security group %s: SSH from %s, and all traffic between its machines", group_id, ssh_cidr)
    return group_id


def import_key_pair(
    clients: AwsClients, stack: CleanupStack, *, name: str, public_line: str, tags: Mapping[str, str]
) -> str:
    """An EC2 key pair holding the run's SSH public key (the private key never leaves the runner)."""
    with aws_errors(f"importing key pair {name}"):
        clients.ec2.import_key_pair(
            KeyName=name,
            PublicKeyMaterial=key_material(public_line),
            TagSpecifications=tag_specifications(tags, ["key-pair"]),
        )
    stack.push(f"delete key pair {name}", lambda: delete_key_pair(clients, name))
    return name


def put_config(
    clients: AwsClients,
    stack: CleanupStack,
    *,
    bucket: str,
    key: str,
    config: bytes,
    tags: Mapping[str, str],
    expires: float,
) -> str:
    """Store an Ignition config in S3; returns a presigned GET URL valid for `expires` seconds."""
    with aws_errors(f"storing the Ignition config as s3://{bucket}/{key}"):
        clients.s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=config,
            ContentType="application/json",
            Tagging=s3_tagging(tags),
        )
    stack.push(f"delete s3://{bucket}/{key}", lambda: delete_object(clients, bucket, key))
    with aws_errors(f"presigning s3://{bucket}/{key}"):
        url = clients.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=int(max(PRESIGN_MIN_SECONDS, expires)),
        )
    return str(url)


@dataclass(frozen=True)
class InstanceRequest:
    ami: str
    instance_type: str
    user_data: bytes
    security_group: str
    key_name: str | None
    subnet: str | None
    public_ip: bool
    tags: Mapping[str, str]


def run_instance(
    clients: AwsClients, stack: CleanupStack, request: InstanceRequest, *, settings: AwsSettings
) -> tuple[str, Undo]:
    """Start one instance; returns its id and the undo that terminates it (on the stack from then on)."""
    params: RunInstancesRequestTypeDef = {
        "ImageId": request.ami,
        "InstanceType": request.instance_type,  # type: ignore[typeddict-item]
        "MinCount": 1,
        "MaxCount": 1,
        "UserData": request.user_data.decode(),
        "TagSpecifications": tag_specifications(request.tags, ["instance", "volume", "network-interface"]),
        # Instance metadata over IMDSv2 only: the user data can hold a presigned URL.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
    }
    if request.key_name:
        params["KeyName"] = request.key_name
    interface: Any = {
        "DeviceIndex": 0,
        "Groups": [request.security_group],
        "AssociatePublicIpAddress": request.public_ip,
        "DeleteOnTermination": True,
    }
    if request.subnet:
        interface["SubnetId"] = request.subnet
    params["NetworkInterfaces"] = [interface]
    with aws_errors(f"starting an instance of {request.ami} ({request.instance_type})"):
        instances = clients.ec2.run_instances(**params).get("Instances", [])
    if not instances:
        raise PlatformError(f"RunInstances returned no instance for {request.ami}")
    instance_id = str(instances[0]["InstanceId"])
    undo = stack.push(
        f"terminate instance {instance_id}",
        lambda: terminate_instances(
            clients, [instance_id], timeout=settings.timeout, poll_interval=settings.poll_interval
        ),
    )
    return instance_id, undo


# -- deleting (idempotent: what is already gone is fine) ---------------------------------------------------


def terminate_instances(
    clients: AwsClients, instance_ids: list[str], *, timeout: float, poll_interval: float
) -> None:
    if not instance_ids:
        return
    with aws_errors(f"terminating {', '.join(instance_ids)}"):
        try:
            clients.ec2.terminate_instances(InstanceIds=instance_ids)
        except Exception as exc:
            if is_not_found(exc):
                return
            raise
    wait(
        clients.ec2, "instance_terminated", timeout=timeout, poll_interval=poll_interval,
        what=f"waiting for {', '.join(instance_ids)} to terminate", InstanceIds=instance_ids,
    )  # fmt: skip


def delete_security_group(
    clients: AwsClients, group_id: str, *, timeout: float, poll_interval: float
) -> None:
    """Delete a group; while instances that used it are still shutting down, EC2 says DependencyViolation."""
    _retry_dependency(
        lambda: clients.ec2.delete_security_group(GroupId=group_id),
        f"deleting security group {group_id}",
        timeout=timeout,
        poll_interval=poll_interval,
    )


def delete_key_pair(clients: AwsClients, name: str) -> None:
    with aws_errors(f"deleting key pair {name}"):
        try:
            clients.ec2.delete_key_pair(KeyName=name)
        except Exception as exc:
            if not is_not_found(exc):
                raise


def delete_object(clients: AwsClients, bucket: str, key: str) -> None:
    with aws_errors(f"deleting s3://{bucket}/{key}"):
        try:
            clients.s3.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if not is_not_found(exc):
                raise


def delete_snapshot(clients: AwsClients, snapshot_id: str) -> None:
    with aws_errors(f"deleting snapshot {snapshot_id}"):
        try:
            clients.ec2.delete_snapshot(SnapshotId=snapshot_id)
        except Exception as exc:
            if not is_not_found(exc):
                raise


def _retry_dependency(call: Callable[[], Any], what: str, *, timeout: float, poll_interval: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with aws_errors(what):
                call()
            return
        except PlatformError as exc:
            cause = exc.__cause__
            if cause is not None and is_not_found(cause):
                return
            if cause is None or error_code(cause) != "DependencyViolation":
                raise
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"{what}: still in use after {timeout:.0f} s ({exc})") from exc
        time.sleep(max(poll_interval, 1.0))
