"""The Ignition config builder and data URL encoding (no VM)."""

from __future__ import annotations

import base64
import gzip
import json
import os

import pytest

from harness.errors import ConfigError
from harness.ignition import IgnitionConfig, validate
from harness.ignition.dataurl import (
    GZIP_THRESHOLD,
    DataURLError,
    decode_data_url,
    decode_resource,
    encode_contents,
)

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBVqaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa one"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBVqbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb two"


# -- data URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello\n",
        "a b#c?d%e&f=g+h/i:j;k,l'm(n)o*p!q~r\"s<t>u\\v{w}x|y^z`[]\t\r\n",
        "unicode: grüße, 日本語, emoji 🚂\n",
        "%41 is not A\n",
    ],
)
def test_text_round_trip_plain(text):
    source, compression = encode_contents(text)
    assert source.startswith("data:,")
    assert compression is None
    assert decode_data_url(source) == text.encode("utf-8")


@pytest.mark.parametrize("data", [b"", b"\x00\x01\xff\xfe", bytes(range(256)), "é".encode("latin-1")])
def test_bytes_round_trip_base64(data):
    source, compression = encode_contents(data)
    assert source.startswith("data:;base64,")
    assert compression is None
    assert decode_data_url(source) == data


def test_large_compressible_text_is_gzipped():
    text = "line of a large config file\n" * 500
    source, compression = encode_contents(text)
    assert compression == "gzip"
    assert source.startswith("data:;base64,")
    assert len(source) < len(text)
    assert decode_resource({"source": source, "compression": compression}) == text.encode()
    # Deterministic: the same input gives the same URL (gzip mtime is fixed).
    assert encode_contents(text) == (source, compression)


def test_large_random_bytes_are_not_gzipped_by_default():
    data = os.urandom(GZIP_THRESHOLD * 4)
    source, compression = encode_contents(data)
    assert compression is None
    assert decode_data_url(source) == data


def test_compress_can_be_forced_either_way():
    assert encode_contents("x", compress=True)[1] == "gzip"
    assert encode_contents("x" * 10000, compress=False)[1] is None
    source, _ = encode_contents("tiny", compress=True)
    assert gzip.decompress(decode_data_url(source)) == b"tiny"


def test_encode_rejects_other_types():
    with pytest.raises(TypeError, match="str or bytes"):
        encode_contents(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x", "must start with 'data:'"),
        ("data:nocomma", "no ','"),
        ("data:,a b", "invalid character"),
        ("data:,100%", "invalid percent escape"),
        ("data:,%zz", "invalid percent escape"),
        ("data:;base64,YWI", "base64"),
        ("data:;base64,@@@@", "base64"),
    ],
)
def test_decode_rejects_bad_urls(url, message):
    with pytest.raises(DataURLError, match=message):
        decode_data_url(url)


def test_decode_accepts_media_type_and_bad_gzip_is_reported():
    assert decode_data_url("data:text/plain;charset=utf-8;base64,YWJj") == b"abc"
    with pytest.raises(DataURLError, match="does not gunzip"):
        decode_resource({"source": "data:;base64,YWJj", "compression": "gzip"})


# -- builder ----------------------------------------------------------------------------------------


def test_empty_config():
    assert IgnitionConfig().to_dict() == {"ignition": {"version": "3.3.0"}}
    assert IgnitionConfig("3.4.0").version == "3.4.0"
    with pytest.raises(ConfigError, match="not a known spec version"):
        IgnitionConfig("3.9.0")


def test_full_config_shape():
    cfg = (
        IgnitionConfig()
        .add_user("core", ssh_keys=[KEY1], groups=["wheel"], password_hash="$6$x", shell="/bin/bash")
        .add_file("/etc/motd", "hi\n", mode=0o600, user="core", group=0)
        .add_directory("/var/lib/x", mode=0o700, user=1000)
        .add_link("/etc/localtime", "../usr/share/zoneinfo/UTC")
        .add_link("/etc/hard", "/etc/motd", hard=True)
        .add_unit("a.service", "[Service]\nExecStart=/bin/true\n", enabled=True, dropins={"10-x.conf": ""})
        .add_unit("b.service", mask=True)
    )
    assert cfg.to_dict() == {
        "ignition": {"version": "3.3.0"},
        "passwd": {
            "users": [
                {
                    "name": "core",
                    "sshAuthorizedKeys": [KEY1],
                    "groups": ["wheel"],
                    "passwordHash": "$6$x",
                    "shell": "/bin/bash",
                }
            ]
        },
        "storage": {
            "files": [
                {
                    "path": "/etc/motd",
                    "overwrite": True,
                    "contents": {"source": "data:,hi%0A"},
                    "mode": 384,
                    "user": {"name": "core"},
                    "group": {"id": 0},
                }
            ],
            "directories": [{"path": "/var/lib/x", "mode": 448, "user": {"id": 1000}}],
            "links": [
                {"path": "/etc/localtime", "target": "../usr/share/zoneinfo/UTC", "overwrite": True},
                {"path": "/etc/hard", "target": "/etc/motd", "hard": True, "overwrite": True},
            ],
        },
        "systemd": {
            "units": [
                {
                    "name": "a.service",
                    "contents": "[Service]\nExecStart=/bin/true\n",
                    "enabled": True,
                    "dropins": [{"name": "10-x.conf", "contents": ""}],
                },
                {"name": "b.service", "mask": True},
            ]
        },
    }
    validate(cfg.to_dict())


def test_file_defaults_and_binary_and_large():
    big = "x = 1\n" * 2000
    cfg = IgnitionConfig().add_file("/a", "").add_file("/b", b"\x00\xff").add_file("/c", big)
    files = cfg.to_dict()["storage"]["files"]
    assert files[0] == {"path": "/a", "overwrite": True, "contents": {"source": "data:,"}, "mode": 420}
    assert files[1]["contents"] == {"source": "data:;base64," + base64.b64encode(b"\x00\xff").decode()}
    assert files[2]["contents"]["compression"] == "gzip"
    assert decode_resource(files[2]["contents"]) == big.encode()
    validate(cfg.to_dict())


def test_append_extends_one_file_entry():
    cfg = (
        IgnitionConfig().add_file("/etc/hosts", "1\n", append=True).add_file("/etc/hosts", "2\n", append=True)
    )
    files = cfg.to_dict()["storage"]["files"]
    assert files == [{"path": "/etc/hosts", "append": [{"source": "data:,1%0A"}, {"source": "data:,2%0A"}]}]
    cfg.add_file("/etc/x", "a")
    cfg.add_file("/etc/x", "b", append=True)
    x = cfg.to_dict()["storage"]["files"][1]
    assert x["contents"] == {"source": "data:,a"}
    assert x["append"] == [{"source": "data:,b"}]
    validate(cfg.to_dict())


def test_add_user_twice_combines_keys_and_groups():
    cfg = IgnitionConfig().add_user("core", ssh_keys=[KEY1], groups=["a"])
    cfg.add_user("core", ssh_keys=[KEY2, KEY1], groups=["b"], shell="/bin/zsh")
    assert cfg.to_dict()["passwd"]["users"] == [
        {"name": "core", "sshAuthorizedKeys": [KEY1, KEY2], "groups": ["a", "b"], "shell": "/bin/zsh"}
    ]


def test_add_unit_twice_merges_dropins():
    cfg = IgnitionConfig().add_unit("a.service", "[Unit]\n", dropins={"1.conf": "x=1"})
    cfg.add_unit("a.service", enabled=False, dropins={"1.conf": "x=2", "2.conf": "y=1"})
    assert cfg.to_dict()["systemd"]["units"] == [
        {
            "name": "a.service",
            "contents": "[Unit]\n",
            "dropins": [{"name": "1.conf", "contents": "x=2"}, {"name": "2.conf", "contents": "y=1"}],
            "enabled": False,
        }
    ]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda c: c.add_file("etc/x"), "must be absolute"),
        (lambda c: c.add_file("/etc/../x"), "not normalized.*'/x'"),
        (lambda c: c.add_file("/etc/x/"), "not normalized"),
        (lambda c: c.add_file("/x", mode=0o10000), "between 0 and 0o7777"),
        (lambda c: c.add_file("/x", user=1.5), "name .str. or a numeric id"),
        (lambda c: c.add_file("/x").add_directory("/x"), "already in storage.files"),
        (lambda c: c.add_link("/x", "/y").add_file("/x", append=True), "not a file"),
        (lambda c: c.add_link("/x", ""), "non-empty target"),
        (lambda c: c.add_link("/x", "rel", hard=True), "must be absolute"),
        (lambda c: c.add_unit("foo"), "unit type"),
        (lambda c: c.add_unit("a.service", dropins={"x": ""}), "ending in '.conf'"),
        (lambda c: c.add_user(""), "non-empty"),
        (lambda c: c.add_user("u", ssh_keys=[""]), "non-empty strings"),
    ],
)
def test_builder_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build(IgnitionConfig())


def test_single_string_key_is_not_split_into_characters():
    cfg = IgnitionConfig().add_user("core", ssh_keys=KEY1, groups="wheel")
    assert cfg.to_dict()["passwd"]["users"][0]["sshAuthorizedKeys"] == [KEY1]
    assert cfg.to_dict()["passwd"]["users"][0]["groups"] == ["wheel"]


def test_json_round_trip():
    cfg = IgnitionConfig("3.4.0").add_user("core", ssh_keys=[KEY1]).add_file("/etc/x", "é")
    text = cfg.to_json()
    assert "\n" not in text
    assert json.loads(cfg.to_json(indent=2)) == cfg.to_dict()
    again = IgnitionConfig.from_json(text)
    assert again == cfg
    assert IgnitionConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    # to_dict returns a copy.
    d = cfg.to_dict()
    d["ignition"]["version"] = "3.0.0"
    assert cfg.version == "3.4.0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{}", "no ignition.version"),
        ('{"ignition": {"version": "2.2.0"}}', "not a 3.x spec version"),
    ],
)
def test_from_json_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        IgnitionConfig.from_json(text)


def test_merge_method_and_validate_method():
    base = IgnitionConfig().add_user("core", ssh_keys=[KEY1])
    child = IgnitionConfig().add_user("core", ssh_keys=[KEY2]).add_file("/etc/x", "1")
    merged = base.merge(child).validate()
    assert merged.to_dict()["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": [KEY1, KEY2]}]
    assert base.to_dict()["passwd"]["users"][0]["sshAuthorizedKeys"] == [KEY1]
