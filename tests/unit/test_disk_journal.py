"""Finding the root file system in a disk's partition table, for reading a stopped machine's journal."""

from __future__ import annotations

import json

import pytest

from harness.disk_journal import DiskJournalError, gpt_partitions, root_partition


def table(*names: str, sectorsize: int = 512) -> str:
    parts = [{"node": f"d{i}", "start": 2048 * (i + 1), "size": 1024, "name": n} for i, n in enumerate(names)]
    return json.dumps({"partitiontable": {"label": "gpt", "sectorsize": sectorsize, "partitions": parts}})


def test_root_partition_by_name_with_byte_offsets():
    root = root_partition(gpt_partitions(table("ESP", "USR-A", "USR-B", "ROOT")))
    assert (root.name, root.start, root.size) == ("ROOT", 4 * 2048 * 512, 1024 * 512)


def test_fedora_coreos_names_its_root_in_lower_case():
    assert root_partition(gpt_partitions(table("EFI-SYSTEM", "boot", "root", sectorsize=4096))).start == (
        3 * 2048 * 4096
    )


def test_no_root_partition_is_a_clear_error():
    with pytest.raises(DiskJournalError, match=r"no partition named ROOT or root .*partitions: ESP, USR-A"):
        root_partition(gpt_partitions(table("ESP", "USR-A")))


def test_unreadable_table_is_a_clear_error():
    with pytest.raises(DiskJournalError, match="cannot read the partition table"):
        gpt_partitions(json.dumps({"nothing": 1}))
