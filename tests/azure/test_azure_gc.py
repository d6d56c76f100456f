"""`railyard gc --platform=azure` against the fake ARM server: only old groups tagged by a run go."""

from __future__ import annotations

import datetime
from pathlib import Path

from harness.cli import main
from platforms.azure import AzurePlatform
from platforms.azure.naming import TAG_CREATED, TAG_RUN, iso_utc
from platforms.base import GarbageRequest


def ago(hours: float) -> str:
    return iso_utc(datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=hours))


def seed(fake_arm) -> None:
    fake_arm.add_group("railyard-old", {TAG_RUN: "r1", TAG_CREATED: ago(7)})
    fake_arm.add_group("railyard-young", {TAG_RUN: "r2", TAG_CREATED: ago(1)})
    fake_arm.add_group("someone-elses", {"owner": "ops"})
    fake_arm.add_group("untagged-old", {TAG_CREATED: ago(48)})
    fake_arm.add_group("railyard-no-time", {TAG_RUN: "r3"})
    fake_arm.add_group("railyard-bad-time", {TAG_RUN: "r4", TAG_CREATED: "yesterday"})
    fake_arm.add_group("railyard-images", {"railyard-purpose": "images"})


def groups(fake_arm) -> set[str]:
    return {g["name"] for g in fake_arm.state.groups.values()}


def request(options, older_than=None, dry_run=False) -> GarbageRequest:
    return GarbageRequest(
        options=options, older_than=older_than, output_root=Path("_railyard"), dry_run=dry_run
    )


def test_gc_deletes_only_old_tagged_groups(fake_arm, azure_options):
    seed(fake_arm)
    lines = AzurePlatform.collect_garbage(request(azure_options))

    assert len(lines) == 1
    assert lines[0].startswith("deleted resource group railyard-old (run r1")
    assert groups(fake_arm) == {
        "railyard-young", "someone-elses", "untagged-old", "railyard-no-time", "railyard-bad-time",
        "railyard-images",
    }  # fmt: skip
    (listing,) = fake_arm.find("GET", r"/resourcegroups$")
    assert listing.query["$filter"] == "tagName eq 'railyard-run'"


def test_gc_dry_run_deletes_nothing(fake_arm, azure_options):
    seed(fake_arm)
    before = groups(fake_arm)
    lines = AzurePlatform.collect_garbage(request(azure_options, older_than=1800, dry_run=True))

    assert sorted(lines) == [
        f"would delete resource group railyard-old (run r1, created {fake_arm.state.groups['railyard-old']['tags'][TAG_CREATED]})",
        f"would delete resource group railyard-young (run r2, created {fake_arm.state.groups['railyard-young']['tags'][TAG_CREATED]})",
    ]
    assert groups(fake_arm) == before
    assert fake_arm.find("DELETE", ".") == []


def test_gc_command_line(fake_arm, azure_options, capsys):
    seed(fake_arm)
    code = main([
        "gc", "--platform=azure", "--older-than", "30m",
        "--azure-arm-endpoint", azure_options["azure_arm_endpoint"], "--azure-poll-interval", "0",
    ])  # fmt: skip

    assert code == 0
    assert "azure: 2 leftover(s) removed" in capsys.readouterr().out
    assert "railyard-old" not in groups(fake_arm)
    assert "railyard-young" not in groups(fake_arm)
    assert "untagged-old" in groups(fake_arm)
