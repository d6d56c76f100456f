"""Cache keys of the root file system, the initramfs inputs and whole images."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.errors import ImageError
from images import build, rootfs, tree


def test_rootfs_key_depends_on_the_package_set_not_its_order():
    packages = rootfs.PACKAGES
    assert rootfs.rootfs_key(packages) == rootfs.rootfs_key(tuple(reversed(packages)))
    assert rootfs.rootfs_key(packages) != rootfs.rootfs_key((*packages, "strace"))


def test_rootfs_key_depends_on_the_recipe(monkeypatch):
    before = rootfs.rootfs_key()
    monkeypatch.setattr(rootfs, "ROOTFS_RECIPE_VERSION", "changed")
    assert rootfs.rootfs_key() != before


def test_image_key_depends_on_channel_version_and_customisation(monkeypatch):
    key = build.image_key("stable", "1.0.0")
    assert key == build.image_key("stable", "1.0.0")
    assert key != build.image_key("beta", "1.0.0")
    assert key != build.image_key("stable", "1.0.1")
    monkeypatch.setattr(build, "customisation_hash", lambda: "other")
    assert key != build.image_key("stable", "1.0.0")


def test_tree_hash_sees_content_names_and_links(tmp_path):
    (tmp_path / "a").write_text("one")
    first = tree.tree_hash(tmp_path)
    (tmp_path / "a").write_text("two")
    second = tree.tree_hash(tmp_path)
    (tmp_path / "link").symlink_to("a")
    third = tree.tree_hash(tmp_path)
    assert len({first, second, third}) == 3


def test_paths_live_in_the_cache_dir_and_name_channel_and_version(tmp_path):
    path = build.image_path(tmp_path, "alpha", "2.0.0")
    assert path.parent == tmp_path / "images"
    assert path.name.startswith("railyard-alpha-2.0.0-")
    assert path.suffix == ".qcow2"
    assert build.usr_payload_path(tmp_path, "alpha", "2.0.0").suffix == ".ext4"


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.default_cache_dir() == tmp_path / "railyard"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert build.default_cache_dir() == Path.home() / ".cache" / "railyard"


@pytest.mark.parametrize("channel", ["", "../x", "a b", "x" * 65])
def test_invalid_channel_is_refused_before_any_work(channel, tmp_path):
    with pytest.raises(ImageError):
        build.build_image(channel=channel, cache_dir=tmp_path)


def test_mmdebstrap_command_uses_the_package_set_and_hooks(tmp_path):
    command = rootfs.mmdebstrap_command(tmp_path / "out.tar", mirror="http://mirror.invalid/debian")
    assert command[0] == "mmdebstrap"
    assert "--variant=apt" in command
    assert any(c.startswith("--include=") and "ignition" in c and "systemd-boot" in c for c in command)
    assert command[-3:] == ["bookworm", str(tmp_path / "out.tar"), "http://mirror.invalid/debian"]


def test_mmdebstrap_writes_a_tarball_whatever_the_output_is_called():
    from images.rootfs import mmdebstrap_command

    command = mmdebstrap_command(Path("/cache/rootfs/rootfs-x.partial-12.tar"))
    assert "--format=tar" in command
    assert command[-2] == "/cache/rootfs/rootfs-x.partial-12.tar"


def test_the_compressed_payload_keeps_no_raw_copy_and_is_not_rebuilt(monkeypatch, tmp_path):
    builds: list[str] = []

    def fake_build(version, channel, force, cache_dir, progress):
        builds.append(version)
        raw = build.usr_payload_path(cache_dir, channel, version)
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_bytes(b"usr file system " * 1000)
        return raw

    monkeypatch.setattr(build, "signing_key", lambda cache_dir=None: tmp_path / "key")
    monkeypatch.setattr(build, "_signer_id", lambda cache_dir: "test-signer")
    monkeypatch.setattr(build, "_build_usr_locked", fake_build)
    first = build.compressed_usr_image("2.0.0", "alpha", cache_dir=tmp_path)
    assert first == build.compressed_usr_payload_path(tmp_path, "alpha", "2.0.0")
    assert first.name.endswith(".ext4.zst")
    unpacked = subprocess.run(["zstd", "-dc", first], capture_output=True, check=True).stdout
    assert unpacked == b"usr file system " * 1000
    assert not build.usr_payload_path(tmp_path, "alpha", "2.0.0").exists()
    assert build.compressed_usr_image("2.0.0", "alpha", cache_dir=tmp_path) == first
    assert builds == ["2.0.0"]
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]
