"""`railyard image prune`: what of the image cache the current builder can never use again goes, the rest
stays, and the warm pool's checkpoints of a removed image go with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.warm import CheckpointStore, image_about
from images import build, rootfs, tree

OTHER_KEY = "0123456789abcdef"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_prune_removes_other_builds_and_their_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "railyard"
    current_image = _touch(build.image_path(cache, "stable", "2.0.0"))
    current_meta = _touch(current_image.with_suffix(".json"))
    current_payload = _touch(build.compressed_usr_payload_path(cache, "beta", "3.0.1"))
    current_rootfs = _touch(rootfs.rootfs_tarball_path(cache))
    current_initrd = _touch(
        cache / "initramfs" / f"initrd-{rootfs.rootfs_key()}-{tree.initramfs_inputs_hash()}.img"
    )
    old_image = _touch(cache / "images" / f"railyard-stable-2.0.0-{OTHER_KEY}.qcow2")
    stale = [
        old_image,
        _touch(cache / "images" / f"railyard-stable-2.0.0-{OTHER_KEY}.json"),
        _touch(cache / "payloads" / f"railyard-usr-beta-3.0.1-{OTHER_KEY}.ext4.zst"),
        _touch(cache / "payloads" / f"railyard-usr-beta-3.0.1-{OTHER_KEY}.ext4.zst.sig"),
        _touch(cache / "rootfs" / f"rootfs-{rootfs.SUITE}-{OTHER_KEY}.tar"),
        _touch(cache / "initramfs" / f"initrd-{rootfs.rootfs_key()}-{OTHER_KEY}.img"),
    ]
    not_ours = _touch(cache / "images" / "my-own.qcow2")
    store = CheckpointStore(cache / "checkpoints")
    for key, image in (("of-old", old_image), ("of-current", current_image)):
        with store.making(key, {"kind": "booted", **image_about(image)}) as draft:
            assert draft is not None

    assert main(["image", "prune", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert all(f"would remove {path} (" in listed for path in stale), listed
    assert all(path.exists() for path in stale)

    assert main(["image", "prune"]) == 0
    said = capsys.readouterr().out
    assert not [path for path in stale if path.exists()]
    for kept in (current_image, current_meta, current_payload, current_rootfs, current_initrd, not_ours):
        assert kept.exists(), kept
    assert store.find("of-old") is None
    assert store.find("of-current") is not None
    assert f"removed checkpoint {store.path('of-old')}" in said
    assert f"{len(stale)} stale file(s)" in said

    assert main(["image", "prune"]) == 0  # nothing left to do
    assert "0 stale file(s)" in capsys.readouterr().out


def test_prune_also_prunes_the_checkpoints_of_a_checkpoint_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run with `--checkpoint-dir DIR` keeps its checkpoints there: `image prune --checkpoint-dir DIR`
    removes those of a pruned image, and leaves the default store alone."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "railyard"
    old_image = _touch(cache / "images" / f"railyard-stable-2.0.0-{OTHER_KEY}.qcow2")
    elsewhere = CheckpointStore(tmp_path / "elsewhere")
    default = CheckpointStore(cache / "checkpoints")
    for store in (elsewhere, default):
        with store.making("of-old", {"kind": "booted", **image_about(old_image)}) as draft:
            assert draft is not None

    assert main(["image", "prune", "--checkpoint-dir", str(elsewhere.root)]) == 0
    assert not old_image.exists()
    assert f"removed checkpoint {elsewhere.path('of-old')}" in capsys.readouterr().out
    assert elsewhere.find("of-old") is None
    assert default.path("of-old").is_dir(), "the store not named is not looked at"
