"""How Ignition writes files beyond plain contents (test_ignition.py): gzip-compressed contents, contents it
must check against a hash before writing, a file of the image it replaces, parents it creates, owners given
by number and by a group of the image. One machine serves the module; the tests only read."""

import hashlib

import pytest

from harness.ignition import IgnitionConfig

COMPRESSED = "".join(f"line {n} of a file Ignition gunzips\n" for n in range(200))
VERIFIED = "contents Ignition checked against their SHA-512\n"
ISSUE = "Railyard test machine \\n\n"
DEEP = "/var/lib/railyard-deep/a/b/c/leaf.conf"


def _config() -> dict:
    config = (
        IgnitionConfig()
        .add_file("/etc/railyard/compressed.txt", COMPRESSED, compress=True)
        .add_file("/etc/issue", ISSUE)  # the image ships one: replaced, not appended to
        .add_file(DEEP, "deep=1\n", mode=0o600)
        .add_file("/var/log/railyard-by-numbers.log", "", mode=0o640, user=0, group="adm")
        .to_dict()
    )
    digest = hashlib.sha512(VERIFIED.encode()).hexdigest()
    config["storage"]["files"].append(
        {
            "path": "/etc/railyard/verified.txt",
            "mode": 0o644,
            "contents": {
                "source": "data:," + VERIFIED.replace(" ", "%20").replace("\n", "%0A"),
                "verification": {"hash": f"sha512-{digest}"},
            },
        }
    )
    return IgnitionConfig.from_dict(config).to_dict()


CONFIG = _config()
pytestmark = pytest.mark.ignition(CONFIG)


def test_gzip_compressed_contents_are_written_uncompressed(module_machine):
    """kola: coreos.ignition.resource.local (compression: gzip)"""
    files = {f["path"]: f for f in CONFIG["storage"]["files"]}
    assert files["/etc/railyard/compressed.txt"]["contents"].get("compression") == "gzip"
    assert module_machine.succeed("cat /etc/railyard/compressed.txt") == COMPRESSED


def test_contents_with_a_verification_hash(module_machine):
    assert module_machine.succeed("cat /etc/railyard/verified.txt") == VERIFIED


def test_a_file_of_the_image_is_replaced(module_machine):
    assert module_machine.succeed("cat /etc/issue") == ISSUE


def test_parents_are_made_root_owned_and_searchable(module_machine):
    m = module_machine
    for parent in ("/var/lib/railyard-deep", "/var/lib/railyard-deep/a/b", "/var/lib/railyard-deep/a/b/c"):
        assert m.succeed(f"stat -c %U:%G:%a {parent}").strip() == "root:root:755", parent
    assert m.succeed(f"sudo stat -c %U:%a {DEEP}").strip() == "root:600"
    assert m.succeed(f"sudo cat {DEEP}") == "deep=1\n"


def test_owners_by_number_and_by_a_group_of_the_image(module_machine):
    stat = module_machine.succeed("stat -c %U:%G:%a:%s /var/log/railyard-by-numbers.log").strip()
    assert stat == "root:adm:640:0"
