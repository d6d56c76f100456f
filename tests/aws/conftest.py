"""Fixtures of the AWS contract tests: a real `moto_server` per session (EC2 and S3 over HTTP on 127.0.0.1),
reset before every test, with fake credentials in the environment.

moto's instances have made-up addresses: these tests drive the platform directly and assert on what moto holds;
nothing here connects anywhere but the local server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.acceleration import Acceleration, Timeouts
from platforms.base import FirstBootConfig, MachineSpec, PlatformContext

REGION = "us-east-1"
SSH_CIDR = "198.51.100.7/32"


def _public_key_line() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return (
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        + " railyard"
    )


SSH_KEY = _public_key_line()
BUCKET = "railyard-test-bucket"
RUN_ID = "20240101-000000-abcd"
MOTO_ENV = {
    # Unknown AMIs and instance types are refused, as AWS does (any non-empty value turns these on).
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
}
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10) as response:
        response.read()


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]

    def reset(self) -> None:
        _post(f"{self.url}/moto-api/reset")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.skip(f"{binary} is missing: pip install 'moto[server]'")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    env = {**os.environ, **MOTO_ENV}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    server = MotoServer(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto_server exited ({process.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{server.url}/moto-api/data.json", timeout=2) as response:
                    response.read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"moto_server did not answer within {START_TIMEOUT:.0f} s:\n{log.read_text()}"
                    )
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Aws:
    """The fake account of one test: its endpoint and clients to look at what the platform made."""

    url: str
    ec2: Any
    s3: Any

    def register_ami(self, name: str) -> str:
        """An x86_64 AMI of this account named `name` (moto's RegisterImage keeps no architecture, so the AMI
        is made from an instance of one of moto's stock x86_64 images)."""
        stock = self.ec2.describe_images(
            Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}]
        )["Images"][0]["ImageId"]
        helper = self.ec2.run_instances(ImageId=stock, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        image_id = self.ec2.create_image(InstanceId=helper, Name=name)["ImageId"]
        self.ec2.terminate_instances(InstanceIds=[helper])
        return str(image_id)

    def make_bucket(self, name: str = BUCKET) -> str:
        self.s3.create_bucket(Bucket=name)
        return name

    def live_instances(self) -> list[dict[str, Any]]:
        reservations = self.ec2.describe_instances()["Reservations"]
        return [
            i
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down")
        ]

    def our_groups(self) -> list[dict[str, Any]]:
        return [
            g for g in self.ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
        ]

    def key_pairs(self) -> list[dict[str, Any]]:
        return list(self.ec2.describe_key_pairs()["KeyPairs"])

    def objects(self, bucket: str = BUCKET) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _clear_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    # No shared files of the person running the tests, and never ask an instance metadata service.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Aws:
    moto_server.reset()
    _clear_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    session = boto3.session.Session(region_name=REGION)
    s3_config = Config(s3={"addressing_style": "path"})
    return Aws(
        url=moto_server.url,
        ec2=session.client("ec2", endpoint_url=moto_server.url),
        s3=session.client("s3", endpoint_url=moto_server.url, config=s3_config),
    )


@pytest.fixture
def no_credentials(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """An environment with no AWS credentials anywhere; returns the endpoint URL."""
    _clear_aws_environment(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    return moto_server.url


@pytest.fixture
def aws_options(aws: Aws) -> dict[str, Any]:
    return {
        "aws_endpoint_url": aws.url,
        "aws_region": REGION,
        "aws_ssh_cidr": SSH_CIDR,
        "aws_ami_owner": "self",
        "aws_ami_name": "railyard-{channel}-*",
        "aws_instance_type": "t3.small",
        "aws_poll_interval": 0.0,
        "aws_timeout": 30.0,
        "aws_max_attempts": 2,
    }


def platform_context(options: dict[str, Any], output_dir: Path) -> PlatformContext:
    accel = Acceleration("kvm", "test")
    return PlatformContext(
        run_id=RUN_ID,
        output_dir=output_dir,
        accel=accel,
        timeouts=Timeouts.for_acceleration(accel),
        options=options,
    )


@pytest.fixture
def make_platform(aws_options: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    from platforms.aws import AwsPlatform

    made: list[AwsPlatform] = []

    def make(**overrides: Any) -> AwsPlatform:
        platform = AwsPlatform(platform_context({**aws_options, **overrides}, tmp_path))
        platform.validate()
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.close()


def ignition_json(padding: int = 0, key: str = SSH_KEY, version: str = "3.3.0") -> str:
    """An Ignition config with the test key; `padding` bytes of file contents make it as big as needed."""
    config: dict[str, Any] = {
        "ignition": {"version": version},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [key]}]},
    }
    if padding:
        config["storage"] = {
            "files": [
                {
                    "path": "/etc/railyard-padding",
                    "mode": 420,
                    "contents": {"source": "data:," + "a" * padding},
                }
            ]
        }
    return json.dumps(config, indent=2)


@pytest.fixture
def make_spec(tmp_path: Path) -> Any:
    def make(
        name: str = "m1", ignition: str | None = None, channel: str = "stable", test_id: str = ""
    ) -> MachineSpec:
        return MachineSpec(
            name=name,
            image=Path(),
            ignition=FirstBootConfig.parse(ignition if ignition is not None else ignition_json()),
            ignition_fw_cfg="opt/org.flatcar-linux/config",
            workdir=tmp_path / name,
            channel=channel,
            test_id=test_id or f"suites/test_basic.py::test_{name}[aws]",
        )

    return make
