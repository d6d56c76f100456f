"""The checkpoint store of the warm pool: keys, one maker per key, atomic publishing, dropping, pruning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.warm import COMPLETE, CheckpointStore, StartRecord, checkpoint_key, image_about, image_gone


def test_key_depends_on_signature_and_config() -> None:
    key = checkpoint_key("sig", '{"ignition": 1}')
    assert key == checkpoint_key("sig", '{"ignition": 1}')
    assert key != checkpoint_key("sig2", '{"ignition": 1}')
    assert key != checkpoint_key("sig", '{"ignition": 2}')
    # The parts are separated: moving text from one to the other is another key.
    assert checkpoint_key("ab", "c") != checkpoint_key("a", "bc")


def test_a_made_checkpoint_is_published_and_found(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.find("k1") is None
    with store.making("k1", {"test": "t::a"}) as draft:
        assert draft is not None
        (draft.directory / "state").write_bytes(b"x")
        assert store.find("k1") is None  # not visible before the block ends
    found = store.find("k1")
    assert found == tmp_path / "k1"
    assert (found / "state").read_bytes() == b"x"
    assert json.loads((found / COMPLETE).read_text())["test"] == "t::a"
    assert not list(tmp_path.glob(".tmp-*"))


def test_no_second_maker_while_one_makes_it_or_once_it_exists(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with store.making("k", {}) as first:
        assert first is not None
        with store.making("k", {}) as second:  # another open file: the lock is taken
            assert second is None
    with store.making("k", {}) as third:
        assert third is None  # it exists now


def test_the_lock_holds_against_another_process(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    code = (
        "import sys, time; from pathlib import Path; from harness.warm import CheckpointStore\n"
        "with CheckpointStore(Path(sys.argv[1])).making('k', {}) as d:\n"
        "    print('made' if d else 'busy', flush=True); time.sleep(30)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "made"
        with store.making("k", {}) as draft:
            assert draft is None
    finally:
        child.kill()
        child.wait()
    # The killed maker published nothing, and its temporary directory goes at the next prune.
    assert store.find("k") is None
    assert [p.name for p in store.prune()] == [f".tmp-k-{child.pid}"]
    with store.making("k", {}) as draft:
        assert draft is not None


def test_a_failed_or_abandoned_save_publishes_nothing(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with pytest.raises(RuntimeError), store.making("k", {}) as draft:
        assert draft is not None
        (draft.directory / "state").write_bytes(b"half")
        raise RuntimeError("QEMU died")
    with store.making("k", {}) as draft:
        assert draft is not None
        draft.abandoned = True
    assert store.find("k") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks"]


def test_drop_removes_a_checkpoint_with_read_only_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with store.making("k", {}) as draft:
        assert draft is not None
        state = draft.directory / "state"
        state.write_bytes(b"s")
        state.chmod(0o444)
    store.drop("k", "truncated")
    assert store.find("k") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks"]


def test_prune_removes_what_was_not_used_for_long(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for key in ("old", "new"):
        with store.making(key, {}) as draft:
            assert draft is not None
    old = time.time() - 8 * 24 * 3600
    os.utime(tmp_path / "old" / COMPLETE, (old, old))
    assert store.prune() == [tmp_path / "old"]
    assert store.find("new") is not None
    store.find("new")  # a use marks it as used now
    assert store.prune(max_idle=3600) == []


def test_start_record_says_how_the_machine_came_up() -> None:
    assert StartRecord("cold", 54.25).describe() == "cold in 54.2 s"
    restored = StartRecord("restored-booted", 2.96, checkpoint="abc", note="dropped one")
    assert restored.describe() == "restored-booted in 3.0 s from abc (dropped one)"
    waited = StartRecord("restored-firstboot", 14.04, checkpoint="abc", slot_wait=41.27)
    assert waited.describe() == (
        "restored-firstboot in 14.0 s from abc, after 41.3 s waiting for a machine slot"
    )
    assert StartRecord("cold", 30.0, slot_wait=0.2).describe() == "cold in 30.0 s"


@pytest.mark.parametrize(
    "record",
    [
        StartRecord("cold", 54.2),
        StartRecord("restored-booted", 3.0, checkpoint="abc", note="dropped one (truncated)"),
        StartRecord("restored-firstboot", 14.0, checkpoint="abc", slot_wait=41.3),
        StartRecord(
            "restored-firstboot",
            17.9,
            checkpoint="f0",
            slot_wait=27.5,
            note="saved as checkpoint 1d in 2.2 s",
        ),
    ],
)
def test_a_start_line_reads_back_as_its_record(record: StartRecord) -> None:
    assert StartRecord.parse(record.describe()) == record


@pytest.mark.parametrize("line", ["", "warm in 3.0 s", "cold in s", "cold in 3.0 s from"])
def test_a_line_no_start_record_wrote_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not a machine start"):
        StartRecord.parse(line)


def test_checkpoints_are_listed_and_cleared_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    store = CheckpointStore(tmp_path)
    with store.making("k1", {"kind": "booted", "made by": "test_x-1"}) as draft:
        assert draft is not None
        (draft.directory / "state").write_bytes(b"\0" * 2**20)
    assert main(["checkpoints", "--dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "k1  booted" in listing
    assert "test_x-1" in listing
    assert "1 checkpoint(s), 1.0 MiB" in listing
    assert main(["checkpoints", "--dir", str(tmp_path), "--clear"]) == 0
    assert store.entries() == []


def test_a_key_is_wanted_from_its_second_machine_on(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.wanted("k") is False
    assert store.wanted("k") is True
    assert CheckpointStore(tmp_path).wanted("k") is True  # a later run remembers it
    assert store.wanted("other") is False
    old = time.time() - 8 * 24 * 3600
    os.utime(tmp_path / ".seen" / "other", (old, old))
    store.prune()
    assert store.wanted("other") is False  # forgotten after a week


def test_prune_removes_checkpoints_whose_image_was_deleted_or_rebuilt(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    kept, rebuilt, deleted = (images / f"{name}.qcow2" for name in ("kept", "rebuilt", "deleted"))
    for image in (kept, rebuilt, deleted):
        image.write_bytes(b"image one")
    store = CheckpointStore(tmp_path / "checkpoints")
    for key, image in (("k-kept", kept), ("k-rebuilt", rebuilt), ("k-deleted", deleted)):
        with store.making(key, {"kind": "booted", **image_about(image)}) as draft:
            assert draft is not None
    with store.making("k-no-image", {"kind": "booted"}) as draft:  # made before images were recorded
        assert draft is not None
    assert store.prune() == []  # every image is as its checkpoint booted it

    rebuilt.write_bytes(b"image two, built again")
    deleted.unlink()
    removed = sorted(path.name for path in store.prune())
    assert removed == ["k-deleted", "k-rebuilt"]
    assert store.find("k-kept") is not None
    assert store.find("k-no-image") is not None


def test_what_a_checkpoint_records_of_its_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"1234")
    about = image_about(tmp_path / "." / "disk.qcow2")
    assert about["image"] == str(image)
    assert about["image size"] == "4"
    assert image_gone(about) is None
    os.utime(image, ns=(0, 0))
    assert image_gone(about) == f"its image {image} has changed since"
    image.unlink()
    assert image_gone(about) == f"its image {image} is gone"
    assert image_about(image) == {}
