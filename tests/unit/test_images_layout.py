"""Partition table layout of the default image (pure computation, no tools run)."""

from __future__ import annotations

import pytest

from harness.errors import ImageError
from images import disk


def test_partitions_are_in_order_aligned_and_do_not_overlap():
    layout = disk.compute_layout(usr_mib=768, esp_mib=160, root_mib=512)
    labels = [p.label for p in layout.partitions]
    assert labels == ["ESP", "USR-A", "USR-B", "ROOT"]
    assert [p.number for p in layout.partitions] == [1, 2, 3, 4]
    assert layout.partitions[0].start_mib == 1
    for before, after in zip(layout.partitions, layout.partitions[1:], strict=False):
        assert after.start_mib == before.end_mib
    assert layout.partition("USR-A").size_mib == layout.partition("USR-B").size_mib == 768
    assert layout.total_mib == 1 + 160 + 768 + 768 + 512 + 1


def test_esp_has_the_esp_type_and_others_linux_data():
    layout = disk.compute_layout(usr_mib=768)
    assert layout.partition("ESP").type_guid == disk.ESP_TYPE
    assert {layout.partition(x).type_guid for x in ("USR-A", "USR-B", "ROOT")} == {disk.LINUX_TYPE}


def test_sfdisk_script_names_every_partition_in_sectors():
    layout = disk.compute_layout(usr_mib=768, esp_mib=160, root_mib=512)
    script = layout.sfdisk_script()
    assert script.startswith("label: gpt\n")
    assert "first-lba: 2048" in script
    assert f'start=2048, size={160 * 2048}, type={disk.ESP_TYPE}, name="ESP"' in script
    usr_b = layout.partition("USR-B")
    assert f"start={usr_b.start_mib * 2048}, size={768 * 2048}" in script
    assert script.count("name=") == 4


def test_usr_partition_leaves_room_and_rounds_to_64_mib():
    assert disk.usr_partition_mib(0) == disk.USR_MIN_MIB
    size = disk.usr_partition_mib(700 * disk.MIB)
    assert size % 64 == 0
    assert size * disk.MIB >= 700 * disk.MIB * 1.3


def test_unknown_label_and_bad_sizes():
    layout = disk.compute_layout(usr_mib=768)
    with pytest.raises(KeyError):
        layout.partition("USR-C")
    with pytest.raises(ImageError):
        disk.compute_layout(usr_mib=0)
