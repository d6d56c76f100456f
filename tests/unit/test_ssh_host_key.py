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


def unit_lines(name: str) -> list[str]:
    return (OVERLAY_DIR / "usr/lib/systemd/system" / name).read_text().splitlines()


def test_the_script_is_installed_executable_and_runs_before_sshd_takes_a_connection():
    assert OVERLAY_MODES["usr/lib/railyard/ssh-host-key"] == 0o755
    service = unit_lines("railyard-ssh-host-key.service")
    assert "ExecStart=/usr/lib/railyard/ssh-host-key" in service
    # Ordered before the socket, which is ordered before sockets.target: so no default dependencies
    # (they would order it after basic.target, a cycle).
    assert "DefaultDependencies=no" in service
    assert "Before=sshd.socket ssh.service shutdown.target" in service
    socket = unit_lines("sshd.socket")
    assert {"Wants=railyard-ssh-host-key.service", "After=railyard-ssh-host-key.service"} <= set(socket)
    # Debian's daemon, where a machine enables it instead, gets its key the same way, and no longer
    # runs the configuration test first.
    dropin = unit_lines("ssh.service.d/railyard.conf")
    assert {"Wants=railyard-ssh-host-key.service", "After=railyard-ssh-host-key.service"} <= set(dropin)
    assert [line for line in dropin if line.startswith("ExecStartPre=")] == ["ExecStartPre="]


def test_sshd_runs_per_connection_and_the_daemon_is_off():
    socket = unit_lines("sshd.socket")
    assert {"ListenStream=22", "Accept=yes", "WantedBy=sockets.target"} <= set(socket)
    service = unit_lines("sshd@.service")
    assert "StandardInput=socket" in service
    (start,) = [line for line in service if line.startswith("ExecStart=")]
    assert start.startswith("ExecStart=-/usr/sbin/sshd -i -e")
    # -e logs to stderr, which must not be the connection (stdout and stderr follow stdin by default).
    assert "StandardError=journal" in service
    # A session's sshd is not stopped as a shutdown starts (no Conflicts=shutdown.target by default, and
    # not in a slice of its own, which would have one).
    assert "DefaultDependencies=no" in service
    assert "Slice=system.slice" in service
    # One privilege separation directory for every connection's sshd: not removed when one of them exits.
    assert {"RuntimeDirectory=sshd", "RuntimeDirectoryPreserve=yes"} <= set(service)
    # ... and there from the boot on, for the health check's `sshd -t` before any connection.
    tmpfiles = (OVERLAY_DIR / "usr/lib/tmpfiles.d/railyard-sshd.conf").read_text().splitlines()
    assert "d /run/sshd 0755 root root -" in tmpfiles
    presets = (OVERLAY_DIR / "usr/lib/systemd/system-preset/40-railyard.preset").read_text().splitlines()
    assert "enable sshd.socket" in presets
    assert "disable ssh.service" in presets


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
