"""Ignition applies files, directories, links, users, keys, units and dropins at first boot.

The whole config is given once for the module; one boot serves every test, which only read.
"""

import base64

import pytest

from harness.ignition import IgnitionConfig
from harness.ssh_keys import user_keypair

BINARY = bytes(range(256)) * 4
ALICE_KEY = user_keypair("alice").public_line  # kept on this host: the same config on every run

# `openssl passwd -6 -salt railyard.salt railyard-pw`
CAROL_HASH = (
    "$6$railyard.salt$aqHO9uMqOlnPlAPfPbVdeQ0l/dmJ1MFt4amPQp8GLu8/i/godLrMquz0sjuJ.0TOlYiKE73J0TR38rB8a4GFA1"
)

CONFIG = (
    IgnitionConfig()
    .add_file("/etc/railyard/hello.txt", "hello from ignition\n", mode=0o640)
    .add_file("/var/lib/railyard/blob.bin", BINARY, mode=0o600)
    .add_directory("/var/lib/railyard/empty", mode=0o750)
    .add_link("/etc/railyard/hello-link", "/etc/railyard/hello.txt")
    .add_user("alice", ssh_keys=[ALICE_KEY], groups=["sudo"])
    .add_unit(
        "railyard-hello.service",
        contents=(
            "[Unit]\nDescription=Ignition test unit\n"
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironment=GREETING=unset\n"
            "ExecStart=/bin/sh -c 'echo \"$GREETING\" > /run/railyard-hello'\n"
            "[Install]\nWantedBy=multi-user.target\n"
        ),
        enabled=True,
        dropins={"10-greeting.conf": "[Service]\nEnvironment=GREETING=from-dropin\n"},
    )
    .add_unit("railyard-masked.service", mask=True)
    .add_unit(
        "railyard-off.service",
        contents=(
            "[Unit]\nDescription=Installed but not enabled\n"
            "[Service]\nType=oneshot\nExecStart=/bin/true\n"
            "[Install]\nWantedBy=multi-user.target\n"
        ),
        enabled=False,
    )
    .add_file("/etc/hostname", "railyard-ignited\n")
    .add_file("/etc/railyard/appended", "one\n")
    .add_file("/etc/railyard/appended", "two\n", append=True)
    .add_file("/etc/hosts", "10.9.8.7 railyard-peer\n", append=True)  # a file the image ships
    .add_file("/var/lib/railyard/alice-owned", "mine\n", mode=0o600, user="alice", group="alice")
    .add_link("/etc/railyard/hello-hard", "/etc/railyard/hello.txt", hard=True)
    .add_directory("/var/lib/railyard/alice-dir", mode=0o700, user="alice", group="alice")
    .merge(
        {
            "ignition": {"version": "3.3.0"},
            "passwd": {
                "groups": [{"name": "railyard-ops", "gid": 4321}],
                "users": [
                    {
                        "name": "carol",
                        "uid": 2345,
                        "gecos": "Carol Railyard",
                        "homeDir": "/var/lib/carol",
                        "shell": "/bin/sh",
                        "passwordHash": CAROL_HASH,
                        "groups": ["railyard-ops"],
                    }
                ],
            },
        }
    )
    .to_dict()
)

BUTANE = """
variant: fcos
version: 1.4.0
storage:
  files:
    - path: /etc/railyard/from-butane.conf
      mode: 0644
      contents:
        inline: |
          made=by-butane
"""

pytestmark = [pytest.mark.ignition(CONFIG), pytest.mark.butane(BUTANE)]


def test_file_contents_and_mode(module_machine):
    """kola: coreos.ignition.resource.local"""
    assert module_machine.succeed("sudo cat /etc/railyard/hello.txt") == "hello from ignition\n"
    assert module_machine.succeed("stat -c %a /etc/railyard/hello.txt").strip() == "640"


def test_binary_file(module_machine):
    encoded = module_machine.succeed("sudo base64 -w0 /var/lib/railyard/blob.bin").strip()
    assert base64.b64decode(encoded) == BINARY
    assert module_machine.succeed("sudo stat -c %a /var/lib/railyard/blob.bin").strip() == "600"


def test_directory(module_machine):
    assert module_machine.succeed("sudo stat -c %F:%a /var/lib/railyard/empty").strip() == "directory:750"


def test_link(module_machine):
    """kola: cl.ignition.symlink"""
    assert module_machine.succeed("readlink /etc/railyard/hello-link").strip() == "/etc/railyard/hello.txt"


def test_user_and_key(module_machine):
    assert "sudo" in module_machine.succeed("id -Gn alice").split()
    keys = module_machine.succeed("sudo cat ~alice/.ssh/authorized_keys.d/ignition")
    assert ALICE_KEY.split()[1] in keys


def test_unit_enabled_running_with_dropin(module_machine):
    """kola: coreos.ignition.systemd.enable-service"""
    assert module_machine.succeed("systemctl is-enabled railyard-hello.service").strip() == "enabled"
    module_machine.wait_for_unit("railyard-hello.service")
    assert module_machine.succeed("cat /run/railyard-hello").strip() == "from-dropin"


def test_masked_unit(module_machine):
    assert module_machine.execute("systemctl is-enabled railyard-masked.service").stdout.strip() == "masked"


def test_butane_config(module_machine):
    assert module_machine.succeed("cat /etc/railyard/from-butane.conf") == "made=by-butane\n"


def test_hostname(module_machine):
    """kola: coreos.ignition.sethostname"""
    assert module_machine.succeed("hostname").strip() == "railyard-ignited"
    assert module_machine.succeed("cat /etc/hostname").strip() == "railyard-ignited"


def test_group_with_a_fixed_gid_and_its_member(module_machine):
    """kola: coreos.ignition.groups"""
    name, _, gid, members = module_machine.succeed("getent group railyard-ops").strip().split(":")
    assert (name, gid) == ("railyard-ops", "4321")
    assert "carol" in members.split(",")


def test_user_with_uid_home_shell_and_password_hash(module_machine):
    """kola: cl.ignition.v2.users"""
    entry = module_machine.succeed("getent passwd carol").strip().split(":")
    assert entry == ["carol", "x", "2345", entry[3], "Carol Railyard", "/var/lib/carol", "/bin/sh"], entry
    assert module_machine.succeed("sudo stat -c %U:%F /var/lib/carol").strip() == "carol:directory"
    shadow = module_machine.succeed("sudo getent shadow carol").strip().split(":")
    assert shadow[1] == CAROL_HASH


def test_file_append(module_machine):
    assert module_machine.succeed("cat /etc/railyard/appended") == "one\ntwo\n"
    hosts = module_machine.succeed("cat /etc/hosts")
    assert hosts.endswith("10.9.8.7 railyard-peer\n")
    assert "localhost" in hosts, "appending kept what the image's /etc/hosts had"
    assert module_machine.succeed("getent hosts railyard-peer").split()[0] == "10.9.8.7"


def test_file_owned_by_a_user_ignition_created(module_machine):
    stat = module_machine.succeed("sudo stat -c %U:%G:%a /var/lib/railyard/alice-owned").strip()
    assert stat == "alice:alice:600"


def test_hard_link(module_machine):
    inode, links = module_machine.succeed("stat -c '%i %h' /etc/railyard/hello.txt").split()
    assert module_machine.succeed("stat -c %i /etc/railyard/hello-hard").strip() == inode
    assert links == "2"


def test_disabled_unit(module_machine):
    assert module_machine.execute("systemctl is-enabled railyard-off.service").stdout.strip() == "disabled"
    assert module_machine.execute("systemctl is-active railyard-off.service").stdout.strip() == "inactive"


def test_directory_owned_by_a_user_ignition_created(module_machine):
    stat = module_machine.succeed("sudo stat -c %U:%G:%a:%F /var/lib/railyard/alice-dir").strip()
    assert stat == "alice:alice:700:directory"
