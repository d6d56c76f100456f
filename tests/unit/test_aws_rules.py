"""Pure rules of the AWS platform: tags, ages, AMI names, user-data sizing, pointer configs, error messages."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from harness.errors import ConfigError, PlatformError
from harness.ignition import validate
from platforms.aws.naming import (
    TAG_CREATED,
    TAG_RUN,
    TAG_TEST,
    ami_name_matches,
    ami_name_pattern,
    boot_mode_for,
    is_old,
    newest_image,
    run_tags,
    s3_tagging,
    tag_specifications,
    tag_value,
)
from platforms.aws.settings import check_ssh_cidr, settings_from
from platforms.aws.userdata import (
    USER_DATA_LIMIT,
    key_material,
    plan_user_data,
    pointer_config,
)
from platforms.base import FirstBootConfig
from platforms.cloud import iso_utc, parse_created

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def config_of_size(size: int) -> str:
    head = '{"ignition":{"version":"3.3.0"},"x":"'
    text = head + "a" * (size - len(head) - 2) + '"}'
    assert len(text.encode()) == size
    return text


def test_run_tags_carry_run_test_and_iso_time():
    tags = run_tags("20240501-120000-ab12", NOW, "suites/test_basic.py::test_ssh[aws-stable]", name="m1")
    assert tags == {
        TAG_RUN: "20240501-120000-ab12",
        TAG_CREATED: "2024-05-01T12:00:00Z",
        TAG_TEST: "suites/test_basic.py::test_ssh_aws-stable_",
        "Name": "m1",
    }
    assert TAG_TEST not in run_tags("r", NOW)


def test_tag_values_are_safe_and_short():
    assert tag_value("a" * 400) == "a" * 256
    assert tag_value("x[1]{y}") == "x_1__y_"
    assert tag_value("ok: a/b=c+d-e_f.g @h") == "ok: a/b=c+d-e_f.g @h"


def test_tag_specifications_for_each_resource_type():
    specs = tag_specifications({"a": "b"}, ["instance", "volume"])
    assert specs == [
        {"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "b"}]},
        {"ResourceType": "volume", "Tags": [{"Key": "a", "Value": "b"}]},
    ]
    assert s3_tagging({TAG_RUN: "r 1", TAG_CREATED: "2024-05-01T12:00:00Z"}) == (
        "railyard-run=r+1&railyard-created=2024-05-01T12%3A00%3A00Z"
    )


def test_created_times_parse_and_age():
    assert parse_created(iso_utc(NOW)) == NOW
    assert parse_created("2024-05-01T12:00:00") is None  # no zone: not comparable, left alone
    assert parse_created("yesterday") is None
    assert parse_created(None) is None
    old = {TAG_RUN: "r", TAG_CREATED: "2024-05-01T05:59:59Z"}
    young = {TAG_RUN: "r", TAG_CREATED: "2024-05-01T06:00:01Z"}
    assert is_old(old, NOW, 6 * 3600)
    assert not is_old(young, NOW, 6 * 3600)
    assert is_old(young, NOW, 0)
    assert not is_old({TAG_CREATED: "2000-01-01T00:00:00Z"}, NOW, 0), "no run tag: not ours"
    assert not is_old({TAG_RUN: "r"}, NOW, 0), "no creation time: never old"
    assert not is_old({TAG_RUN: "r", TAG_CREATED: "soon"}, NOW, 0)


def test_ami_name_patterns():
    assert ami_name_pattern("Flatcar-{channel}-{version}-hvm", "beta") == "Flatcar-beta-*-hvm"
    assert (
        ami_name_pattern("Flatcar-{channel}-{version}-hvm", "lts", "3510.3.2") == "Flatcar-lts-3510.3.2-hvm"
    )
    assert ami_name_pattern("fixed-name", "stable") == "fixed-name"
    with pytest.raises(ConfigError, match="only \\{channel\\} and \\{version\\}"):
        ami_name_pattern("x-{arch}", "stable")
    assert ami_name_matches("Flatcar-stable-*-hvm", "Flatcar-stable-3815.2.0-hvm")
    assert not ami_name_matches("Flatcar-stable-*-hvm", "Flatcar-beta-3815.2.0-hvm")
    assert not ami_name_matches("Flatcar-stable-*-hvm", "flatcar-stable-3815.2.0-hvm")
    assert ami_name_matches("img-?", "img-1")
    assert ami_name_matches("a[b]-*", "a[b]-1")


def test_newest_image_wins_by_creation_date():
    images = [
        {
            "ImageId": "ami-1",
            "Name": "Flatcar-stable-3000.0.0-hvm",
            "CreationDate": "2023-01-01T00:00:00.000Z",
        },
        {
            "ImageId": "ami-3",
            "Name": "Flatcar-stable-3815.2.0-hvm",
            "CreationDate": "2024-04-01T00:00:00.000Z",
        },
        {
            "ImageId": "ami-2",
            "Name": "Flatcar-stable-3700.0.0-hvm",
            "CreationDate": "2024-01-01T00:00:00.000Z",
        },
        {"ImageId": "ami-4", "Name": "Flatcar-beta-3900.0.0-hvm", "CreationDate": "2024-05-01T00:00:00.000Z"},
    ]
    assert newest_image(images, "Flatcar-stable-*-hvm")["ImageId"] == "ami-3"
    assert newest_image(images, "Flatcar-alpha-*-hvm") is None


def test_boot_mode_from_firmware():
    assert boot_mode_for(None) == "uefi"
    assert boot_mode_for("uefi") == "uefi"
    assert boot_mode_for("bios") == "legacy-bios"
    with pytest.raises(ConfigError, match="--aws-boot-mode"):
        boot_mode_for("coreboot")


def test_user_data_limit_is_16384_raw_bytes():
    assert plan_user_data(config_of_size(USER_DATA_LIMIT), None).inline
    with pytest.raises(
        ConfigError, match=r"16385 bytes, over EC2's user-data limit of 16384 bytes.*--aws-bucket"
    ):
        plan_user_data(config_of_size(USER_DATA_LIMIT + 1), None)
    plan = plan_user_data(config_of_size(USER_DATA_LIMIT + 1), "bucket")
    assert not plan.inline
    assert plan.size == USER_DATA_LIMIT + 1
    # Counted in bytes, not characters.
    multibyte = '{"ignition":{"version":"3.3.0"},"x":"' + "é" * 8200 + '"}'
    assert len(multibyte) < USER_DATA_LIMIT < len(multibyte.encode())
    with pytest.raises(ConfigError):
        plan_user_data(multibyte, None)


def test_pointer_config_replaces_itself_with_the_verified_config():
    config = config_of_size(20000).encode()
    url = "https://bucket.s3.amazonaws.com/railyard/ignition/m1.ign?X-Amz-Signature=abc"
    pointer = pointer_config(url, config, "3.3.0")
    parsed = validate(pointer, max_version="3.3.0", external=False)
    replace = parsed["ignition"]["config"]["replace"]
    assert replace["source"] == url
    assert replace["verification"]["hash"] == "sha512-" + hashlib.sha512(config).hexdigest()
    assert parsed["ignition"]["version"] == "3.3.0"
    with pytest.raises(ConfigError, match="pointer config"):
        pointer_config("https://x/" + "a" * USER_DATA_LIMIT, config, "3.3.0")


def test_ignition_version_and_keys():
    text = json.dumps(
        {
            "ignition": {"version": "3.4.0"},
            "passwd": {
                "users": [
                    {"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA1 a", "ssh-rsa BBBB b"]},
                    {"name": "x", "sshAuthorizedKeys": ["ssh-ed25519 AAAA1 a"]},
                ]
            },
        }
    )
    config = FirstBootConfig.parse(text)
    assert config.text == text
    assert config.version == "3.4.0"
    assert config.ssh_keys() == ["ssh-ed25519 AAAA1 a", "ssh-rsa BBBB b"]  # every user's, no repeats
    assert config.ssh_keys("x") == ["ssh-ed25519 AAAA1 a"]
    assert FirstBootConfig.parse('{"ignition": {"version": "3.3.0"}}').ssh_keys() == []
    assert key_material("ssh-ed25519 AAAA1 railyard@host") == b"ssh-ed25519 AAAA1"
    with pytest.raises(ConfigError):
        key_material("not a key")
    with pytest.raises(ConfigError, match=r"ignition.version"):
        FirstBootConfig.parse("{}")


def test_settings_defaults_and_checks(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    settings = settings_from({})
    assert settings.region == "eu-central-1"
    assert settings.ami_owner == "075585003325"
    assert settings.ami_name == "Flatcar-{channel}-{version}-hvm"
    assert settings.ssh_cidr is None
    assert settings_from({"aws_region": "us-west-2"}).region == "us-west-2"
    assert check_ssh_cidr("203.0.113.7") == "203.0.113.7/32"
    assert check_ssh_cidr("2001:db8::/64") == "2001:db8::/64"
    with pytest.raises(ConfigError, match="whole internet"):
        check_ssh_cidr("::/0")
    with pytest.raises(ConfigError, match="--aws-ssh-cidr"):
        settings.require_ssh_cidr()
    with pytest.raises(ConfigError, match="--aws-bucket"):
        settings.require_bucket("image upload")


def client_error(code: str, message: str = "m"):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("InstanceLimitExceeded", "quota or capacity exhausted"),
        ("VcpuLimitExceeded", "quota or capacity exhausted"),
        ("AuthFailure", "rejected the credentials.*AWS_PROFILE"),
        ("UnauthorizedOperation", "not allowed to do this"),
        ("InvalidAMIID.NotFound", "AWS error InvalidAMIID.NotFound: m"),
    ],
)
def test_aws_errors_say_what_to_do(code, expected):
    from platforms.aws.clients import aws_errors

    with pytest.raises(PlatformError, match=f"starting m1: .*{expected}"), aws_errors("starting m1"):
        raise client_error(code)


def test_missing_credentials_say_where_to_put_them():
    from botocore.exceptions import NoCredentialsError

    from platforms.aws.clients import aws_errors

    with pytest.raises(PlatformError, match=r"no usable AWS credentials.*AWS_ACCESS_KEY_ID"), aws_errors("x"):
        raise NoCredentialsError()


def test_other_errors_pass_through():
    from platforms.aws.clients import aws_errors

    with pytest.raises(KeyError), aws_errors("x"):
        raise KeyError("k")
