"""Merging Ignition configs as Ignition merges ``ignition.config.merge`` children (no VM)."""

from __future__ import annotations

import copy

import pytest

from harness.errors import ConfigError
from harness.ignition import IgnitionConfig, merge, validate

V = {"ignition": {"version": "3.3.0"}}


def cfg(**sections):
    return {**copy.deepcopy(V), **sections}


def test_base_user_and_test_user_combine_keys():
    base = (
        IgnitionConfig()
        .add_user("core", ssh_keys=["ssh-ed25519 AAAA run-key"])
        .add_unit("update-engine.service", mask=True)
    )
    test = IgnitionConfig().add_user("core", ssh_keys=["ssh-ed25519 BBBB test-key"], groups=["docker"])
    out = merge(base.to_dict(), test.to_dict())
    assert out["passwd"]["users"] == [
        {
            "name": "core",
            "sshAuthorizedKeys": ["ssh-ed25519 AAAA run-key", "ssh-ed25519 BBBB test-key"],
            "groups": ["docker"],
        }
    ]
    assert out["systemd"]["units"] == [{"name": "update-engine.service", "mask": True}]
    validate(out)


def test_same_key_in_both_is_not_duplicated():
    a = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k1", "k2"]}]})
    b = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k2", "k3"]}]})
    assert merge(a, b)["passwd"]["users"][0]["sshAuthorizedKeys"] == ["k1", "k2", "k3"]


def test_child_scalars_override_and_null_keeps_parent():
    a = cfg(passwd={"users": [{"name": "core", "shell": "/bin/bash", "uid": 500}]})
    b = cfg(passwd={"users": [{"name": "core", "shell": "/bin/zsh", "uid": None}, {"name": "other"}]})
    users = merge(a, b)["passwd"]["users"]
    assert users == [{"name": "core", "shell": "/bin/zsh", "uid": 500}, {"name": "other"}]


def test_files_merge_by_path_with_nested_fields():
    a = cfg(
        storage={"files": [{"path": "/a", "mode": 420, "contents": {"source": "data:,1"}}, {"path": "/b"}]}
    )
    b = cfg(storage={"files": [{"path": "/a", "contents": {"source": "data:,2"}}, {"path": "/c"}]})
    assert merge(a, b)["storage"]["files"] == [
        {"path": "/a", "mode": 420, "contents": {"source": "data:,2"}},
        {"path": "/b"},
        {"path": "/c"},
    ]


def test_file_in_child_replaces_link_in_parent_at_same_path():
    a = cfg(storage={"links": [{"path": "/etc/x", "target": "/y"}, {"path": "/etc/keep", "target": "/z"}]})
    b = cfg(storage={"files": [{"path": "/etc/x", "contents": {"source": "data:,f"}}]})
    out = merge(a, b)
    assert out["storage"]["links"] == [{"path": "/etc/keep", "target": "/z"}]
    assert out["storage"]["files"] == [{"path": "/etc/x", "contents": {"source": "data:,f"}}]
    validate(out)


def test_directory_in_child_replaces_file_in_parent():
    a = cfg(storage={"files": [{"path": "/d"}]})
    b = cfg(storage={"directories": [{"path": "/d", "mode": 493}]})
    out = merge(a, b)
    assert out["storage"] == {"files": [], "directories": [{"path": "/d", "mode": 493}]}


def test_append_lists_are_concatenated():
    a = cfg(storage={"files": [{"path": "/f", "append": [{"source": "data:,1"}]}]})
    b = cfg(storage={"files": [{"path": "/f", "append": [{"source": "data:,1"}, {"source": "data:,2"}]}]})
    assert merge(a, b)["storage"]["files"][0]["append"] == [
        {"source": "data:,1"},
        {"source": "data:,1"},
        {"source": "data:,2"},
    ]


def test_units_and_dropins_merge_by_name():
    a = cfg(
        systemd={
            "units": [
                {"name": "a.service", "enabled": True, "dropins": [{"name": "1.conf", "contents": "x"}]},
                {"name": "b.service", "mask": True},
            ]
        }
    )
    b = cfg(
        systemd={
            "units": [
                {"name": "a.service", "dropins": [{"name": "1.conf", "contents": "y"}, {"name": "2.conf"}]},
                {"name": "c.timer", "enabled": False},
            ]
        }
    )
    assert merge(a, b)["systemd"]["units"] == [
        {
            "name": "a.service",
            "enabled": True,
            "dropins": [{"name": "1.conf", "contents": "y"}, {"name": "2.conf"}],
        },
        {"name": "b.service", "mask": True},
        {"name": "c.timer", "enabled": False},
    ]


def test_disks_partitions_filesystems():
    a = cfg(
        storage={
            "disks": [
                {
                    "device": "/dev/vdb",
                    "partitions": [{"number": 1, "sizeMiB": 10}, {"label": "data", "sizeMiB": 5}],
                }
            ],
            "filesystems": [{"device": "/dev/vdb1", "format": "ext4", "options": ["-F"]}],
        }
    )
    b = cfg(
        storage={
            "disks": [
                {
                    "device": "/dev/vdb",
                    "wipeTable": True,
                    "partitions": [{"number": 1, "sizeMiB": 20}, {"label": "data", "startMiB": 1}],
                }
            ],
            "filesystems": [{"device": "/dev/vdb1", "label": "x", "options": ["-F"]}],
        }
    )
    out = merge(a, b)["storage"]
    assert out["disks"] == [
        {
            "device": "/dev/vdb",
            "partitions": [{"number": 1, "sizeMiB": 20}, {"label": "data", "sizeMiB": 5, "startMiB": 1}],
            "wipeTable": True,
        }
    ]
    assert out["filesystems"] == [
        {"device": "/dev/vdb1", "format": "ext4", "options": ["-F", "-F"], "label": "x"}
    ]


def test_kernel_arguments_share_one_key_space():
    a = cfg(kernelArguments={"shouldExist": ["quiet", "a=1"], "shouldNotExist": ["b"]})
    b = cfg(kernelArguments={"shouldNotExist": ["quiet"], "shouldExist": ["b", "c"]})
    assert merge(a, b)["kernelArguments"] == {"shouldExist": ["a=1", "b", "c"], "shouldNotExist": ["quiet"]}


def test_http_header_without_value_removes_parent_header():
    res_a = {
        "source": "https://h/c.ign",
        "httpHeaders": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    }
    res_b = {"source": "https://h/c.ign", "httpHeaders": [{"name": "A"}, {"name": "B", "value": "3"}]}
    a = {"ignition": {"version": "3.3.0", "config": {"merge": [res_a]}}}
    b = {"ignition": {"version": "3.3.0", "config": {"merge": [res_b]}}}
    out = merge(a, b)
    assert out["ignition"]["config"]["merge"] == [
        {"source": "https://h/c.ign", "httpHeaders": [{"name": "B", "value": "3"}]}
    ]


def test_version_is_the_higher_one():
    assert merge({"ignition": {"version": "3.4.0"}}, V)["ignition"]["version"] == "3.4.0"
    assert merge(V, {"ignition": {"version": "3.4.0"}})["ignition"]["version"] == "3.4.0"
    assert merge(V, {"storage": {}})["ignition"]["version"] == "3.3.0"


def test_inputs_are_not_modified():
    a = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k1"]}]})
    b = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k2"]}]})
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    out = merge(a, b)
    out["passwd"]["users"][0]["sshAuthorizedKeys"].append("k3")
    assert (a, b) == (a0, b0)


def test_merge_rejects_non_objects():
    with pytest.raises(ConfigError, match="child config must be a JSON object"):
        merge(V, [])  # type: ignore[arg-type]
