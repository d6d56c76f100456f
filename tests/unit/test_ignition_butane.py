"""Butane (fcos, flatcar) to Ignition translation (no VM)."""

from __future__ import annotations

import json
import textwrap

import pytest

from harness.errors import ConfigError
from harness.ignition import translate_butane, validate
from harness.ignition.dataurl import decode_resource


def bu(text: str, **kw):
    return translate_butane(textwrap.dedent(text), **kw)


FCOS_EXAMPLE = """\
variant: fcos
version: 1.4.0
ignition:
  config:
    merge:
      - inline: '{"ignition": {"version": "3.3.0"}}'
passwd:
  users:
    - name: core
      ssh_authorized_keys:
        - ssh-ed25519 AAAA key-one
      groups: [wheel, docker]
      password_hash: "$y$j9T$abc"
      shell: /bin/bash
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      overwrite: true
      contents:
        inline: railyard
    - path: /etc/remote
      contents:
        source: https://example.com/file
        verification:
          hash: sha512-{sha}
    - path: /etc/profile.d/extra.sh
      append:
        - inline: "export A=1\\n"
      user:
        name: core
      group:
        id: 0
  directories:
    - path: /var/lib/rail
      mode: 0750
  links:
    - path: /etc/localtime
      target: ../usr/share/zoneinfo/UTC
    - path: /etc/hard
      target: /etc/hostname
      hard: true
systemd:
  units:
    - name: hello.service
      enabled: true
      contents: |
        [Unit]
        Description=Hello
        [Service]
        ExecStart=/usr/bin/echo hello
        [Install]
        WantedBy=multi-user.target
      dropins:
        - name: 10-env.conf
          contents: |
            [Service]
            Environment=A=1
    - name: docker.service
      mask: true
kernel_arguments:
  should_exist: [quiet]
  should_not_exist: [mitigations=auto]
""".replace("{sha}", "a" * 128)


def test_fcos_example():
    out = bu(FCOS_EXAMPLE)
    assert out == {
        "ignition": {
            "version": "3.3.0",
            "config": {
                "merge": [{"source": "data:,%7B%22ignition%22:%20%7B%22version%22:%20%223.3.0%22%7D%7D"}]
            },
        },
        "passwd": {
            "users": [
                {
                    "name": "core",
                    "sshAuthorizedKeys": ["ssh-ed25519 AAAA key-one"],
                    "groups": ["wheel", "docker"],
                    "passwordHash": "$y$j9T$abc",
                    "shell": "/bin/bash",
                }
            ]
        },
        "storage": {
            "files": [
                {
                    "path": "/etc/hostname",
                    "mode": 420,
                    "overwrite": True,
                    "contents": {"source": "data:,railyard"},
                },
                {
                    "path": "/etc/remote",
                    "contents": {
                        "source": "https://example.com/file",
                        "verification": {"hash": "sha512-" + "a" * 128},
                    },
                },
                {
                    "path": "/etc/profile.d/extra.sh",
                    "append": [{"source": "data:,export%20A=1%0A"}],
                    "user": {"name": "core"},
                    "group": {"id": 0},
                },
            ],
            "directories": [{"path": "/var/lib/rail", "mode": 0o750}],
            "links": [
                {"path": "/etc/localtime", "target": "../usr/share/zoneinfo/UTC"},
                {"path": "/etc/hard", "target": "/etc/hostname", "hard": True},
            ],
        },
        "systemd": {
            "units": [
                {
                    "name": "hello.service",
                    "enabled": True,
                    "contents": "[Unit]\nDescription=Hello\n[Service]\nExecStart=/usr/bin/echo hello\n"
                    "[Install]\nWantedBy=multi-user.target\n",
                    "dropins": [{"name": "10-env.conf", "contents": "[Service]\nEnvironment=A=1\n"}],
                },
                {"name": "docker.service", "mask": True},
            ]
        },
        "kernelArguments": {"shouldExist": ["quiet"], "shouldNotExist": ["mitigations=auto"]},
    }
    validate(out)


@pytest.mark.parametrize(("version", "ign"), [("1.3.0", "3.2.0"), ("1.4.0", "3.3.0"), ("1.5.0", "3.4.0")])
def test_fcos_versions(version, ign):
    out = bu(f"variant: fcos\nversion: {version}\n")
    assert out == {"ignition": {"version": ign}}


@pytest.mark.parametrize(("version", "ign"), [("1.0.0", "3.3.0"), ("1.1.0", "3.4.0")])
def test_flatcar_versions(version, ign):
    out = bu(f"variant: flatcar\nversion: {version}\n")
    assert out == {"ignition": {"version": ign}}


def test_flatcar_example():
    out = bu(
        """
        variant: flatcar
        version: 1.0.0
        passwd:
          users:
            - name: core
              ssh_authorized_keys: ["ssh-ed25519 AAAA k"]
        storage:
          files:
            - path: /etc/flatcar/update.conf
              overwrite: true
              mode: 0420
              contents:
                inline: |
                  SERVER=disabled
                  REBOOT_STRATEGY=off
        systemd:
          units:
            - name: update-engine.service
              mask: true
            - name: locksmithd.service
              mask: true
        """
    )
    assert out == {
        "ignition": {"version": "3.3.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}]},
        "storage": {
            "files": [
                {
                    "path": "/etc/flatcar/update.conf",
                    "overwrite": True,
                    "mode": 0o420,
                    "contents": {"source": "data:,SERVER=disabled%0AREBOOT_STRATEGY=off%0A"},
                }
            ]
        },
        "systemd": {
            "units": [
                {"name": "update-engine.service", "mask": True},
                {"name": "locksmithd.service", "mask": True},
            ]
        },
    }
    validate(out)


def test_large_inline_is_gzipped_and_round_trips():
    text = "repeat me\n" * 1000
    out = bu(
        "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /big\n      contents:\n        inline: "
        + json.dumps(text)
        + "\n"
    )
    contents = out["storage"]["files"][0]["contents"]
    assert contents["compression"] == "gzip"
    assert decode_resource(contents) == text.encode()


def test_local_files(tmp_path):
    (tmp_path / "motd").write_text("from a file\n")
    (tmp_path / "blob").write_bytes(b"\xff\x00\xfe")
    (tmp_path / "keys").write_text("# comment\nssh-ed25519 AAAA a\n\nssh-ed25519 BBBB b\n")
    (tmp_path / "unit").write_text("[Service]\nExecStart=/bin/true\n")
    out = bu(
        """
        variant: fcos
        version: 1.5.0
        passwd:
          users:
            - name: core
              ssh_authorized_keys_local: [keys]
              ssh_authorized_keys: ["ssh-ed25519 CCCC c"]
        storage:
          files:
            - path: /etc/motd
              contents: {local: motd}
            - path: /opt/blob
              contents: {local: blob}
        systemd:
          units:
            - name: x.service
              contents_local: unit
        """,
        files_dir=tmp_path,
    )
    assert out["passwd"]["users"][0]["sshAuthorizedKeys"] == [
        "ssh-ed25519 CCCC c",
        "ssh-ed25519 AAAA a",
        "ssh-ed25519 BBBB b",
    ]
    files = out["storage"]["files"]
    assert files[0]["contents"] == {"source": "data:,from%20a%20file%0A"}
    assert files[1]["contents"]["source"].startswith("data:;base64,")
    assert decode_resource(files[1]["contents"]) == b"\xff\x00\xfe"
    assert out["systemd"]["units"][0]["contents"] == "[Service]\nExecStart=/bin/true\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("variant: fcos\nversion: 1.4.0\nstorage:\n  filez: []\n", r"storage\.filez: unknown key"),
        (
            "variant: fcos\nversion: 1.4.0\npasswd:\n  users:\n    - name: a\n      sshAuthorizedKeys: [k]\n",
            r"passwd\.users\[0\]\.sshAuthorizedKeys: unknown key; did you mean 'ssh_authorized_keys'",
        ),
        ("variant: fcos\nversion: 9.9.0\n", "version: '9.9.0' is not a supported fcos spec version"),
        ("variant: fcos\nversion: 1.4\n", "version: 1.4 is not a supported"),
        ("variant: rhcos\nversion: 0.1.0\n", "variant: 'rhcos' is not supported"),
        ("version: 1.4.0\n", "variant: None"),
        ("- a\n", "must be a YAML mapping"),
        ("variant: fcos\nversion: 1.4.0\nstorage: [\n", "not valid YAML"),
        ("variant: fcos\nversion: 1.4.0\nstorage: {}\nstorage: {}\n", "duplicate key 'storage' at line 4"),
        (
            "variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /a\n      mode: rw\n",
            r"storage\.files\[0\]\.mode: must be an integer mode",
        ),
        (
            "variant: fcos\nversion: 1.4.0\nsystemd:\n  units:\n    - name: a.service\n      enabled: 1\n",
            r"systemd\.units\[0\]\.enabled: must be true or false",
        ),
        ("variant: fcos\nversion: 1.4.0\nstorage:\n  files: {}\n", r"storage\.files: must be a list"),
        (
            "variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /a\n      contents:\n"
            "        inline: x\n        source: data:,y\n",
            "source and inline are mutually exclusive",
        ),
        (
            "variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /a\n      contents:\n        local: x\n",
            r"storage\.files\[0\]\.contents\.local: local files need a files directory.*files_dir",
        ),
        (
            "variant: fcos\nversion: 1.4.0\nstorage:\n  trees:\n    - local: t\n",
            r"storage\.trees: is not supported",
        ),
        (
            "variant: fcos\nversion: 1.3.0\nkernel_arguments:\n  should_exist: [a]\n",
            r"kernel_arguments: not available in fcos 1\.3\.0",
        ),
        (
            "variant: flatcar\nversion: 1.0.0\nkernel_arguments:\n  should_exist: [a]\n",
            r"kernel_arguments: is not allowed in the flatcar variant",
        ),
        (
            "variant: flatcar\nversion: 1.0.0\nsystemd:\n  units:\n    - name: a.service\n      contents_local: x\n",
            r"contents_local: not available in flatcar 1\.0\.0",
        ),
        (
            "variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: etc/x\n",
            r"invalid Ignition config: \$\.storage\.files\[0\]\.path: .* not absolute",
        ),
    ],
)
def test_butane_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        translate_butane(text)


def test_local_cannot_escape_files_dir(tmp_path):
    (tmp_path / "inside").mkdir()
    (tmp_path / "secret").write_text("x")
    text = "variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /a\n      contents:\n        local: ../secret\n"
    with pytest.raises(ConfigError, match="outside the files directory"):
        translate_butane(text, files_dir=tmp_path / "inside")
    text_missing = text.replace("../secret", "missing")
    with pytest.raises(ConfigError, match="cannot read local file"):
        translate_butane(text_missing, files_dir=tmp_path)
