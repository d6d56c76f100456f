"""Pure rules of the Azure platform: image references, names, tags, custom data, settings, VHD commands."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from platforms.azure.naming import (
    CUSTOM_DATA_MAX_BYTES,
    TAG_CREATED,
    TAG_MACHINE,
    TAG_RUN,
    TAG_TEST,
    ImageId,
    MachineNames,
    MarketplaceImage,
    custom_data,
    machine_tags,
    parse_image,
    resource_group_name,
    run_tags,
    vm_name,
)
from platforms.azure.settings import check_ssh_cidr, settings_from
from platforms.azure.vhd import MIB, aligned_size, vhd_commands
from platforms.base import FirstBootConfig
from platforms.cloud import parse_created


def test_marketplace_urn_with_channel():
    ref = parse_image("kinvolk:flatcar-container-linux-free:{channel}:latest", "beta")
    assert ref == MarketplaceImage("kinvolk", "flatcar-container-linux-free", "beta", "latest")
    assert ref.needs_plan
    assert not parse_image("Canonical:ubuntu-24_04-lts:server:latest", "").needs_plan


@pytest.mark.parametrize(
    "text",
    [
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/railyard-1",
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/gal/images/def",
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/gal/images/def/versions/1.0.0",
    ],
)
def test_image_ids(text):
    assert parse_image(text, "stable") == ImageId(text)


@pytest.mark.parametrize("text", ["kinvolk:flatcar", "a:b::d", "/subscriptions/s/whatever", "a:b:c:d:e"])
def test_bad_image_references(text):
    with pytest.raises(ConfigError, match="--azure-image"):
        parse_image(text, "stable")


def test_vm_names_are_valid_unique_and_bounded():
    assert vm_name("Test_Basic.1", "ab12") == "test-basic-1-ab12"
    long_a, long_b = "x" * 70 + "a", "x" * 70 + "b"
    name_a, name_b = vm_name(long_a, "ab12"), vm_name(long_b, "ab12")
    assert len(name_a) <= 64
    assert len(name_b) <= 64
    assert name_a != name_b
    assert vm_name("___", "ab12") == "machine-ab12"
    names = MachineNames("vm-1")
    assert (names.nic, names.public_ip, names.os_disk) == ("vm-1-nic", "vm-1-ip", "vm-1-osdisk")


def test_resource_group_name():
    assert resource_group_name("20240101-000000-abcd", "f00baa") == "railyard-20240101-000000-abcd-f00baa"
    assert len(resource_group_name("r" * 200, "x")) == 90


def test_tags():
    created = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    base = run_tags("run-1", created)
    assert base == {TAG_RUN: "run-1", TAG_CREATED: "2024-05-01T12:00:00Z"}
    tags = machine_tags(base, "m1", "t" * 300)
    assert tags[TAG_MACHINE] == "m1"
    assert len(tags[TAG_TEST]) == 256
    assert TAG_TEST not in machine_tags(base, "m1", "")
    assert parse_created("2024-05-01T12:00:00Z") == created
    assert parse_created("2024-05-01T12:00:00") is None
    assert parse_created("soon") is None
    assert parse_created(None) is None


def test_custom_data_limit_is_exact():
    fits = "x" * CUSTOM_DATA_MAX_BYTES
    assert base64.b64decode(custom_data(fits)).decode() == fits
    with pytest.raises(ConfigError, match="65536 bytes"):
        custom_data(fits + "y")


def test_ssh_keys_come_from_the_users_ignition_entry():
    config = {
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": "other", "sshAuthorizedKeys": ["k0"]},
                             {"name": "core", "sshAuthorizedKeys": ["k1", " "]}]},
    }  # fmt: skip
    assert FirstBootConfig.parse(json.dumps(config)).ssh_keys("core") == ["k1"]
    assert FirstBootConfig.parse('{"ignition": {"version": "3.4.0"}}').ssh_keys("core") == []
    with pytest.raises(ConfigError, match="not valid JSON"):
        FirstBootConfig.parse("{")


def test_settings(monkeypatch):
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    monkeypatch.delenv("AZURE_LOCATION", raising=False)
    with pytest.raises(ConfigError, match="AZURE_SUBSCRIPTION_ID"):
        settings_from({})
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub")
    with pytest.raises(ConfigError, match="--azure-location"):
        settings_from({})
    assert settings_from({}, need_location=False).subscription == "sub"
    with pytest.raises(ConfigError, match="https://"):
        settings_from({"azure_location": "x", "azure_arm_endpoint": "http://127.0.0.1:1"})
    settings = settings_from({"azure_location": "x", "azure_ssh_cidr": "203.0.113.7"})
    assert check_ssh_cidr(settings) == "203.0.113.7/32"
    with pytest.raises(ConfigError, match="everyone"):
        check_ssh_cidr(settings_from({"azure_location": "x", "azure_ssh_cidr": "0.0.0.0/0"}))
    with pytest.raises(ConfigError, match="--azure-storage-account"):
        _ = settings.blob_base
    assert settings_from({"azure_location": "x", "azure_storage_account": "acct"}).blob_base == (
        "https://acct.blob.core.windows.net"
    )


def test_vhd_commands():
    assert aligned_size(MIB) == MIB
    assert aligned_size(MIB + 1) == 2 * MIB
    src, out = Path("/i/disk.qcow2"), Path("/t/disk.vhd")
    assert vhd_commands(src, "qcow2", 2 * MIB, out) == [
        ["qemu-img", "convert", "-q", "-O", "vpc", "-o", "subformat=fixed,force_size", "-f", "qcow2",
         "/i/disk.qcow2", "/t/disk.vhd"],
    ]  # fmt: skip
    steps = vhd_commands(src, "qcow2", 2 * MIB + 512, out)
    assert steps[0][-2:] == ["/i/disk.qcow2", "/t/disk.vhd.raw"]
    assert steps[1] == ["qemu-img", "resize", "-q", "-f", "raw", "/t/disk.vhd.raw", str(3 * MIB)]
    assert steps[2][-4:] == ["-f", "raw", "/t/disk.vhd.raw", "/t/disk.vhd"]
