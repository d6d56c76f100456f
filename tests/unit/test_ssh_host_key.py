"""The image's ssh-host-key script: sshd's host key is made once, and mended when a power cut lost it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from images.tree import OVERLAY_DIR, OVERLAY_MODES

SCRIPT = OVERLAY_DIR / "usr/lib/railyard/ssh-host-key"


def run(key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT)], env={"PATH": "/usr/bin:/bin", "RAILYARD_SSH_HOST_KEY": str(key)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip


def usable(key: Path) -> bool:
    return subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True).returncode == 0


def test_the_script_is_installed_executable_and_runs_before_sshd():
    assert OVERLAY_MODES["usr/lib/railyard/ssh-host-key"] == 0o755
    dropin = (OVERLAY_DIR / "usr/lib/systemd/system/ssh.service.d/railyard.conf").read_text()
    starts = [line for line in dropin.splitlines() if line.startswith("ExecStartPre=")]
    assert starts == [
        "ExecStartPre=",
        "ExecStartPre=/usr/lib/railyard/ssh-host-key",
    ]


def test_a_missing_key_is_made(tmp_path):
    key = tmp_path / "ssh_host_ed25519_key"
    run(key)
    assert usable(key)
    assert key.with_name(key.name + ".pub").read_text().startswith("ssh-ed25519 ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [key.name, key.name + ".pub"]


def test_a_usable_key_is_kept(tmp_path):
    key = tmp_path / "ssh_host_ed25519_key"
    run(key)
    before = key.read_bytes()
    result = run(key)
    assert key.read_bytes() == before
    assert result.stderr == ""


@pytest.mark.parametrize("lost", [b"", b"\0" * 411], ids=["empty", "zeroed"])
def test_a_key_lost_to_a_power_cut_is_made_anew(tmp_path, lost):
    # What ext4 leaves of a file created seconds before a power cut: its name, with no (or zeroed) data.
    key = tmp_path / "ssh_host_ed25519_key"
    key.write_bytes(lost)
    key.with_name(key.name + ".pub").write_bytes(lost)
    result = run(key)
    assert usable(key)
    assert "unusable" in result.stderr
