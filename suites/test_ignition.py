"""Ignition applies files, directories, links, users, keys, units and dropins at first boot.

The whole config is given once for the module; one boot serves every test, which only read.
"""

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from harness.ignition import IgnitionConfig

BINARY = bytes(range(256)) * 4
ALICE_KEY = (
    Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    + " alice@railyard"
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
    assert module_machine.succeed("sudo cat /etc/railyard/hello.txt") == "hello from ignition\n"
    assert module_machine.succeed("stat -c %a /etc/railyard/hello.txt").strip() == "640"


def test_binary_file(module_machine):
    encoded = module_machine.succeed("sudo base64 -w0 /var/lib/railyard/blob.bin").strip()
    assert base64.b64decode(encoded) == BINARY
    assert module_machine.succeed("sudo stat -c %a /var/lib/railyard/blob.bin").strip() == "600"


def test_directory(module_machine):
    assert module_machine.succeed("sudo stat -c %F:%a /var/lib/railyard/empty").strip() == "directory:750"


def test_link(module_machine):
    assert module_machine.succeed("readlink /etc/railyard/hello-link").strip() == "/etc/railyard/hello.txt"


def test_user_and_key(module_machine):
    assert "sudo" in module_machine.succeed("id -Gn alice").split()
    keys = module_machine.succeed("sudo cat ~alice/.ssh/authorized_keys.d/ignition")
    assert ALICE_KEY.split()[1] in keys


def test_unit_enabled_running_with_dropin(module_machine):
    assert module_machine.succeed("systemctl is-enabled railyard-hello.service").strip() == "enabled"
    module_machine.wait_for_unit("railyard-hello.service")
    assert module_machine.succeed("cat /run/railyard-hello").strip() == "from-dropin"


def test_masked_unit(module_machine):
    assert module_machine.execute("systemctl is-enabled railyard-masked.service").stdout.strip() == "masked"


def test_butane_config(module_machine):
    assert module_machine.succeed("cat /etc/railyard/from-butane.conf") == "made=by-butane\n"
