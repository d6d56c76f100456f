"""The update suites on Flatcar: the payload key handed to the machine, the `--update-payload` served as
update_engine expects it, the boot order read from cgpt, and which update tests a Flatcar run collects."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import urllib.parse

import pytest

from harness import listing
from harness.distros.flatcar import FlatcarOS
from harness.errors import ConfigError, UpdateError
from harness.flatcar_payload import (
    ANNOUNCED_VERSION,
    PAYLOAD_KEY_COPY,
    PAYLOAD_KEY_PATH,
    FlatcarPayload,
    mount_unit_name,
    payload_key_ignition,
)
from harness.ignition import validate
from harness.omaha_protocol import (
    ERROR_PAYLOAD_HASH_MISMATCH,
    ERROR_PAYLOAD_SIZE_MISMATCH,
    FLATCAR_APP_ID,
)
from harness.update_server import BadPayload, UpdateServer
from tests.unit.test_distro_update_helpers import FakeMachine, ok
from tests.unit.test_omaha_server import post, update_engine_request

PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize(
    "path", [PAYLOAD_KEY_PATH, "/etc/flatcar/update.conf", "/var/lib/a-b/.c", "/"], ids=str
)
def test_mount_unit_names_are_escaped_as_systemd_does(path):
    if shutil.which("systemd-escape") is None:
        pytest.skip("needs systemd-escape")
    expected = subprocess.run(
        ["systemd-escape", "--path", "--suffix=mount", path], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert mount_unit_name(path) == expected


def test_the_payload_key_is_bind_mounted_over_update_engines():
    config = payload_key_ignition(PEM)
    validate(config)
    [unit] = config["systemd"]["units"]
    assert unit["name"] == "usr-share-update_engine-update\\x2dpayload\\x2dkey.pub.pem.mount"
    assert unit["enabled"] is True
    lines = unit["contents"].splitlines()
    for line in (
        f"What={PAYLOAD_KEY_COPY}",
        f"Where={PAYLOAD_KEY_PATH}",
        "Options=bind,ro",
        "Before=update-engine.service",
        "WantedBy=multi-user.target update-engine.service",
    ):
        assert line in lines
    [key] = config["storage"]["files"]
    assert key["path"] == PAYLOAD_KEY_COPY
    assert urllib.parse.unquote(key["contents"]["source"].partition(",")[2]) == PEM
    with pytest.raises(ConfigError, match="PEM public key"):
        payload_key_ignition("not a key")


def test_payload_options(tmp_path):
    assert FlatcarPayload.from_options(None, None, None) is None
    with pytest.raises(ConfigError, match="go with --update-payload"):
        FlatcarPayload.from_options(None, "4152.2.3", None)
    with pytest.raises(ConfigError, match="no such file"):
        FlatcarPayload.from_options(str(tmp_path / "missing.gz"), None, None)
    payload = tmp_path / "flatcar_production_update.gz"
    payload.write_bytes(b"CrAU")
    given = FlatcarPayload.from_options(str(payload), None, None)
    assert given is not None
    assert given.announced_version == ANNOUNCED_VERSION
    assert given.ignition() is None  # the image's own key signs a release's payload
    key = tmp_path / "key.pem"
    key.write_text(PEM)
    with_key = FlatcarPayload.from_options(str(payload), "4152.2.3", str(key))
    assert with_key is not None
    assert with_key.announced_version == "4152.2.3"
    config = with_key.ignition()
    assert config is not None
    assert config["storage"]["files"][0]["path"] == PAYLOAD_KEY_COPY


@pytest.fixture
def flatcar_server(tmp_path):
    payload = tmp_path / "flatcar_production_update.gz"
    payload.write_bytes(bytes(range(256)) * 4096)
    with UpdateServer(tmp_path / "omaha", flatcar=FlatcarPayload(payload, "4152.2.3")) as server:
        yield server, payload


def b64(digest):
    return base64.b64encode(digest).decode()


def test_the_payload_is_offered_as_update_engine_reads_it(flatcar_server):
    server, payload = flatcar_server
    published = server.publish_next("stable")
    assert (published.app_id, published.track, published.version) == (FLATCAR_APP_ID, "stable", "4152.2.3")
    with pytest.raises(UpdateError, match="no second step"):
        server.publish_next("stable", steps=2)

    answer = post(server.url, update_engine_request(version="4081.2.0", track="stable"))

    data = payload.read_bytes()
    [app] = answer.findall("app")
    assert app.get("appid") == FLATCAR_APP_ID
    check = app.find("updatecheck")
    assert check.get("status") == "ok"
    # update_engine's ParseResponse: urls/url@codebase + package@name is the download; package@size > 0;
    # the postinstall action's sha256 is the hash it checks (base64 SHA-256).
    codebase = check.find("urls/url").get("codebase")
    package = check.find("manifest/packages/package")
    assert codebase.endswith("/")
    assert package.get("name") == payload.name
    assert int(package.get("size")) == len(data)
    assert package.get("hash") == b64(hashlib.sha1(data).digest())
    assert package.get("hash_sha256") == b64(hashlib.sha256(data).digest())
    [action] = [a for a in check.findall("manifest/actions/action") if a.get("event") == "postinstall"]
    assert action.get("sha256") == b64(hashlib.sha256(data).digest())
    assert check.find("manifest").get("version") == "4152.2.3"
    assert package.get("railyard_signature") is None  # the signature is inside a Flatcar payload
    # The machine's own version gets no offer (update_engine would install it again).
    again = post(server.url, update_engine_request(version="4152.2.3", track="stable"))
    assert again.find("app/updatecheck").get("status") == "noupdate"
    # Another group's machines get nothing.
    other = post(server.url, update_engine_request(version="4081.2.0", track="beta"))
    assert other.find("app/updatecheck").get("status") == "noupdate"


def test_bad_flatcar_payloads_and_the_codes_update_engine_reports(flatcar_server):
    server, payload = flatcar_server
    assert server.bad_payload_kinds == (BadPayload.WRONG_SHA256, BadPayload.OVERSIZED)
    assert server.refusal_code(BadPayload.WRONG_SHA256) == ERROR_PAYLOAD_HASH_MISMATCH == 10
    assert server.refusal_code(BadPayload.OVERSIZED) == ERROR_PAYLOAD_SIZE_MISMATCH == 11
    size = payload.stat().st_size

    wrong = server.publish_bad("stable", BadPayload.WRONG_SHA256)
    assert wrong.manifest_sha256_b64 != wrong.sha256_b64
    assert wrong.manifest_size == size
    oversized = server.publish_bad("stable", BadPayload.OVERSIZED)
    assert oversized.manifest_size == size // 2
    assert oversized.manifest_sha256_b64 == oversized.sha256_b64
    with pytest.raises(UpdateError, match="payload tools"):
        server.publish_bad("stable", BadPayload.WRONG_SIGNATURE)
    with pytest.raises(UpdateError, match="payload tools"):
        server.publish_unbootable("stable")


def test_a_payload_of_unknown_version_is_offered_above_any_release(tmp_path):
    payload = tmp_path / "flatcar_test_update.gz"
    payload.write_bytes(b"CrAU" * 100)
    with UpdateServer(tmp_path / "omaha", flatcar=FlatcarPayload(payload)) as server:
        assert not server.knows_versions
        assert server.publish_next("lts").version == ANNOUNCED_VERSION
        answer = post(server.url, update_engine_request(version="4081.2.0", track="lts"))
        assert answer.find("app/updatecheck").get("status") == "ok"


# -- the boot order, read with cgpt ------------------------------------------------------------------


def flatcar_machine(a, b):
    """A pretend Flatcar machine whose USR-A and USR-B have these (priority, tries, successful)."""
    return FakeMachine(
        "flatcar",
        answers={
            "part=$(readlink -f /dev/disk/by-partlabel/USR-A)": [ok(" ".join(map(str, a)) + "\n")],
            "part=$(readlink -f /dev/disk/by-partlabel/USR-B)": [ok(" ".join(map(str, b)) + "\n")],
        },
    )


def test_flatcar_reads_each_slots_gpt_attributes_with_cgpt():
    m = flatcar_machine((1, 0, 1), (0, 0, 0))
    assert FlatcarOS(m).boot_order() == {
        "USR-A": "priority=1 tries=0 successful=1",
        "USR-B": "priority=0 tries=0 successful=0",
    }
    command = m.commands[0]
    for part in (
        "part=$(readlink -f /dev/disk/by-partlabel/USR-A)",
        "n=$(cat /sys/class/block/${part##*/}/partition)",
        'disk=/dev/$(lsblk -ndo PKNAME "$part")',
        'sudo cgpt show -i "$n" -P "$disk"',
        'sudo cgpt show -i "$n" -T "$disk"',
        'sudo cgpt show -i "$n" -S "$disk"',
    ):
        assert part in command
    assert "USR-B" in m.commands[1]


@pytest.mark.parametrize(
    ("a", "b", "states", "next_slot"),
    [
        ((1, 0, 1), (0, 0, 0), ("good", "none"), "USR-A"),  # as the image comes
        ((1, 0, 1), (2, 1, 0), ("good", "trial"), "USR-B"),  # an update installed, its trial pending
        ((1, 0, 1), (2, 0, 0), ("good", "bad"), "USR-A"),  # the trial spent: GRUB falls back
        ((1, 0, 1), (2, 0, 1), ("good", "good"), "USR-B"),  # the update booted and was marked good
        ((2, 0, 1), (1, 0, 1), ("good", "good"), "USR-A"),  # after `cgpt prioritize` of USR-A
    ],
)
def test_flatcar_slot_states_and_the_next_boot(a, b, states, next_slot):
    m = flatcar_machine(a, b)
    os_ = FlatcarOS(m)
    assert (os_.slot_state("USR-A"), os_.slot_state("USR-B")) == states
    assert os_.next_slot() == next_slot


def test_flatcar_reports_a_boot_by_checking_now():
    m = FakeMachine("flatcar")
    FlatcarOS(m).report_boot()
    assert m.commands == ["sudo update_engine_client -check_for_update"]


def test_flatcar_with_no_bootable_slot_is_an_error():
    with pytest.raises(UpdateError, match="neither USR partition is bootable"):
        FlatcarOS(flatcar_machine((0, 0, 0), (2, 0, 0))).next_slot()


# -- what a Flatcar run collects -------------------------------------------------------------------


def test_a_flatcar_run_collects_the_portable_update_tests_and_skips_the_others(tmp_path):
    image = tmp_path / "flatcar_production_qemu_image.img"
    image.write_bytes(b"QFI\xfb" + bytes(1024))
    tests = listing.collect(
        ["--distro=flatcar", "--image", str(image), "--channel", "stable", "suites/test_update.py",
         "suites/test_update_faults.py"]
    )  # fmt: skip
    skips = {t["name"].rpartition("::")[2]: t["skip"] for t in tests}
    assert skips["test_update_then_rollback"] is None
    assert skips["test_bad_payloads_are_refused"] is None
    for name in (
        "test_power_cut_during_install_then_two_updates",
        "test_unbootable_update_falls_back_by_itself",
    ):
        assert skips[name].startswith("runs only on distros railyard, not flatcar: ")
        assert "the default image's own /usr" in skips[name]
    # The default image's run skips none of them.
    default = listing.collect(
        ["--channel", "stable", "suites/test_update.py", "suites/test_update_faults.py"]
    )
    assert [t["skip"] for t in default] == [None] * len(default)
    assert len(default) == len(tests) == 4
