"""Fixtures of the Azure contract tests: a fake ARM server per session, clean state and environment per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.acceleration import Acceleration, Timeouts
from platforms.base import FirstBootConfig, MachineSpec, PlatformContext
from tests.azure.fake_arm import CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, TENANT, FakeArm

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForContractTestsOnly0000000000000000 railyard"
SSH_CIDR = "198.51.100.7/32"


@pytest.fixture(scope="session")
def fake_arm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeArm]:
    server = FakeArm(tmp_path_factory.mktemp("fake-arm")).start()
    yield server
    server.stop()


@pytest.fixture
def fake_arm(fake_arm_server: FakeArm, monkeypatch: pytest.MonkeyPatch) -> FakeArm:
    fake_arm_server.reset()
    for name in ("AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_LOCATION", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_arm_server.ca_path))
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", fake_arm_server.url)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
    return fake_arm_server


@pytest.fixture
def azure_options(fake_arm: FakeArm) -> dict[str, Any]:
    return {
        "azure_arm_endpoint": fake_arm.url,
        "azure_location": "westeurope",
        "azure_ssh_cidr": SSH_CIDR,
        "azure_poll_interval": 0.0,
        "azure_operation_timeout": 30.0,
        "azure_storage_account": "railyardtest",
        "azure_blob_endpoint": fake_arm.blob_endpoint,
    }


@pytest.fixture
def make_platform(azure_options: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    from platforms.azure import AzurePlatform

    made: list[AzurePlatform] = []

    def make(**overrides: Any) -> AzurePlatform:
        accel = Acceleration("kvm", "test")
        ctx = PlatformContext(
            run_id="20240101-000000-abcd",
            output_dir=tmp_path,
            accel=accel,
            timeouts=Timeouts.for_acceleration(accel),
            options={**azure_options, **overrides},
        )
        platform = AzurePlatform(ctx)
        platform.validate()
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.close()


def ignition_json(extra_files: int = 0, user: str = "core", key: str = SSH_KEY) -> str:
    config: dict[str, Any] = {
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": user, "sshAuthorizedKeys": [key]}]},
    }
    if extra_files:
        config["storage"] = {
            "files": [
                {"path": f"/etc/f{i}", "contents": {"source": "data:," + "x" * 1000}}
                for i in range(extra_files)
            ]
        }
    return json.dumps(config, indent=2)


def machine_spec(
    tmp_path: Path, name: str = "basic-1", ignition: str | None = None, test_id: str = ""
) -> MachineSpec:
    return MachineSpec(
        name=name,
        image=Path(),
        ignition=FirstBootConfig.parse(ignition if ignition is not None else ignition_json()),
        ignition_fw_cfg="opt/org.flatcar-linux/config",
        workdir=tmp_path / name,
        ssh_user="core",
        channel="stable",
        test_id=test_id or f"suites/test_basic.py::test_{name}",
    )
