"""`railyard image fetch` end to end against a release mirror on 127.0.0.1, with real gpg signatures: what is
verified gets cached (and found by the plugin without --image); whatever fails leaves the cache empty."""

from __future__ import annotations

import bz2
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli
from harness.errors import ConfigError, FetchError
from harness.fetch import FetchRequest, fetch_release, find_fetched
from harness.fetch.digests import parse_digests
from harness.fetch.release import parse_version_txt
from harness.image_choice import resolve_image
from tests.integration.helpers import run_inner
from tests.unit.release_mirror import (
    Mirror,
    SigningKeys,
    digests_text,
    make_signing_keys,
    revoke_subkey,
    stand_in_image,
    stop_agent,
)

VERSION = "4152.2.3"
BIOS = "flatcar_production_qemu_image.img"
UEFI_FILES = (
    "flatcar_production_qemu_uefi_image.img",
    "flatcar_production_qemu_uefi_efi_code.qcow2",
    "flatcar_production_qemu_uefi_efi_vars.qcow2",
)
IMAGE = stand_in_image()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SigningKeys, bytes, bytes]]:
    """The test's signing keys, and a compressed image with its signature by the subkey revoked since."""
    home = tmp_path_factory.mktemp("gpg") / "home"
    made = make_signing_keys(home)
    packed = tmp_path_factory.mktemp("revoked") / (BIOS + ".bz2")
    packed.write_bytes(bz2.compress(IMAGE))
    made.sign(made.revoked, packed, packed.with_name(packed.name + ".sig"))
    revoked_sig = packed.with_name(packed.name + ".sig").read_bytes()
    revoke_subkey(made)
    yield made, packed.read_bytes(), revoked_sig
    stop_agent(home)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    served = Mirror(tmp_path / "mirror").start()
    yield served
    served.stop()


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "railyard" / "fetched"


def request(mirror: Mirror, keys: SigningKeys, cache_root: Path, **kw: object) -> FetchRequest:
    settings: dict[str, object] = {
        "channel": "stable",
        "firmware": "bios",
        "release_url": mirror.template,
        "signing_key": keys.public,
        "cache_root": cache_root,
    }
    settings.update(kw)
    return FetchRequest(**settings)  # type: ignore[arg-type]


def left_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_a_signed_release_is_verified_decompressed_and_cached(mirror, keys, cache_root):
    signing, _, _ = keys
    mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)

    image = fetch_release(request(mirror, signing, cache_root))

    folder = cache_root / "flatcar" / "stable" / VERSION / "amd64-usr" / "bios"
    assert image.path == folder / BIOS
    assert image.path.read_bytes() == IMAGE
    meta = image.metadata
    assert (meta.distro, meta.channel, meta.version, meta.firmware) == ("flatcar", "stable", VERSION, "bios")
    assert meta.ignition_fw_cfg == "opt/org.flatcar-linux/config"
    about = json.loads((folder / "fetch.json").read_text())
    assert about["files"][0]["signed_by"] == signing.good
    assert about["files"][0]["primary_key"] == signing.primary
    assert about["files"][0]["digests_checked"] == ["md5", "sha1", "sha512"]
    assert [p for p in left_in(cache_root) if (cache_root / p).is_file()] == [
        f"flatcar/stable/{VERSION}/amd64-usr/bios/{name}"
        for name in ("fetch.json", BIOS, "flatcar_production_qemu_image.json")
    ]
    # `current` was read from version.txt, and the files came from the version's own folder.
    assert ("/stable/amd64-usr/current/version.txt", None) in mirror.requests
    assert (f"/stable/amd64-usr/{VERSION}/{BIOS}.bz2", None) in mirror.requests
    # A second fetch finds it cached and downloads no image.
    before = len(mirror.requests)
    assert fetch_release(request(mirror, signing, cache_root)).path == image.path
    assert all(not path.endswith(".bz2") for path, _ in mirror.requests[before:])


def test_uefi_fetches_the_firmware_files_too_uncompressed(mirror, keys, cache_root):
    signing, _, _ = keys
    files = {name: stand_in_image(1 << 16, seed=i) for i, name in enumerate(UEFI_FILES)}
    mirror.publish(signing, "beta", VERSION, files, compress=False)

    image = fetch_release(
        request(mirror, signing, cache_root, channel="beta", firmware="uefi", version=VERSION)
    )

    assert image.path.name == UEFI_FILES[0]
    for name, content in files.items():
        assert (image.folder / name).read_bytes() == content
    assert image.metadata.firmware == "uefi"
    assert find_fetched("flatcar", "beta", root=cache_root) == image
    assert find_fetched("flatcar", "beta", firmware="bios", root=cache_root) is None


def test_a_tampered_image_is_refused_and_nothing_cached(mirror, keys, cache_root):
    signing, _, _ = keys
    served = mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    for path in served:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    with pytest.raises(FetchError, match="does not match the file"):
        fetch_release(request(mirror, signing, cache_root))
    assert left_in(cache_root) == []


def test_a_tampered_signature_is_refused_and_nothing_cached(mirror, keys, cache_root):
    signing, _, _ = keys
    served = mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    for path in served:
        sig = path.with_name(path.name + ".sig")
        data = bytearray(sig.read_bytes())
        data[-5] ^= 0x40
        sig.write_bytes(bytes(data))

    with pytest.raises(FetchError, match=r"signature of .* (does not match|did not verify)"):
        fetch_release(request(mirror, signing, cache_root))
    assert left_in(cache_root) == []


def test_a_wrong_digest_is_refused_and_nothing_cached(mirror, keys, cache_root):
    signing, _, _ = keys
    served = mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    for path in served:
        digests = path.with_name(path.name + ".DIGESTS")
        other = path.with_name("other")
        other.write_bytes(b"not the image")
        lines = digests_text(path, path.name).splitlines()
        lines[-1] = digests_text(other, path.name).splitlines()[-1]  # the SHA512 line of another file
        digests.write_text("\n".join(lines) + "\n")

    with pytest.raises(FetchError, match=r"does not match its DIGESTS \(SHA512 differ"):
        fetch_release(request(mirror, signing, cache_root))
    assert left_in(cache_root) == []


def test_digests_without_sha512_are_refused(mirror, keys, cache_root):
    signing, _, _ = keys
    served = mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    for path in served:
        path.with_name(path.name + ".DIGESTS").write_text(digests_text(path, path.name, ("md5", "sha1")))

    with pytest.raises(FetchError, match="no SHA512 digest"):
        fetch_release(request(mirror, signing, cache_root))
    assert left_in(cache_root) == []


def test_an_interrupted_download_is_resumed_from_where_it_stopped(mirror, keys, cache_root):
    signing, _, _ = keys
    mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    path = f"/stable/amd64-usr/{VERSION}/{BIOS}.bz2"
    mirror.cut_after[path] = 300_000

    with pytest.raises(FetchError, match=r"stopped after 300000 of .* run the same command again to resume"):
        fetch_release(request(mirror, signing, cache_root))
    # Nothing in the cache but the partial download, kept apart for the next fetch.
    partial = f".partial/flatcar/stable/{VERSION}/amd64-usr/bios/{BIOS}.bz2"
    assert [p for p in left_in(cache_root) if "." in Path(p).name and not p.startswith(".partial")] == []
    assert (cache_root / partial).stat().st_size == 300_000
    assert find_fetched("flatcar", "stable", root=cache_root) is None

    del mirror.cut_after[path]
    image = fetch_release(request(mirror, signing, cache_root))

    assert image.path.read_bytes() == IMAGE
    assert mirror.requests[-1] == (path, "bytes=300000-")
    assert not (cache_root / ".partial").exists()


def test_a_signature_by_an_expired_subkey_is_refused(mirror, keys, cache_root):
    signing, _, _ = keys
    mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True, subkey=signing.expired)

    with pytest.raises(FetchError, match="signing key that has expired"):
        fetch_release(request(mirror, signing, cache_root))
    assert left_in(cache_root) == []


def test_a_signature_by_a_revoked_subkey_is_refused(mirror, keys, cache_root):
    signing, packed, revoked_sig = keys
    for version in (VERSION, "current"):
        folder = mirror.folder("stable", version)
        (folder / "version.txt").write_text(f"FLATCAR_VERSION={VERSION}\n")
        (folder / (BIOS + ".bz2")).write_bytes(packed)
        (folder / (BIOS + ".bz2.sig")).write_bytes(revoked_sig)
        (folder / (BIOS + ".bz2.DIGESTS")).write_text(digests_text(folder / (BIOS + ".bz2"), BIOS + ".bz2"))

    with pytest.raises(FetchError, match="signing key that was revoked"):
        fetch_release(request(mirror, signing, cache_root))
    assert left_in(cache_root) == []


def test_an_unreachable_server_is_one_clear_error(keys, cache_root):
    signing, _, _ = keys
    closed = Mirror(cache_root.parent / "none").start()
    port = closed.port
    closed.stop()  # nothing listens there now
    req = FetchRequest(
        channel="stable", release_url=f"http://127.0.0.1:{port}/{{channel}}/", signing_key=signing.public,
        cache_root=cache_root,
    )  # fmt: skip

    with pytest.raises(
        FetchError, match=rf"cannot reach http://127.0.0.1:{port}/stable/amd64-usr/current/version.txt"
    ):
        fetch_release(req)
    assert left_in(cache_root) == []


def test_the_official_key_must_have_the_pinned_fingerprint(mirror, keys, cache_root, monkeypatch):
    signing, _, _ = keys
    mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    key_path = mirror.root / "Flatcar_Image_Signing_Key.asc"
    key_path.write_bytes(signing.public.read_bytes())
    monkeypatch.setattr(
        "harness.fetch.fetch.OFFICIAL_KEY_URL", f"http://127.0.0.1:{mirror.port}/{key_path.name}"
    )

    # A key that is not the pinned one is refused before any image is downloaded.
    with pytest.raises(
        FetchError, match="is not Flatcar's: expected primary key F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"
    ):
        fetch_release(request(mirror, signing, cache_root, signing_key=None))
    assert left_in(cache_root) == []
    assert all(not path.endswith(".bz2") for path, _ in mirror.requests)

    # With the pin naming the key served, the same fetch succeeds.
    monkeypatch.setattr("harness.fetch.fetch.OFFICIAL_FINGERPRINT", signing.primary)
    image = fetch_release(request(mirror, signing, cache_root, signing_key=None))
    assert image.path.read_bytes() == IMAGE


def test_the_cli_fetch_then_the_plugin_finds_it_without_image(mirror, keys, tmp_path, monkeypatch, capsys):
    signing, _, _ = keys
    mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    code = cli.main(
        ["image", "fetch", "--distro", "flatcar", "--channel", "stable", "--firmware", "bios",
         "--release-url", mirror.template, "--signing-key", str(signing.public)]
    )  # fmt: skip

    assert code == 0
    cached = (
        tmp_path
        / "xdg"
        / "railyard"
        / "fetched"
        / "flatcar"
        / "stable"
        / VERSION
        / "amd64-usr"
        / "bios"
        / BIOS
    )
    assert f"flatcar stable {VERSION} (bios): {cached}" in capsys.readouterr().out
    choice = resolve_image("stable", explicit=None, metadata=None, distro="flatcar", local=True)
    assert choice.path == cached
    assert choice.distro.name == "flatcar"
    assert choice.version == VERSION


def test_a_missing_fetched_image_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(
        ConfigError, match="run `railyard image fetch --distro flatcar --channel beta --firmware uefi` first"
    ):
        resolve_image("beta", explicit=None, metadata=None, distro="flatcar", local=True, firmware="uefi")


def test_the_cli_refuses_a_tampered_image_and_caches_nothing(mirror, keys, tmp_path, monkeypatch, capsys):
    signing, _, _ = keys
    served = mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    for path in served:
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    code = cli.main(
        ["image", "fetch", "--distro", "flatcar", "--channel", "stable", "--firmware", "bios",
         "--release-url", mirror.template, "--signing-key", str(signing.public)]
    )  # fmt: skip

    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("railyard: the signature of flatcar_production_qemu_image.img.bz2")
    assert left_in(tmp_path / "xdg" / "railyard" / "fetched") == []


def test_version_txt_and_digests_parsing():
    assert parse_version_txt("FLATCAR_VERSION=4152.2.3\nFLATCAR_BUILD=4152\n") == "4152.2.3"
    with pytest.raises(ConfigError):
        parse_version_txt("FLATCAR_BUILD=4152\n")
    text = "# MD5 HASH\naa  a.img.bz2\n# SHA512 HASH\nbb  a.img.bz2\ncc  b.json\n"
    assert parse_digests(text) == {"a.img.bz2": {"md5": "aa", "sha512": "bb"}, "b.json": {"sha512": "cc"}}


INNER = """
def test_the_image(railyard_target):
    target, image = railyard_target
    print("IMAGE", image.path, target.distro, target.version)
"""


def test_a_run_with_distro_flatcar_targets_the_fetched_image(pytester, mirror, keys, tmp_path, monkeypatch):
    signing, _, _ = keys
    mirror.publish(signing, "stable", VERSION, {BIOS: IMAGE}, compress=True)
    xdg = tmp_path / "xdg"
    image = fetch_release(request(mirror, signing, xdg / "railyard" / "fetched"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    pytester.makepyfile(test_inner=INNER)

    result = run_inner(pytester, "-s", "--distro=flatcar", "--channel", "stable")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*IMAGE {image.path} flatcar {VERSION}*"])


def test_a_run_without_the_fetched_image_stops_before_it_starts(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    pytester.makepyfile(test_inner=INNER)

    result = run_inner(pytester, "--distro=flatcar", "--channel", "beta")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*no flatcar beta image has been fetched*run `railyard image fetch --distro flatcar --channel beta` first*"
        ]
    )
    assert "test_the_image" not in result.stdout.str()
