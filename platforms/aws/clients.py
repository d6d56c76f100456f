"""boto3 clients of the AWS platform, what their errors mean for a person, and bounded waits.

boto3 is imported here, when a client is made, never when the module is: the platform registers without it.
Credentials come from boto3's usual chain (environment, profile, SSO, instance role); Railyard takes none on its
command line. Throttling and transient failures are retried by botocore itself ("standard" retry mode:
exponential backoff with jitter, up to --aws-max-attempts).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, PlatformError, WaitTimeout
from platforms.aws.settings import AwsSettings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

QUOTA_CODES = frozenset(
    {
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "InsufficientInstanceCapacity",
        "SecurityGroupLimitExceeded",
        "RulesPerSecurityGroupLimitExceeded",
        "ResourceLimitExceeded",
        "KeyPairLimitExceeded",
        "VolumeLimitExceeded",
        "SnapshotLimitExceeded",
        "AddressLimitExceeded",
        "ResourceCountExceeded",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidAccessKeyId",
        "UnrecognizedClientException",
    }
)
PERMISSION_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Forbidden"})
NOT_FOUND_SUFFIXES = (".NotFound", ".Malformed", "NotFound", "NoSuchKey", "NoSuchBucket", "404")

CREDENTIALS_HINT = (
    "configure AWS credentials the usual way: AWS_PROFILE or --aws-profile (~/.aws/config, `aws sso login`), "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment, or an instance role"
)


@dataclass
class AwsClients:
    """The EC2 and S3 clients of one region, sharing one boto3 session."""

    ec2: EC2Client
    s3: S3Client
    region: str
    session: Any


def make_clients(settings: AwsSettings) -> AwsClients:
    """Clients for the settings' region and endpoint, with botocore's retries on throttling."""
    region = settings.require_region()
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ProfileNotFound
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(f"the AWS platform needs boto3 ({exc}): pip install 'railyard[aws]'") from exc
    try:
        session = boto3.session.Session(profile_name=settings.profile, region_name=region)
    except ProfileNotFound as exc:
        raise ConfigError(f"--aws-profile: {exc}; list profiles with `aws configure list-profiles`") from exc
    retries: Any = {"mode": "standard", "total_max_attempts": settings.max_attempts}
    common = {"retries": retries, "connect_timeout": 20, "read_timeout": 120, "user_agent_extra": "railyard"}
    ec2 = session.client("ec2", endpoint_url=settings.endpoint_url, config=Config(**common))
    # A custom endpoint (an S3-compatible store, a local test server) rarely resolves bucket subdomains.
    s3_config = Config(**common, s3={"addressing_style": "path" if settings.endpoint_url else "auto"})
    s3 = session.client("s3", endpoint_url=settings.endpoint_url, config=s3_config)
    return AwsClients(ec2=ec2, s3=s3, region=region, session=session)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return bool(code) and code.endswith(NOT_FOUND_SUFFIXES)


def translate(exc: BaseException, action: str) -> BaseException:
    """The Railyard error that says what went wrong in `action` and what to do, for a botocore error."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PlatformError(f"{action}: no usable AWS credentials ({exc}): {CREDENTIALS_HINT}")
    if isinstance(exc, NoRegionError):
        return ConfigError(f"{action}: no AWS region: pass --aws-region or set AWS_REGION")
    if isinstance(exc, EndpointConnectionError):
        return PlatformError(
            f"{action}: cannot reach the AWS endpoint ({exc}); check the network or --aws-endpoint-url"
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in QUOTA_CODES:
            return PlatformError(
                f"{action}: AWS quota or capacity exhausted ({code}: {message}); terminate leftovers "
                "(`railyard gc --platform=aws`), ask AWS for a higher quota, or use another "
                "--aws-instance-type or --aws-region"
            )
        if code in CREDENTIAL_CODES:
            return PlatformError(
                f"{action}: AWS rejected the credentials ({code}: {message}); {CREDENTIALS_HINT}"
            )
        if code in PERMISSION_CODES:
            return PlatformError(
                f"{action}: the AWS identity is not allowed to do this ({code}: {message}); grant the "
                "permission to the role or user, or use another profile"
            )
        return PlatformError(f"{action}: AWS error {code}: {message}")
    if isinstance(exc, BotoCoreError):
        return PlatformError(f"{action}: {exc}")
    return exc


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn botocore errors raised inside into PlatformError/ConfigError naming `action`."""
    try:
        yield
    except Exception as exc:
        if type(exc).__module__.startswith("botocore"):
            translated = translate(exc, action)
            if translated is not exc:
                raise translated from exc
        raise


def wait(
    client: EC2Client, waiter_name: str, *, timeout: float, poll_interval: float, what: str, **params: Any
) -> None:
    """Run a botocore waiter for at most about `timeout` seconds; WaitTimeout or PlatformError when it fails."""
    from botocore.exceptions import WaiterError

    delay = math.ceil(poll_interval) if poll_interval > 0 else 0
    attempts = max(2, math.ceil(timeout / max(delay, 1)) + 1)
    waiter: Any = client.get_waiter(waiter_name)  # type: ignore[call-overload]
    try:
        with aws_errors(what):
            waiter.wait(WaiterConfig={"Delay": delay, "MaxAttempts": attempts}, **params)
    except WaiterError as exc:
        if "Max attempts exceeded" in str(exc):
            raise WaitTimeout(
                f"{what}: not done within {timeout:.0f} s; raise --aws-timeout or look at the AWS console"
            ) from exc
        last = exc.last_response if isinstance(exc.last_response, dict) else {}
        if "Error" in last:
            raise PlatformError(
                f"{what}: {last['Error'].get('Code')}: {last['Error'].get('Message')}"
            ) from exc
        raise PlatformError(f"{what}: {exc}") from exc
