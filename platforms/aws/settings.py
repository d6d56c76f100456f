"""The options of the AWS platform and the settings they make, checked before any request is sent."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from harness.errors import ConfigError

# Flatcar's own AWS account publishes its AMIs; the plugin boots Flatcar on clouds unless told otherwise.
FLATCAR_OWNER = "075585003325"
DEFAULT_AMI_NAME = "Flatcar-{channel}-{version}-hvm"
DEFAULT_INSTANCE_TYPE = "t3.small"
DEFAULT_ARCHITECTURE = "x86_64"
DEFAULT_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_MAX_ATTEMPTS = 8
BOOT_MODES = ("uefi", "legacy-bios", "uefi-preferred")
ARCHITECTURES = ("x86_64", "arm64")

AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def add_options(group: argparse._ArgumentGroup | Any) -> None:
    # A pytest OptionGroup has `addoption`; a plain argparse group has `add_argument`.
    add = getattr(group, "addoption", None) or group.add_argument
    add(
        "--aws-region", dest="aws_region", default=None, metavar="REGION",
        help="AWS region, e.g. eu-central-1 (default: the profile's or $AWS_REGION / $AWS_DEFAULT_REGION)",
    )  # fmt: skip
    add(
        "--aws-profile", dest="aws_profile", default=None, metavar="NAME",
        help="named profile of ~/.aws/config to take credentials from (default: boto3's usual chain)",
    )  # fmt: skip
    add(
        "--aws-endpoint-url", dest="aws_endpoint_url", default=None, metavar="URL",
        help="send EC2 and S3 requests to this endpoint instead of AWS's (S3-compatible or private endpoints)",
    )  # fmt: skip
    add(
        "--aws-ami", dest="aws_ami", default=None, metavar="AMI_ID",
        help="boot this AMI (default: the newest AMI matching --aws-ami-owner and --aws-ami-name)",
    )  # fmt: skip
    add(
        "--aws-ami-owner", dest="aws_ami_owner", default=FLATCAR_OWNER, metavar="ACCOUNT",
        help=f"owner of the AMIs to search: an account id or 'self' (default: {FLATCAR_OWNER}, Flatcar's)",
    )  # fmt: skip
    add(
        "--aws-ami-name", dest="aws_ami_name", default=DEFAULT_AMI_NAME, metavar="PATTERN",
        help="AMI name pattern ('*' and '?' wildcards; {channel} and {version} are replaced) "
        f"(default: {DEFAULT_AMI_NAME}; images of 'railyard image upload' match 'railyard-{{channel}}-*')",
    )  # fmt: skip
    add(
        "--aws-ami-version", dest="aws_ami_version", default="*", metavar="VERSION",
        help="the {version} of --aws-ami-name (default: '*', any: the newest wins)",
    )  # fmt: skip
    add(
        "--aws-architecture", dest="aws_architecture", choices=ARCHITECTURES, default=DEFAULT_ARCHITECTURE,
        help=f"CPU architecture of the AMI (default: {DEFAULT_ARCHITECTURE})",
    )  # fmt: skip
    add(
        "--aws-instance-type", dest="aws_instance_type", default=DEFAULT_INSTANCE_TYPE, metavar="TYPE",
        help=f"EC2 instance type (default: {DEFAULT_INSTANCE_TYPE})",
    )  # fmt: skip
    add(
        "--aws-subnet", dest="aws_subnet", default=None, metavar="SUBNET_ID",
        help="subnet of the machines (default: a subnet of the region's default VPC)",
    )  # fmt: skip
    add(
        "--aws-ssh-cidr", dest="aws_ssh_cidr", default=None, metavar="CIDR",
        help="the one address range allowed to reach SSH (port 22) of the machines, e.g. 203.0.113.7/32 "
        "(required to boot)",
    )  # fmt: skip
    add(
        "--aws-private-ip", dest="aws_private_ip", action="store_true", default=False,
        help="give machines no public address and connect to their private one (the runner must reach "
        "the subnet)",
    )  # fmt: skip
    add(
        "--aws-bucket", dest="aws_bucket", default=None, metavar="BUCKET",
        help="S3 bucket (in the same region) for Ignition configs over EC2's 16 KiB user-data limit and for "
        "'railyard image upload'",
    )  # fmt: skip
    add(
        "--aws-timeout", dest="aws_timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="how long one AWS wait may take: instance running, stopped, terminated; snapshot import "
        f"(default: {DEFAULT_TIMEOUT:.0f})",
    )  # fmt: skip
    add(
        "--aws-poll-interval", dest="aws_poll_interval", type=float, default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS", help=f"seconds between polls of a wait (default: {DEFAULT_POLL_INTERVAL:.0f})",
    )  # fmt: skip
    add(
        "--aws-max-attempts", dest="aws_max_attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
        help="attempts per request when AWS throttles or fails transiently, with exponential backoff "
        f"(default: {DEFAULT_MAX_ATTEMPTS})",
    )  # fmt: skip
    add(
        "--aws-boot-mode", dest="aws_boot_mode", choices=BOOT_MODES, default=None,
        help="boot mode of an uploaded image (default: the image metadata's firmware, else uefi)",
    )  # fmt: skip
    add(
        "--aws-import-role", dest="aws_import_role", default=None, metavar="ROLE",
        help="IAM role the snapshot import uses to read the bucket (default: AWS's 'vmimport')",
    )  # fmt: skip


@dataclass(frozen=True)
class AwsSettings:
    region: str | None
    profile: str | None = None
    endpoint_url: str | None = None
    ami: str | None = None
    ami_owner: str = FLATCAR_OWNER
    ami_name: str = DEFAULT_AMI_NAME
    ami_version: str = "*"
    architecture: str = DEFAULT_ARCHITECTURE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    subnet: str | None = None
    ssh_cidr: str | None = None
    private_ip: bool = False
    bucket: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    boot_mode: str | None = None
    import_role: str | None = None

    def require_region(self) -> str:
        if not self.region:
            raise ConfigError(
                "no AWS region: pass --aws-region (e.g. --aws-region=eu-central-1), set AWS_REGION, "
                "or set a region in the profile"
            )
        return self.region

    def require_bucket(self, why: str) -> str:
        if not self.bucket:
            raise ConfigError(
                f"{why} needs an S3 bucket: pass --aws-bucket=NAME (a bucket in the same region)"
            )
        return self.bucket

    def require_ssh_cidr(self) -> str:
        if not self.ssh_cidr:
            raise ConfigError(
                "no --aws-ssh-cidr: say which addresses may reach SSH of the machines, e.g. your public "
                "address as --aws-ssh-cidr=203.0.113.7/32 (with --aws-private-ip, the runner's private range)"
            )
        return self.ssh_cidr


def settings_from(options: Mapping[str, Any]) -> AwsSettings:
    """Settings from the options (pytest or `railyard` CLI), with the region from the environment if absent.
    Checks every value that can be checked without a request; raises ConfigError."""

    def get(name: str, default: Any = None) -> Any:
        value = options.get(name)
        return default if value is None else value

    region = get("aws_region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    settings = AwsSettings(
        region=region,
        profile=get("aws_profile"),
        endpoint_url=get("aws_endpoint_url"),
        ami=get("aws_ami"),
        ami_owner=str(get("aws_ami_owner", FLATCAR_OWNER)),
        ami_name=str(get("aws_ami_name", DEFAULT_AMI_NAME)),
        ami_version=str(get("aws_ami_version", "*")),
        architecture=str(get("aws_architecture", DEFAULT_ARCHITECTURE)),
        instance_type=str(get("aws_instance_type", DEFAULT_INSTANCE_TYPE)),
        subnet=get("aws_subnet"),
        ssh_cidr=check_ssh_cidr(get("aws_ssh_cidr")),
        private_ip=bool(get("aws_private_ip", False)),
        bucket=get("aws_bucket"),
        timeout=float(get("aws_timeout", DEFAULT_TIMEOUT)),
        poll_interval=float(get("aws_poll_interval", DEFAULT_POLL_INTERVAL)),
        max_attempts=int(get("aws_max_attempts", DEFAULT_MAX_ATTEMPTS)),
        boot_mode=get("aws_boot_mode"),
        import_role=get("aws_import_role"),
    )
    _check(settings)
    return settings


def _check(s: AwsSettings) -> None:
    if s.region is not None and not REGION.fullmatch(s.region):
        raise ConfigError(f"--aws-region={s.region!r} is not a region name (e.g. eu-central-1, us-east-1)")
    if s.ami is not None and not AMI_ID.fullmatch(s.ami):
        raise ConfigError(f"--aws-ami={s.ami!r} is not an AMI id (ami- and 8 or 17 hex digits)")
    if s.subnet is not None and not SUBNET_ID.fullmatch(s.subnet):
        raise ConfigError(f"--aws-subnet={s.subnet!r} is not a subnet id (subnet- and 8 or 17 hex digits)")
    if s.bucket is not None and not BUCKET.fullmatch(s.bucket):
        raise ConfigError(f"--aws-bucket={s.bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
    if s.endpoint_url is not None:
        url = urlparse(s.endpoint_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"--aws-endpoint-url={s.endpoint_url!r} is not an http(s) URL")
    if not s.ami_name.strip():
        raise ConfigError("--aws-ami-name is empty: give a name pattern such as 'Flatcar-{channel}-*-hvm'")
    if s.architecture not in ARCHITECTURES:
        raise ConfigError(f"--aws-architecture={s.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    if s.boot_mode is not None and s.boot_mode not in BOOT_MODES:
        raise ConfigError(f"--aws-boot-mode={s.boot_mode!r}: choose one of {', '.join(BOOT_MODES)}")
    if s.timeout <= 0:
        raise ConfigError(f"--aws-timeout must be positive, not {s.timeout}")
    if s.poll_interval < 0:
        raise ConfigError(f"--aws-poll-interval must not be negative, not {s.poll_interval}")
    if s.max_attempts < 1:
        raise ConfigError(f"--aws-max-attempts must be at least 1, not {s.max_attempts}")
    if not s.instance_type or not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", s.instance_type):
        raise ConfigError(f"--aws-instance-type={s.instance_type!r} is not an instance type (e.g. t3.small)")


def check_ssh_cidr(value: str | None) -> str | None:
    """The CIDR in its normal form; refuses malformed ranges and ranges that open SSH to everyone."""
    if value is None:
        return None
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ConfigError(f"--aws-ssh-cidr={value!r} is not an address range (e.g. 203.0.113.7/32)") from exc
    if net.prefixlen == 0:
        raise ConfigError(
            f"--aws-ssh-cidr={value!r} opens SSH to the whole internet: give the runner's own address, "
            "e.g. 203.0.113.7/32"
        )
    return str(net)
