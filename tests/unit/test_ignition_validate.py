"""Validation of Ignition configs, own checks and ``ignition-validate`` (no VM)."""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil

import pytest

from harness.errors import ConfigError
from harness.ignition import IgnitionConfig, translate_butane, validate
from harness.ignition.validate import run_ignition_validate

HAVE_IGNITION_VALIDATE = shutil.which("ignition-validate") is not None
needs_binary = pytest.mark.skipif(not HAVE_IGNITION_VALIDATE, reason="ignition-validate not installed")


def base(version="3.3.0", **sections):
    return {"ignition": {"version": version}, **sections}


def files(*entries, version="3.3.0"):
    return base(version, storage={"files": list(entries)})


def problem(config, **kw):
    with pytest.raises(ConfigError) as info:
        validate(config, external=False, **kw)
    return str(info.value)


def test_valid_config_is_returned_as_a_new_dict():
    cfg = IgnitionConfig().add_user("core", ssh_keys=["ssh-ed25519 AAAA k"]).add_file("/etc/x", "1").to_dict()
    out = validate(cfg)
    assert out == cfg
    assert out is not cfg
    assert validate(json.dumps(cfg)) == cfg
    assert validate(json.dumps(cfg).encode()) == cfg


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"ignition": ', "not valid JSON: Expecting value at line 1 column 14"),
        ("[1]", "must be a JSON object at the top"),
        ("{}", "$.ignition.version is missing"),
        ('{"ignition": {}}', "$.ignition.version is missing"),
        ('{"ignition": {"version": 3}}', "must be a string"),
        ('{"ignition": {"version": "3.3"}}', "not a spec version: write it as 'MAJOR.MINOR.PATCH'"),
        ('{"ignition": {"version": "3.7.0"}}', "'3.7.0' is not a known spec version: use one of 3.0.0"),
        ('{"ignition": {"version": "2.2.0"}}', "not a 3.x spec version"),
    ],
)
def test_parse_and_version_errors(config, message):
    msg = problem(config)
    assert message in msg, msg


def test_max_version_bounds_what_the_guest_reads():
    validate(base("3.3.0"), max_version="3.3.0", external=False)
    validate(base("3.0.0"), max_version="3.4.0-experimental", external=False)
    validate(base("3.4.0-experimental"), max_version="3.4.0-experimental", external=False)
    msg = problem(base("3.4.0"), max_version="3.3.0")
    assert "newer than this guest's Ignition reads (newest spec 3.3.0): lower it to 3.3.0" in msg
    assert "experimental spec" in problem(base("3.4.0-experimental"), max_version="3.4.0")
    assert "newer than" in problem(base("3.4.0"), max_version="3.4.0-experimental")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            base(storage={"files": [{"path": "etc/x"}]}),
            r"\$\.storage\.files\[0\]\.path: file path 'etc/x' is not absolute",
        ),
        (
            base(storage={"directories": [{"path": "/var/../etc"}]}),
            r"\$\.storage\.directories\[0\]\.path: directory path '/var/../etc' is not normalized; write '/etc'",
        ),
        (
            base(storage={"files": [{"path": "/a"}], "links": [{"path": "/a", "target": "/b"}]}),
            r"\$\.storage\.links\[0\]\.path: duplicate path among files, directories and links '/a' "
            r"\(also at \$\.storage\.files\[0\]\.path\)",
        ),
        (files({"path": "/a", "mode": 0o10000}), r"\$\.storage\.files\[0\]\.mode: mode 4096 is out of range"),
        (files({"path": "/a", "mode": -1}), "out of range"),
        (
            files({"path": "/a", "mode": "0644"}),
            r"\$\.storage\.files\[0\]\.mode: '0644' is not of type integer",
        ),
        (
            files({"path": "/a", "contents": {"source": "data:,a b"}}),
            r"\$\.storage\.files\[0\]\.contents\.source: invalid character\(s\) ' '",
        ),
        (files({"path": "/a", "contents": {"source": "data:;base64,!!"}}), "invalid base64"),
        (
            files({"path": "/a", "contents": {"source": "data:,x", "compression": "gzip"}}),
            "does not gunzip",
        ),
        (files({"path": "/a", "contents": {"source": "ftp://h/x"}}), "scheme 'ftp' is not supported"),
        (
            files(
                {
                    "path": "/a",
                    "contents": {"source": "data:,x", "verification": {"hash": "sha512-" + "0" * 128}},
                }
            ),
            "does not match the data URL's contents",
        ),
        (files({"path": "/a", "overwrite": True}), "overwrite is true but contents.source is not set"),
        (files({"path": "/a", "user": {"id": 0, "name": "root"}}), "set either 'id' or 'name', not both"),
        (files({"path": "/a", "color": "red"}), r"\$\.storage\.files\[0\]: unknown key\(s\) 'color'"),
        (
            base(passwd={"users": [{"name": "u", "ssh_authorized_keys": []}]}),
            "unknown key.*sshAuthorizedKeys",
        ),
        (
            base(storage={"links": [{"path": "/a"}]}),
            r"\$\.storage\.links\[0\]: 'target' is a required property",
        ),
        (
            base(storage={"links": [{"path": "/a", "target": "/b"}], "files": [{"path": "/a/b"}]}),
            "is below the link '/a'",
        ),
        (base(systemd={"units": [{"name": "foo"}]}), "'foo' is not a unit name with a valid type suffix"),
        (
            base(systemd={"units": [{"name": "a.service", "dropins": [{"name": "x.txt"}]}]}),
            r"units\[0\]\.dropins\[0\]\.name: drop-in name 'x.txt' must be a file name ending in '.conf'",
        ),
        (base(systemd={"units": [{"name": "a.service"}, {"name": "a.service"}]}), "duplicate unit name"),
        (base(systemd={"units": [{"name": "a.service", "contents": "[Unit]\nFoo"}]}), "line 2 'Foo' is not"),
        (base(passwd={"users": [{"name": "u"}, {"name": "u"}]}), "duplicate user name 'u'"),
        (
            base(passwd={"users": [{"name": "u", "sshAuthorizedKeys": ["k", "k"]}]}),
            "duplicate SSH authorized key",
        ),
        (base("3.2.0", kernelArguments={"shouldExist": ["a"]}), r"not in spec 3\.2\.0 \(added in 3\.3\.0\)"),
        (
            base("3.3.0", storage={"luks": [{"name": "l", "device": "/dev/a", "discard": True}]}),
            "added in 3.4.0",
        ),
        (
            files(
                {
                    "path": "/a",
                    "contents": {"source": "data:,x", "httpHeaders": [{"name": "A", "value": "b"}]},
                }
            ),
            r"HTTP headers need an http\(s\) source",
        ),
    ],
)
def test_validation_errors(config, message):
    msg = problem(config)
    assert re.search(message, msg), msg


def test_many_problems_are_listed_together():
    msg = problem(base(storage={"files": [{"path": "a"}, {"path": "b"}, {"path": "/c/"}]}))
    assert msg.startswith("invalid Ignition config (3 problems):\n  - $.storage.files[0].path")


def test_special_mode_bits_warn_before_3_4(caplog):
    with caplog.at_level(logging.WARNING, logger="harness.ignition.checks"):
        validate(files({"path": "/a", "mode": 0o4755, "contents": {"source": "data:,"}}), external=False)
    assert "setuid/setgid/sticky" in caplog.text
    caplog.clear()
    validate(
        files({"path": "/a", "mode": 0o4755, "contents": {"source": "data:,"}}, version="3.4.0"),
        external=False,
    )
    assert "setuid" not in caplog.text


def test_nulls_mean_unset():
    validate(base(storage={"files": [{"path": "/a", "mode": None, "contents": None}]}), external=False)


# -- ignition-validate -------------------------------------------------------------------------------------

VALID = [
    IgnitionConfig().add_user("core", ssh_keys=["ssh-ed25519 AAAA k"]).to_dict(),
    IgnitionConfig("3.0.0").add_file("/etc/x", b"\x00\x01").add_directory("/d").to_dict(),
    IgnitionConfig("3.4.0").add_file("/etc/big", "big\n" * 5000).add_link("/l", "/etc/big").to_dict(),
    IgnitionConfig()
    .add_unit(
        "a.service",
        "[Unit]\nDescription=a\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        enabled=True,
        dropins={"10-a.conf": "[Service]\nEnvironment=A=1\n"},
    )
    .add_file("/etc/hosts", "127.0.0.1 x\n", append=True)
    .to_dict(),
]


@needs_binary
@pytest.mark.parametrize("config", VALID, ids=["user", "v3.0-binary", "v3.4-gzip", "unit-append"])
def test_ignition_validate_accepts_builder_output(config):
    assert run_ignition_validate(config) is True
    validate(config)


@needs_binary
def test_ignition_validate_accepts_translated_butane():
    for variant, version in (
        ("fcos", "1.4.0"),
        ("fcos", "1.5.0"),
        ("flatcar", "1.0.0"),
        ("flatcar", "1.1.0"),
    ):
        out = translate_butane(
            f"variant: {variant}\nversion: {version}\npasswd:\n  users:\n    - name: core\n"
            "      ssh_authorized_keys: [ssh-ed25519 AAAA k]\nstorage:\n  files:\n    - path: /etc/motd\n"
            "      contents:\n        inline: hello\n"
        )
        assert run_ignition_validate(out) is True


@needs_binary
@pytest.mark.parametrize(
    "config",
    [
        files({"path": "etc/x"}),
        files({"path": "/a"}, {"path": "/a"}),
        files({"path": "/a", "contents": {"source": "data:,a b"}}),
        base(systemd={"units": [{"name": "foo"}]}),
    ],
)
def test_ignition_validate_agrees_on_invalid(config):
    with pytest.raises(ConfigError, match=r"ignition-validate rejected the Ignition config: .*error at"):
        run_ignition_validate(config)
    with pytest.raises(ConfigError):
        validate(config, external=False)


@needs_binary
def test_external_only_problem_is_reported_by_validate():
    # Our schema does not list RAID levels; ignition-validate does.
    config = base(storage={"raid": [{"name": "md0", "level": "bogus", "devices": ["/dev/vdb"]}]})
    validate(config, external=False)
    with pytest.raises(ConfigError, match=r"ignition-validate rejected .*\$\.storage\.raid\.0\.level"):
        validate(config)


@needs_binary
def test_3_4_0_is_checked_as_experimental_by_older_binary():
    config = files({"path": "/a", "mode": 0o4755, "contents": {"source": "data:,x"}}, version="3.4.0")
    assert run_ignition_validate(config) is True
    bad = copy.deepcopy(config)
    bad["storage"]["filesystems"] = [{"device": "/dev/vdb", "format": "zfs"}]
    with pytest.raises(ConfigError, match="invalid filesystem format"):
        run_ignition_validate(bad)


def test_missing_binary_is_skipped(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert run_ignition_validate(files({"path": "/a"})) is False


def test_unrunnable_binary_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="could not run"):
        run_ignition_validate(base(), binary=str(tmp_path / "nope"))
