"""Ignition fetches what a config points at from a server the test runs on the host: files checked against their
verification hash, and whole configs that are merged in or replace the one given. Each test boots its own
machine, because its config is made at run time around the server's address."""

import json

import pytest

from harness.errors import BootError
from harness.host_files import verification_hash

pytestmark = pytest.mark.requires("boot-host-services")

VERSION = {"version": "3.3.0"}
REMOTE_FILE = b"fetched by ignition\n" * 64


def _file(path, source, hash_=None):
    contents = {"source": source}
    if hash_ is not None:
        contents["verification"] = {"hash": hash_}
    return {"path": path, "mode": 0o644, "contents": contents}


def test_remote_files_and_a_merged_config(machine_factory, host_files):
    """kola: coreos.ignition.resource.remote, coreos.ignition.security.tls (config merge)"""
    blob = host_files.add("blob.txt", REMOTE_FILE)
    child = host_files.add(
        "child.ign",
        json.dumps(
            {"ignition": VERSION, "storage": {"files": [_file("/etc/railyard/merged", "data:,merged%0A")]}}
        ),
    )
    config = {
        "ignition": {
            **VERSION,
            "config": {"merge": [{"source": child.url, "verification": {"hash": child.sha512}}]},
        },
        "storage": {"files": [_file("/etc/railyard/remote.txt", blob.url, blob.sha512)]},
    }
    [machine] = machine_factory.create(ignition=config)
    assert machine.succeed("cat /etc/railyard/remote.txt").encode() == REMOTE_FILE
    assert machine.succeed("cat /etc/railyard/merged") == "merged\n"
    assert host_files.was_fetched(blob)
    assert host_files.was_fetched(child)


def test_a_replacing_config_is_the_one_applied(machine_factory, host_files):
    replacement = machine_factory.ignition_for(
        [
            {
                "ignition": VERSION,
                "storage": {"files": [_file("/etc/railyard/from-replacement", "data:,replaced%0A")]},
            }
        ]
    )  # the harness's own user and key included: the replacement is all the machine gets
    served = host_files.add("replacement.ign", json.dumps(replacement))
    config = {
        "ignition": {
            **VERSION,
            "config": {"replace": {"source": served.url, "verification": {"hash": served.sha512}}},
        },
        "storage": {"files": [_file("/etc/railyard/from-replaced", "data:,never%0A")]},
    }
    [machine] = machine_factory.create(ignition=config)
    assert machine.succeed("cat /etc/railyard/from-replacement") == "replaced\n"
    machine.fail("test -e /etc/railyard/from-replaced")


@pytest.mark.flags("no_console_check")  # the failure on the console is what this test expects
def test_a_remote_file_whose_hash_does_not_match_fails_the_first_boot(machine_factory, host_files):
    served = host_files.add("tampered.txt", b"what the server really has\n")
    config = {
        "ignition": VERSION,
        "storage": {
            "files": [
                _file(
                    "/etc/railyard/tampered.txt", served.url, verification_hash(b"what the config expects\n")
                )
            ]
        },
    }
    with pytest.raises(BootError) as failure:
        machine_factory.create(ignition=config)
    evidence = str(failure.value)
    assert "the boot failed for good" in evidence, evidence
    assert "/etc/railyard/tampered.txt" in evidence, "the console says which file Ignition refused"
    assert host_files.was_fetched(served)
