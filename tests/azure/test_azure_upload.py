"""`railyard image upload --platform=azure`: fixed VHD, page blob upload and managed image, against the fake."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from platforms.azure import AzurePlatform
from platforms.azure.vhd import MIB
from platforms.base import UploadRequest

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

SIZE = 9 * MIB + 4096  # not MiB-aligned on purpose; the middle 4 MiB chunk stays zero


def make_image(directory: Path, firmware: str = "uefi") -> Path:
    image = directory / "disk.raw"
    with image.open("wb") as f:
        f.truncate(SIZE)
        f.seek(MIB + 512)
        f.write(b"RAILYARD" * 64)
    meta = {
        "name": "railyard",
        "version": "1.2.3",
        "build_key": "k",
        "channel": "stable",
        "firmware": firmware,
    }
    image.with_suffix(".json").write_text(json.dumps(meta))
    return image


def test_upload_makes_a_fixed_vhd_page_blob_and_a_gen2_image(fake_arm, azure_options, tmp_path):
    image = make_image(tmp_path)
    image_id = AzurePlatform.upload_image(
        UploadRequest(
            options=azure_options,
            image=image,
            name="railyard-stable-1.2.3",
            metadata={"os": "railyard", "version": "1.2.3", "channel": "stable"},
        )
    )

    assert image_id.endswith(
        "/resourceGroups/railyard-images/providers/Microsoft.Compute/images/railyard-stable-1.2.3"
    )
    blob = bytes(fake_arm.state.blobs["railyard-vhds/railyard-stable-1.2.3.vhd"])
    assert len(blob) == 10 * MIB + 512  # aligned to a MiB, plus the VHD footer
    assert blob[-512:].startswith(b"conectix")
    assert blob[MIB + 512 : MIB + 1024] == b"RAILYARD" * 64
    pages = fake_arm.find("PUT", r"/blob/railyard-vhds/.*\.vhd$")
    ranges = [p.headers["x-ms-range"] for p in pages if p.query.get("comp") == "page"]
    assert ranges == [
        f"bytes=0-{4 * MIB - 1}",
        f"bytes={8 * MIB}-{10 * MIB + 511}",
    ]  # the zero chunk is skipped
    assert all(p.headers["authorization"].startswith("Bearer ") for p in pages)

    (put,) = fake_arm.find("PUT", r"/images/railyard-stable-1\.2\.3$")
    props = put.body["properties"]
    assert props["hyperVGeneration"] == "V2"
    assert props["storageProfile"]["osDisk"] == {
        "osType": "Linux",
        "osState": "Generalized",
        "blobUri": f"{fake_arm.blob_endpoint}/railyard-vhds/railyard-stable-1.2.3.vhd",
        "caching": "ReadWrite",
    }
    assert put.body["tags"]["version"] == "1.2.3"
    assert "railyard-created" in put.body["tags"]
    assert "railyard-run" not in fake_arm.state.groups["railyard-images"]["tags"]  # gc never takes it
    assert list(tmp_path.iterdir()) == [image, image.with_suffix(".json")]  # the VHD is gone


def test_bios_image_becomes_gen1_through_the_command_line(fake_arm, azure_options, tmp_path, capsys):
    image = make_image(tmp_path, firmware="bios")
    code = main([
        "image", "upload", "--platform=azure", "--image", str(image), "--name", "bios-image",
        "--azure-arm-endpoint", azure_options["azure_arm_endpoint"], "--azure-location", "westeurope",
        "--azure-storage-account", "railyardtest", "--azure-blob-endpoint", fake_arm.blob_endpoint,
        "--azure-poll-interval", "0",
    ])  # fmt: skip

    assert code == 0
    assert capsys.readouterr().out.strip().endswith("/images/bios-image")
    (put,) = fake_arm.find("PUT", r"/images/bios-image$")
    assert put.body["properties"]["hyperVGeneration"] == "V1"


def test_upload_needs_a_storage_account(fake_arm, azure_options, tmp_path, capsys):
    options = {
        k: v for k, v in azure_options.items() if k not in ("azure_storage_account", "azure_blob_endpoint")
    }
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="--azure-storage-account"):
        AzurePlatform.upload_image(UploadRequest(options=options, image=make_image(tmp_path), name="x"))
    assert fake_arm.requests == []
