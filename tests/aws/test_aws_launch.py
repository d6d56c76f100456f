"""AwsPlatform.boot/destroy/close against moto_server: user data, tags, S3 pointer configs, cleanup."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import urllib.request

import pytest

from harness.errors import BootError, ConfigError, PlatformError
from harness.ignition import validate
from platforms.aws.naming import TAG_CREATED, TAG_RUN, TAG_TEST, tag_dict
from platforms.aws.userdata import USER_DATA_LIMIT
from platforms.cloud import parse_created
from tests.aws.conftest import BUCKET, RUN_ID, SSH_CIDR, SSH_KEY, ignition_json

BIG = USER_DATA_LIMIT + 1000


def user_data_of(aws, instance_id: str) -> bytes:
    attribute = aws.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attribute["UserData"]["Value"])


def record_calls(platform) -> list[str]:
    """Every EC2 and S3 operation the platform sends from now on, by name."""
    calls: list[str] = []

    def note(model, **kwargs):
        calls.append(model.name)

    platform.clients.ec2.meta.events.register("before-call.ec2.*", note)
    platform.clients.s3.meta.events.register("before-call.s3.*", note)
    return calls


def assert_nothing_left(aws, bucket: str | None = None) -> None:
    assert aws.live_instances() == []
    assert aws.our_groups() == []
    assert aws.key_pairs() == []
    if bucket:
        assert aws.objects(bucket) == []


def test_user_data_round_trips_exactly(aws, make_platform, make_spec):
    ami = aws.register_ami("railyard-stable-1.0.0")
    platform = make_platform()
    spec = make_spec()
    machine = platform.boot(spec)
    assert user_data_of(aws, machine.instance_id) == spec.ignition.text.encode()
    [instance] = aws.live_instances()
    assert instance["ImageId"] == ami
    assert instance["InstanceType"] == "t3.small"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert machine.ssh_endpoint.host == instance["PublicIpAddress"]
    assert (machine.ssh_endpoint.port, machine.ssh_endpoint.user) == (22, "core")


def test_security_group_lets_ssh_in_from_the_one_cidr_only(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    machine = make_platform().boot(make_spec())
    [group] = aws.our_groups()
    [instance] = aws.live_instances()
    [interface] = instance["NetworkInterfaces"]
    assert [g["GroupId"] for g in interface["Groups"]] == [group["GroupId"]]
    # From addresses: SSH from the one range only (the other rule lets the run's own machines in).
    [rule] = [r for r in group["IpPermissions"] if r.get("IpRanges") or r.get("Ipv6Ranges")]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == [SSH_CIDR]
    assert rule.get("Ipv6Ranges", []) == []
    # The key pair holds the run's public key, and the instance names it.
    [key_pair] = aws.key_pairs()
    assert instance["KeyName"] == key_pair["KeyName"]
    assert machine.instance_id == instance["InstanceId"]


def test_every_resource_is_tagged_with_run_test_and_time(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    machine = make_platform().boot(make_spec(test_id="suites/test_basic.py::test_ssh[aws]"))
    [instance] = aws.live_instances()
    volumes = aws.ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [machine.instance_id]}]
    )
    tagged = {
        "instance": tag_dict(instance["Tags"]),
        "security group": tag_dict(aws.our_groups()[0]["Tags"]),
        "key pair": tag_dict(aws.key_pairs()[0]["Tags"]),
        **{f"volume {v['VolumeId']}": tag_dict(v.get("Tags")) for v in volumes["Volumes"]},
    }
    assert len(tagged) >= 4, "the root volume is tagged too"
    for what, tags in tagged.items():
        assert tags[TAG_RUN] == RUN_ID, what
        created = parse_created(tags[TAG_CREATED])
        assert created is not None, what
        assert before <= created <= datetime.datetime.now(datetime.UTC), what
    assert tagged["instance"][TAG_TEST] == "suites/test_basic.py::test_ssh_aws_"
    assert tagged["instance"]["Name"] == "m1"


def test_big_config_goes_through_s3_with_a_pointer_in_user_data(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    aws.make_bucket()
    platform = make_platform(aws_bucket=BUCKET)
    spec = make_spec(ignition=ignition_json(padding=BIG))
    assert len(spec.ignition.text.encode()) > USER_DATA_LIMIT
    machine = platform.boot(spec)

    [key] = aws.objects()
    stored = aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored == spec.ignition.text.encode()
    assert tag_dict(aws.s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"])[TAG_RUN] == RUN_ID

    pointer = user_data_of(aws, machine.instance_id)
    assert len(pointer) < 2048
    parsed = validate(pointer, max_version="3.3.0")
    replace = parsed["ignition"]["config"]["replace"]
    assert replace["verification"]["hash"] == "sha512-" + hashlib.sha512(stored).hexdigest()
    # The presigned URL fetches exactly the stored config (from the local moto server).
    assert replace["source"].startswith(aws.url + "/")
    with urllib.request.urlopen(replace["source"], timeout=10) as response:
        assert response.read() == stored

    platform.destroy(machine)
    assert aws.objects() == []
    assert aws.live_instances() == []


def test_config_over_the_limit_without_a_bucket_is_refused_before_any_request(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    platform = make_platform()
    calls = record_calls(platform)
    spec = make_spec(ignition=ignition_json(padding=BIG))
    size = len(spec.ignition.text.encode())
    with pytest.raises(ConfigError, match=rf"{size} bytes.*16384.*--aws-bucket"):
        platform.boot(spec)
    assert calls == []
    assert_nothing_left(aws)


def test_failed_run_instances_leaves_nothing_behind(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    aws.make_bucket()
    # moto refuses an unknown instance type, as EC2 does: after the group, key pair and S3 object exist.
    platform = make_platform(aws_bucket=BUCKET, aws_instance_type="t9.imaginary")
    calls = record_calls(platform)
    with pytest.raises(PlatformError, match="InvalidInstanceType"):
        platform.boot(make_spec(ignition=ignition_json(padding=BIG)))
    assert {"CreateSecurityGroup", "ImportKeyPair", "PutObject", "RunInstances"} <= set(calls)
    assert_nothing_left(aws, BUCKET)


def test_failure_after_the_instance_started_terminates_it(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    aws.make_bucket()
    platform = make_platform(aws_bucket=BUCKET)
    failures = []

    def fail_once(**kwargs):
        if not failures:
            failures.append("DescribeInstances")
            raise RuntimeError("injected failure while waiting for the instance")

    platform.clients.ec2.meta.events.register("before-call.ec2.DescribeInstances", fail_once)
    with pytest.raises(RuntimeError, match="injected"):
        platform.boot(make_spec(ignition=ignition_json(padding=BIG)))
    assert failures
    assert_nothing_left(aws, BUCKET)
    assert platform.machines == []


def test_a_failed_boot_keeps_what_a_living_machine_uses(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    platform = make_platform()
    first = platform.boot(make_spec("m1"))

    def refuse(**kwargs):
        raise RuntimeError("injected RunInstances failure")

    platform.clients.ec2.meta.events.register("before-call.ec2.RunInstances", refuse)
    with pytest.raises(RuntimeError):
        platform.boot(make_spec("m2"))
    assert [i["InstanceId"] for i in aws.live_instances()] == [first.instance_id]
    assert len(aws.our_groups()) == 1
    assert len(aws.key_pairs()) == 1
    platform.close()
    assert_nothing_left(aws)


def test_close_deletes_everything_of_the_run(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    aws.make_bucket()
    platform = make_platform(aws_bucket=BUCKET)
    platform.boot(make_spec("m1"))
    platform.boot(make_spec("m2", ignition=ignition_json(padding=BIG)))
    assert len(aws.live_instances()) == 2
    assert len(aws.objects()) == 1
    assert len(aws.our_groups()) == 1, "one security group per run"
    assert len(aws.key_pairs()) == 1, "one key pair per run"
    platform.close()
    assert_nothing_left(aws, BUCKET)
    platform.close()  # twice is fine


def test_private_ip_mode_connects_to_the_private_address(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    machine = make_platform(aws_private_ip=True).boot(make_spec())
    [instance] = aws.live_instances()
    assert machine.ssh_endpoint.host == instance["PrivateIpAddress"]


def test_machines_of_a_run_share_a_subnet_and_reach_each_other(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    platform = make_platform()
    assert "private-network" in platform.machine_capabilities
    first, second = platform.boot(make_spec("m1")), platform.boot(make_spec("m2"))
    instances = {i["InstanceId"]: i for i in aws.live_instances()}
    assert len({i["SubnetId"] for i in instances.values()}) == 1, "one subnet per run"
    for machine in (first, second):
        assert machine.private_address == instances[machine.instance_id]["PrivateIpAddress"]
    assert first.private_address != second.private_address
    [group] = aws.our_groups()
    members = [r for r in group["IpPermissions"] if r["IpProtocol"] == "-1"]
    assert [pair["GroupId"] for r in members for pair in r["UserIdGroupPairs"]] == [group["GroupId"]]
    assert not [r for r in members if r.get("IpRanges")], "only the run's own machines, no address range"


def test_machine_power_and_console(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    platform = make_platform()
    machine = platform.boot(make_spec())
    assert machine.is_running()
    assert machine.console_path.read_text().strip()  # moto's canned console output, written to console.txt
    assert machine.console_path == machine.spec.workdir / "console.txt"
    assert "aws-instance.json" in machine.artifacts()
    assert json.loads(machine.artifacts()["aws-instance.json"])["instance_id"] == machine.instance_id
    machine.reset()
    assert machine.is_running()
    machine.poweroff(timeout=10)
    assert machine.state() == "stopped"
    assert not machine.is_running()
    machine.kill()
    machine.kill()
    assert aws.live_instances() == []
    platform.destroy(machine)
    assert aws.live_instances() == []


def test_no_hard_reset_capability_and_the_clouds_own_timeouts():
    from harness.acceleration import Acceleration
    from platforms.aws import AwsPlatform
    from platforms.base import CAP_HARD_RESET

    assert CAP_HARD_RESET not in AwsPlatform.machine_capabilities
    assert AwsPlatform.uses_local_image is False
    assert AwsPlatform.local is False
    # Not detected on the runner: a runner without KVM does not make cloud waits ten times longer.
    assert AwsPlatform.acceleration("auto").name == "cloud"
    timeouts = AwsPlatform.default_timeouts(AwsPlatform.acceleration("auto"), None)
    assert timeouts == AwsPlatform.default_timeouts(Acceleration("tcg", "runner"), None)
    assert AwsPlatform.default_timeouts(AwsPlatform.acceleration("auto"), 42.0).boot == 42.0


def test_ami_is_found_by_channel(aws, make_platform, make_spec):
    stable = aws.register_ami("railyard-stable-1.0.0")
    beta = aws.register_ami("railyard-beta-1.1.0")
    platform = make_platform()
    assert platform.boot(make_spec("s", channel="stable")).ami == stable
    assert platform.boot(make_spec("b", channel="beta")).ami == beta


def test_ami_version_narrows_the_search(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    wanted = aws.register_ami("railyard-stable-2.0.0")
    aws.register_ami("railyard-stable-3.0.0")
    platform = make_platform(aws_ami_name="railyard-{channel}-{version}", aws_ami_version="2.0.0")
    assert platform.boot(make_spec()).ami == wanted


def test_explicit_ami(aws, make_platform, make_spec):
    ami = aws.register_ami("some-other-name")
    machine = make_platform(aws_ami=ami).boot(make_spec())
    assert machine.ami == ami


def test_unknown_ami_is_a_config_error_and_creates_nothing(aws, make_platform, make_spec):
    platform = make_platform(aws_ami="ami-0123456789abcdef0")
    with pytest.raises(ConfigError, match=r"ami-0123456789abcdef0.*no such AMI"):
        platform.boot(make_spec())
    assert_nothing_left(aws)
    platform = make_platform()
    with pytest.raises(ConfigError, match="no x86_64 AMI named 'railyard-stable-\\*' owned by self"):
        platform.boot(make_spec())
    assert_nothing_left(aws)


def test_missing_region_is_a_config_error(aws, aws_options, monkeypatch, tmp_path):
    from platforms.aws import AwsPlatform
    from tests.aws.conftest import platform_context

    monkeypatch.delenv("AWS_DEFAULT_REGION")
    platform = AwsPlatform(platform_context({**aws_options, "aws_region": None}, tmp_path))
    with pytest.raises(ConfigError, match="no AWS region: pass --aws-region"):
        platform.validate()


def test_missing_ssh_cidr_is_a_config_error(aws, aws_options, tmp_path):
    from platforms.aws import AwsPlatform
    from tests.aws.conftest import platform_context

    platform = AwsPlatform(platform_context({**aws_options, "aws_ssh_cidr": None}, tmp_path))
    with pytest.raises(ConfigError, match="--aws-ssh-cidr"):
        platform.validate()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("aws_ssh_cidr", "0.0.0.0/0", "whole internet"),
        ("aws_ssh_cidr", "not-a-cidr", "not an address range"),
        ("aws_ami", "ubuntu", "not an AMI id"),
        ("aws_region", "Mars", "not a region"),
        ("aws_subnet", "my-subnet", "not a subnet id"),
        ("aws_endpoint_url", "ftp://x", "not an http"),
        ("aws_timeout", 0, "must be positive"),
    ],
)
def test_bad_options_are_refused_when_the_platform_is_made(
    aws, aws_options, tmp_path, option, value, message
):
    from platforms.aws import AwsPlatform
    from tests.aws.conftest import platform_context

    with pytest.raises(ConfigError, match=message):
        AwsPlatform(platform_context({**aws_options, option: value}, tmp_path))


def test_no_credentials_is_a_clear_error(no_credentials, tmp_path):
    from platforms.aws import AwsPlatform
    from tests.aws.conftest import platform_context

    options = {"aws_endpoint_url": no_credentials, "aws_region": "us-east-1", "aws_ssh_cidr": SSH_CIDR}
    platform = AwsPlatform(platform_context(options, tmp_path))
    with pytest.raises(ConfigError, match=r"no AWS credentials found.*AWS_PROFILE"):
        platform.validate()


def test_retries_use_botocore_standard_mode(aws, make_platform):
    platform = make_platform(aws_max_attempts=5)
    for client in (platform.clients.ec2, platform.clients.s3):
        assert client.meta.config.retries["mode"] == "standard"
        assert client.meta.config.retries["total_max_attempts"] == 5


def test_no_public_address_is_a_boot_error(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    platform = make_platform()

    def drop_public(parsed, **kwargs):
        for reservation in parsed.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                instance.pop("PublicIpAddress", None)

    platform.clients.ec2.meta.events.register("after-call.ec2.DescribeInstances", drop_public)
    with pytest.raises(BootError, match=r"no public address.*--aws-private-ip"):
        platform.boot(make_spec())
    assert_nothing_left(aws)


def test_ssh_key_is_never_written_to_artifacts(aws, make_platform, make_spec):
    aws.register_ami("railyard-stable-1.0.0")
    machine = make_platform().boot(make_spec())
    text = "".join(machine.artifacts().values()) + machine.access_hint()
    assert SSH_KEY.split()[1] not in text
