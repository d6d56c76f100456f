"""Launching and deleting machines through the real SDK and azure-identity against the fake ARM server."""

from __future__ import annotations

import base64
import datetime
import re
from urllib.parse import urlsplit

import pytest

from harness.errors import ConfigError, PlatformError
from platforms.azure.naming import TAG_CREATED, TAG_MACHINE, TAG_RUN, TAG_TEST
from tests.azure.conftest import SSH_CIDR, SSH_KEY, ignition_json, machine_spec
from tests.azure.fake_arm import CLIENT_SECRET, FakeArm

VM = "microsoft.compute/virtualmachines"
PER_MACHINE_TYPES = {
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Compute/disks",
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Network/publicIPAddresses",
}
SHARED_TYPES = {"Microsoft.Network/networkSecurityGroups", "Microsoft.Network/virtualNetworks"}


def vm_put(fake_arm: FakeArm):
    puts = fake_arm.find("PUT", r"/virtualMachines/[^/]+$")
    assert puts, "no VM was created"
    return puts[-1]


def types_in(fake_arm: FakeArm, group: str) -> set[str]:
    return {r["type"] for r in fake_arm.resources_in(group)}


def test_custom_data_round_trips_exactly(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    spec = machine_spec(tmp_path)
    platform.boot(spec)

    sent = vm_put(fake_arm).body["properties"]["osProfile"]["customData"]
    assert base64.b64decode(sent, validate=True).decode() == spec.ignition.text


def test_vm_request_shape(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    machine = platform.boot(machine_spec(tmp_path))

    body = vm_put(fake_arm).body
    assert vm_put(fake_arm).query["api-version"]
    props = body["properties"]
    assert body["location"] == "westeurope"
    assert props["hardwareProfile"]["vmSize"] == "Standard_D2s_v5"
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "kinvolk",
        "offer": "flatcar-container-linux-free",
        "sku": "stable",
        "version": "latest",
    }
    assert body["plan"] == {
        "name": "stable",
        "product": "flatcar-container-linux-free",
        "publisher": "kinvolk",
    }
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    profile = props["osProfile"]
    assert profile["adminUsername"] == "core"
    assert profile["computerName"] == machine.names.vm
    linux = profile["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [{"path": "/home/core/.ssh/authorized_keys", "keyData": SSH_KEY}]
    assert props["diagnosticsProfile"] == {"bootDiagnostics": {"enabled": True}}
    assert "adminPassword" not in profile


def test_too_large_ignition_fails_before_any_request(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    spec = machine_spec(tmp_path, ignition=ignition_json(extra_files=70))
    assert len(spec.ignition.text.encode()) > 65535

    with pytest.raises(ConfigError, match="65535 bytes of custom data"):
        platform.boot(spec)
    assert fake_arm.requests == []


def test_every_resource_is_tagged(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    spec = machine_spec(tmp_path, test_id="suites/test_basic.py::test_ping[stable]")
    platform.boot(spec)

    group = fake_arm.state.groups[platform.group_name.lower()]
    created = datetime.datetime.fromisoformat(group["tags"][TAG_CREATED].replace("Z", "+00:00"))
    assert group["tags"][TAG_RUN] == "20240101-000000-abcd"
    assert abs(datetime.datetime.now(datetime.UTC) - created) < datetime.timedelta(minutes=5)
    resources = fake_arm.resources_in(platform.group_name)
    assert {r["type"] for r in resources} == PER_MACHINE_TYPES | SHARED_TYPES
    for resource in resources:
        tags = resource.get("tags") or {}
        assert tags.get(TAG_RUN) == "20240101-000000-abcd", resource["type"]
        assert tags.get(TAG_CREATED) == group["tags"][TAG_CREATED], resource["type"]
        if resource["type"] in PER_MACHINE_TYPES:
            assert tags[TAG_TEST] == "suites/test_basic.py::test_ping[stable]", resource["type"]
            assert tags[TAG_MACHINE] == "basic-1"


def test_ssh_is_allowed_only_from_the_cidr(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    platform.boot(machine_spec(tmp_path))

    (nsg_put,) = fake_arm.find("PUT", r"/networkSecurityGroups/")
    rules = nsg_put.body["properties"]["securityRules"]
    allows = [r["properties"] for r in rules if r["properties"]["access"] == "Allow"]
    assert allows == [
        {
            "protocol": "Tcp",
            "access": "Allow",
            "direction": "Inbound",
            "priority": 100,
            "sourceAddressPrefix": SSH_CIDR,
            "sourcePortRange": "*",
            "destinationAddressPrefix": "*",
            "destinationPortRange": "22",
            "description": "SSH from the test runner",
        }
    ]
    (nic_put,) = fake_arm.find("PUT", r"/networkInterfaces/")
    assert nic_put.body["properties"]["networkSecurityGroup"]["id"].endswith(
        "/networkSecurityGroups/railyard-nsg"
    )


def test_ssh_cidr_is_required(make_platform):
    with pytest.raises(ConfigError, match="--azure-ssh-cidr"):
        make_platform(azure_ssh_cidr=None)
    with pytest.raises(ConfigError, match="opens SSH to everyone"):
        make_platform(azure_ssh_cidr="0.0.0.0/0")


def test_long_running_operations_are_polled(fake_arm, make_platform, tmp_path):
    fake_arm.state.in_progress_polls = 3
    platform = make_platform()
    platform.boot(machine_spec(tmp_path))

    put = vm_put(fake_arm)
    assert put.status == 201
    op_path = urlsplit(put.answer_headers["Azure-AsyncOperation"]).path
    polls = fake_arm.find("GET", "^" + re.escape(op_path) + "$")
    assert [r.answer["status"] for r in polls] == ["InProgress"] * 3 + ["Succeeded"]
    # Then the final GET of the VM itself, as ARM's protocol has it.
    final = fake_arm.find("GET", r"/virtualMachines/[^/]+$")
    assert final
    assert final[0].at > polls[-1].at


def test_operation_timeout_is_a_clear_error_and_cleans_up(fake_arm, make_platform, tmp_path):
    fake_arm.state.never_finish.add(VM)
    platform = make_platform(azure_operation_timeout=0.5)

    with pytest.raises(PlatformError, match=r"creating VM .* did not finish within"):
        platform.boot(machine_spec(tmp_path))
    assert types_in(fake_arm, platform.group_name) == SHARED_TYPES


def test_throttled_request_is_retried_after_retry_after(fake_arm, make_platform, tmp_path):
    fake_arm.throttle("PUT", "/virtualmachines/", times=1)
    platform = make_platform()
    platform.boot(machine_spec(tmp_path))

    puts = fake_arm.find("PUT", r"/virtualMachines/[^/]+$")
    assert [p.status for p in puts] == [429, 201]
    assert puts[1].at - puts[0].at >= 0.9  # Retry-After: 1 was honoured


def test_failed_vm_creation_leaves_nothing_behind(fake_arm, make_platform, tmp_path):
    fake_arm.state.faults[VM] = "fail"
    platform = make_platform()

    with pytest.raises(PlatformError, match="creating VM"):
        platform.boot(machine_spec(tmp_path))
    # The failed VM existed (in state Failed) with its disk, NIC and IP; all were deleted.
    assert fake_arm.find("DELETE", r"/virtualMachines/")
    assert types_in(fake_arm, platform.group_name) == SHARED_TYPES
    assert platform.machines == []
    platform.close()
    assert fake_arm.all_resources() == []
    assert fake_arm.state.groups == {}


def test_quota_error_is_clear_and_leaves_nothing_behind(fake_arm, make_platform, tmp_path):
    fake_arm.state.faults[VM] = "quota"
    platform = make_platform()

    with pytest.raises(PlatformError, match="quota") as info:
        platform.boot(machine_spec(tmp_path))
    assert "--azure-vm-size" in str(info.value)
    assert types_in(fake_arm, platform.group_name) == SHARED_TYPES
    platform.close()
    assert fake_arm.all_resources() == []


def test_bad_credentials_are_a_clear_error(fake_arm, make_platform, tmp_path):
    fake_arm.state.secret = "a-different-secret"
    platform = make_platform()

    with pytest.raises(PlatformError, match="credentials") as info:
        platform.boot(machine_spec(tmp_path))
    assert CLIENT_SECRET not in str(info.value)
    assert fake_arm.state.groups == {}


def test_console_log_lands_in_console_txt(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    machine = platform.boot(machine_spec(tmp_path))
    fake_arm.state.serial_logs[machine.names.vm] = "Flatcar Container Linux\nlogin: \n"

    assert machine.console_path == tmp_path / "basic-1" / "console.txt"
    assert machine.console_path.read_text() == "Flatcar Container Linux\nlogin: \n"
    fetches = fake_arm.find("GET", r"^/bootdiag/.*serialconsole")
    assert fetches[-1].query["sig"]

    fake_arm.state.serial_logs[machine.names.vm] += "reboot: Power down\n"
    platform.destroy(machine)  # the last log is kept before the VM goes
    assert (tmp_path / "basic-1" / "console.txt").read_text().endswith("reboot: Power down\n")


def test_destroy_deletes_the_machine_and_close_the_group(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    first = platform.boot(machine_spec(tmp_path, "one"))
    second = platform.boot(machine_spec(tmp_path, "two"))

    platform.destroy(first)
    (delete,) = fake_arm.find("DELETE", r"/virtualMachines/")
    assert delete.status == 202
    polls = fake_arm.find("GET", "^" + re.escape(urlsplit(delete.answer_headers["Location"]).path) + "$")
    assert [p.status for p in polls] == [202, 200]
    platform.destroy(first)  # idempotent
    names = {r["name"] for r in fake_arm.resources_in(platform.group_name)}
    assert not any(n.startswith(first.names.vm) for n in names)
    assert any(n.startswith(second.names.vm) for n in names)
    assert not first.is_running()

    platform.close()
    assert fake_arm.all_resources() == []
    assert fake_arm.state.groups == {}


def test_kept_machine_survives_close(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    machine = platform.boot(machine_spec(tmp_path))
    platform.release(machine)

    platform.close()
    assert fake_arm.state.groups
    assert types_in(fake_arm, platform.group_name) == PER_MACHINE_TYPES | SHARED_TYPES


def test_power_off_and_state(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    machine = platform.boot(machine_spec(tmp_path))
    assert machine.is_running()

    machine.poweroff(timeout=10)
    assert not machine.is_running()
    assert fake_arm.find("POST", r"/powerOff$")


def test_private_ip_mode_creates_no_public_ip(fake_arm, make_platform, tmp_path):
    platform = make_platform(azure_private_ip=True, azure_ssh_cidr=None)
    machine = platform.boot(machine_spec(tmp_path))

    assert machine.ssh_endpoint.host.startswith("10.77.0.")
    assert not fake_arm.find("PUT", r"/publicIPAddresses/")
    (nic_put,) = fake_arm.find("PUT", r"/networkInterfaces/")
    assert "publicIPAddress" not in nic_put.body["properties"]["ipConfigurations"][0]["properties"]


def test_machines_of_a_run_share_its_subnet(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    assert "private-network" in platform.machine_capabilities
    first = platform.boot(machine_spec(tmp_path, "m1"))
    second = platform.boot(machine_spec(tmp_path, "m2"))
    nics = fake_arm.find("PUT", r"/networkInterfaces/")
    subnets = {n.body["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"] for n in nics}
    assert len(subnets) == 1, "one subnet per run"
    addresses = [first.private_address, second.private_address]
    assert all(a and a.startswith("10.77.0.") for a in addresses)
    assert addresses[0] != addresses[1]
    assert first.private_address == first.launched.private_ip


def test_managed_image_id_needs_no_plan(fake_arm, make_platform, tmp_path):
    image_id = (
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/railyard-images/providers/"
        "Microsoft.Compute/images/railyard-stable-1.0"
    )
    platform = make_platform(azure_image=image_id)
    platform.boot(machine_spec(tmp_path))

    body = vm_put(fake_arm).body
    assert body["properties"]["storageProfile"]["imageReference"] == {"id": image_id}
    assert "plan" not in body


def test_ignition_without_key_still_gets_an_admin_key(fake_arm, make_platform, tmp_path):
    platform = make_platform()
    ignition = '{"ignition": {"version": "3.4.0"}}'
    platform.boot(machine_spec(tmp_path, ignition=ignition))

    keys = vm_put(fake_arm).body["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]
    assert len(keys) == 1
    assert keys[0]["keyData"].startswith("ssh-ed25519 ")
    assert keys[0]["keyData"] != SSH_KEY
