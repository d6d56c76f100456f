"""The update fixtures' server and payloads, checked against the real update agent on the host."""

import shutil
import subprocess
import urllib.parse

import pytest

from harness.distros import FCOS, FLATCAR, RAILYARD, get_distro
from harness.distros.flatcar import FLATCAR_UPDATE_CONF
from harness.distros.railyard import RAILYARD_UPDATE_CONF
from harness.errors import UpdateError
from harness.ignition import merge, validate
from harness.omaha_protocol import ERROR_INSTALL, RAILYARD_APP_ID
from harness.update_server import BadPayload, UpdateServer, make_ext4
from harness.update_signing import generate_signing_key
from tests.unit.agent.guest import Guest

pytestmark = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None or shutil.which("mkfs.ext4") is None,
    reason="needs ssh-keygen (openssh-client) and mkfs.ext4 (e2fsprogs)",
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_signing_key(tmp_path_factory.mktemp("image-key"))


@pytest.fixture
def server(tmp_path, keys, monkeypatch):
    with UpdateServer(tmp_path / "omaha") as omaha:
        omaha.__dict__["signing_key"] = keys[0]  # instead of the image cache's key
        monkeypatch.setattr(omaha, "version_after", lambda channel, steps=1: f"1.0.{steps}")
        yield omaha


@pytest.fixture
def guest(tmp_path, server, keys):
    return Guest(tmp_path / "guest", server, keys[1])


def file_text(config, path):
    [entry] = [f for f in config["storage"]["files"] if f["path"] == path]
    source = entry["contents"]["source"]
    assert source.startswith("data:,")
    return urllib.parse.unquote(source[len("data:,") :])


@pytest.mark.parametrize(
    "kind", [BadPayload.WRONG_SHA256, BadPayload.WRONG_SIGNATURE, BadPayload.OVERSIZED], ids=lambda k: k.value
)
def test_the_agent_refuses_bad_payloads_before_installing(guest, server, kind):
    published = server.publish_bad("stable", kind)
    assert published.version == "1.0.1"
    assert guest.agent.check(interactive=True) == "failed"
    assert guest.status()["LAST_ERROR_CODE"] == str(kind.error_code)
    assert guest.calls("install") == []
    assert guest.downloads_left() == []


def test_a_truncated_payload_passes_the_agent_but_its_file_system_is_cut_short(guest, server):
    published = server.publish_bad("stable", BadPayload.TRUNCATED)
    assert BadPayload.TRUNCATED.error_code == ERROR_INSTALL  # railyard-slot refuses it
    assert guest.agent.check(interactive=True) == "updated"
    header = subprocess.run(["dumpe2fs", "-h", str(published.path)], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    fs_bytes = int(fields["Block count"]) * int(fields["Block size"])
    assert fs_bytes > published.path.stat().st_size


def test_publishing_replaces_what_the_track_offered(server):
    server.publish_bad("stable", BadPayload.WRONG_SHA256)
    server.publish_bad("stable", BadPayload.OVERSIZED)
    server.publish_unbootable("beta")
    offers = {(p.track, p.name) for p in server.published}
    assert offers == {("stable", "oversized-stable.ext4"), ("beta", "unbootable-beta.ext4")}


def test_publish_next_signs_the_channel_payload_once(guest, server, tmp_path, monkeypatch):
    payload = make_ext4(tmp_path / "usr-1.0.2.ext4", 8, {"lib/os-release": "VERSION_ID=1.0.2\n"})
    monkeypatch.setattr("images.build.update_payload", lambda channel, steps=1: ("1.0.2", payload))
    published = server.publish_next("stable", steps=2)
    assert (published.version, published.app_id, published.track) == ("1.0.2", RAILYARD_APP_ID, "stable")
    signature = payload.with_name(payload.name + ".sig")
    assert signature.read_bytes() == published.signature
    assert server.publish_next("stable", steps=2).signature == published.signature
    assert guest.agent.check(interactive=True) == "updated"
    assert guest.status()["NEW_VERSION"] == "1.0.2"


def test_unbootable_payload_is_an_empty_but_valid_file_system(server):
    published = server.publish_unbootable("lts")
    assert (
        subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", str(published.path)], capture_output=True, text=True
        ).stdout.strip()
        == "ext4"
    )
    listing = subprocess.run(
        ["debugfs", "-R", "ls -p /", str(published.path)], capture_output=True, text=True
    )
    names = {line.split("/")[5] for line in listing.stdout.splitlines() if line.count("/") >= 6}
    assert names <= {".", "..", "lost+found"}


def test_update_ignition_points_the_agent_at_the_server():
    config = validate(get_distro("railyard").update_ignition("http://127.0.0.1:1234/v1/update/", "beta"))
    text = file_text(config, RAILYARD_UPDATE_CONF)
    assert "SERVER=http://127.0.0.1:1234/v1/update/\n" in text
    assert "GROUP=beta\n" in text
    assert "INTERVAL=86400\n" in text
    assert "REBOOT_STRATEGY=off\n" in text  # the test reboots, never the agent


def test_flatcar_gets_its_own_file_and_no_automatic_reboots():
    config = validate(get_distro("flatcar").update_ignition("http://127.0.0.1:1/v1/update/", "alpha"))
    assert file_text(config, FLATCAR_UPDATE_CONF) == (
        "GROUP=alpha\nSERVER=http://127.0.0.1:1/v1/update/\nREBOOT_STRATEGY=off\n"
    )
    off = validate(get_distro("flatcar").updates_off_ignition())
    assert "SERVER=http://127.0.0.1:9/" in file_text(off, FLATCAR_UPDATE_CONF)  # a closed loopback port
    assert (
        file_text(validate(get_distro("railyard").updates_off_ignition()), RAILYARD_UPDATE_CONF)
        == "SERVER=disabled\n"
    )


def test_a_tests_update_config_replaces_the_harness_default():
    merged = merge(
        get_distro("railyard").updates_off_ignition(),
        get_distro("railyard").update_ignition("http://127.0.0.1:7/u/", "lts"),
    )
    files = merged["storage"]["files"]
    assert len(files) == 1
    assert "SERVER=http://127.0.0.1:7/u/\n" in file_text(validate(merged), RAILYARD_UPDATE_CONF)


def test_make_ext4_holds_the_files(tmp_path):
    image = make_ext4(tmp_path / "fs.ext4", 8, {"lib/os-release": "VERSION_ID=9\n"})
    assert image.stat().st_size == 8 << 20
    out = subprocess.run(["debugfs", "-R", "cat /lib/os-release", str(image)], capture_output=True, text=True)
    assert out.stdout == "VERSION_ID=9\n"


def test_bad_payload_kinds_have_distinct_names_and_codes_but_truncated_and_install_share_one():
    assert len({k.value for k in BadPayload}) == len(BadPayload)
    assert len({k.error_code for k in BadPayload}) == len(BadPayload)


def test_update_ignition_overrides_the_harness_default_of_no_updates():
    config = validate(
        merge(
            get_distro("railyard").updates_off_ignition(),
            get_distro("railyard").update_ignition("http://h/v1/update/", "lts"),
        )
    )
    assert len(config["storage"]["files"]) == 1
    assert "SERVER=http://h/v1/update/\n" in file_text(config, RAILYARD_UPDATE_CONF)


def test_a_distro_without_updates_writes_no_update_config():
    assert FCOS.updates_off_ignition() is None
    with pytest.raises(UpdateError, match="fcos has no A/B update support"):
        FCOS.update_ignition("http://127.0.0.1:1/v1/update/", "stable")
    assert RAILYARD.has_updates
    assert FLATCAR.has_updates
    assert not FCOS.has_updates
