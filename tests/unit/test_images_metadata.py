"""Image sidecar metadata: round trip and errors."""

from __future__ import annotations

import json

import pytest

from harness.errors import ImageError
from images.metadata import ImageMetadata, metadata_path, read_metadata, write_metadata


def test_round_trip_keeps_every_field(tmp_path):
    image = tmp_path / "railyard-stable-1.0.0-abc.qcow2"
    meta = ImageMetadata(
        name="railyard-stable-1.0.0",
        version="1.0.0",
        build_key="abc",
        kernel_version="6.1.0-50-amd64",
        partitions={"ESP": 160, "USR-A": 768, "USR-B": 768, "ROOT": 512},
        build_seconds={"rootfs": 3.0},
    )
    write_metadata(metadata_path(image), meta)
    assert metadata_path(image) == tmp_path / "railyard-stable-1.0.0-abc.json"
    assert read_metadata(image) == meta


def test_defaults_are_what_the_harness_expects(tmp_path):
    data = ImageMetadata(name="n", version="1.2.3", build_key="k").to_dict()
    assert data["os_id"] == "railyard"
    assert data["distro"] == "railyard"
    assert data["channel"] == "stable"
    assert data["default_user"] == "core"
    assert data["ignition_fw_cfg"] == "opt/com.coreos/config"
    assert data["firmware"] == "uefi"
    json.dumps(data)


def test_missing_sidecar_is_none_and_unknown_keys_are_ignored(tmp_path):
    image = tmp_path / "x.qcow2"
    assert read_metadata(image) is None
    metadata_path(image).write_text(json.dumps({"name": "n", "version": "1", "build_key": "k", "future": 1}))
    meta = read_metadata(image)
    assert meta is not None
    assert meta.version == "1"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"name": "only-a-name"}'])
def test_malformed_sidecar_raises_image_error(tmp_path, text):
    image = tmp_path / "x.qcow2"
    metadata_path(image).write_text(text)
    with pytest.raises(ImageError):
        read_metadata(image)


def test_the_package_manifest_lists_installed_packages_only():
    from images.tree import parse_dpkg_status

    status = (
        "Package: systemd\nStatus: install ok installed\nVersion: 252.38-1~deb12u1\n"
        "Description: system and service manager\n long description line: with a colon\n\n"
        "Package: removed-one\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
        "Package: ignition\nStatus: install ok installed\nVersion: 2.14.0-2+b4\n"
    )
    assert parse_dpkg_status(status) == {"ignition": "2.14.0-2+b4", "systemd": "252.38-1~deb12u1"}
