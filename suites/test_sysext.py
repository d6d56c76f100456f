"""systemd-sysext: an extension image that Ignition writes to /var/lib/extensions is merged into /usr at boot,
and unmerged once it is removed.

The image is a small ext4 file system built on the host. It declares the image's SYSEXT_LEVEL, not a
VERSION_ID, so it merges into every channel and version. One machine serves the module; the last test
removes the extension.
"""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.ignition import IgnitionConfig

NAME = "railyard-hello"
IMAGE_PATH = f"/var/lib/extensions/{NAME}.raw"
TOOL = f"/usr/bin/{NAME}"
GREETING = "hello from a system extension"
FIXED_UUID = "6a5f0c1e-2b1d-4c55-9a3e-0d1e5e7a1c01"  # the same image, byte for byte, on every run


def extension_image() -> bytes:
    """An ext4 image holding /usr/bin/railyard-hello and its extension-release file."""
    with tempfile.TemporaryDirectory(prefix="railyard-sysext-") as tmp:
        root = Path(tmp, "root")
        release = root / "usr/lib/extension-release.d" / f"extension-release.{NAME}"
        release.parent.mkdir(parents=True)
        release.write_text("ID=railyard\nSYSEXT_LEVEL=1.0\n")
        tool = root / TOOL.lstrip("/")
        tool.parent.mkdir(parents=True)
        tool.write_text(f"#!/bin/sh\necho '{GREETING}'\n")
        tool.chmod(0o755)
        paths = [root, *sorted(root.rglob("*"))]
        for path in paths:
            os.utime(path, (0, 0))
        image = Path(tmp, "image.raw")
        options = ["-q", "-F", "-O", "^has_journal", "-U", FIXED_UUID]
        options += ["-E", f"hash_seed={FIXED_UUID},root_owner=0:0", "-d", str(root)]
        fixed_time = {**os.environ, "E2FSPROGS_FAKE_TIME": "1"}
        subprocess.run(
            ["mkfs.ext4", *options, str(image), "2M"], check=True, capture_output=True, env=fixed_time
        )
        # mkfs copies each file's change time, which no one can set on the host: zero it in the image.
        inodes = ["/" + str(path.relative_to(root)).removeprefix(".") for path in paths]
        script = "".join(f"set_inode_field {inode} ctime 0\n" for inode in inodes)
        subprocess.run(
            ["debugfs", "-w", "-f", "-", str(image)], input=script.encode(), check=True, capture_output=True,
            env=fixed_time,
        )  # fmt: skip
        return image.read_bytes()


pytestmark = [
    pytest.mark.ignition(
        IgnitionConfig()
        .add_file(IMAGE_PATH, extension_image(), mode=0o644)
        .add_unit("systemd-sysext.service", enabled=True)
        .to_dict()
    ),
    pytest.mark.distros("railyard"),  # the extension names the default image's ID
]


def test_an_extension_is_merged_into_usr_at_boot(module_machine):
    """kola: sysext.simple"""
    m = module_machine
    assert m.succeed(TOOL).strip() == GREETING
    assert NAME in m.succeed("systemd-sysext list --no-pager"), "the extension is not found"
    assert NAME in m.succeed("systemd-sysext status --no-pager"), "the extension is not merged"
    # /usr's own file system below, the merged overlay on top
    assert m.succeed("findmnt -n -o FSTYPE /usr").split() == ["ext4", "overlay"]
    m.fail(f"sudo touch /usr/bin/{NAME}-written")  # merged /usr is read-only, as /usr is


def test_an_extension_removed_is_unmerged(module_machine):
    """kola: sysext.simple (the extension taken away again)"""
    m = module_machine
    m.succeed(f"sudo rm {IMAGE_PATH} && sudo systemd-sysext refresh")
    m.fail(f"test -e {TOOL}")
    assert NAME not in m.succeed("systemd-sysext status --no-pager")
    assert m.succeed("findmnt -n -o FSTYPE /usr").split() == ["ext4"]
