"""The tmpfiles.d skeleton that rebuilds the image's /var on an empty /var (pure file-system walk, no tools run)."""

from __future__ import annotations

import os
from pathlib import Path

from images.tree import tmpfiles_paths, var_tmpfiles


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    audit = root / "var" / "log" / "audit"
    audit.mkdir(parents=True)
    audit.chmod(0o700)
    os.chown(audit, 0, 4)
    spool = root / "var" / "spool" / "cron"
    spool.mkdir(parents=True)
    (root / "var" / "tmp").mkdir()
    (root / "var" / "tmp").chmod(0o1777)
    (root / "var" / "run").symlink_to("../run")
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "status").write_text("Package: x\n")
    return root


def test_directories_keep_their_mode_and_owner_and_symlinks_their_target(tmp_path: Path) -> None:
    lines = var_tmpfiles(_tree(tmp_path)).splitlines()
    assert lines[0].startswith("#")
    assert "d /var/log/audit 0700 0 4 -" in lines
    assert "d /var/tmp 1777 0 0 -" in lines
    assert "L /var/run - - - - ../run" in lines
    assert "d /var/spool/cron 0755 0 0 -" in lines
    # Files are build state, not skeleton.
    assert not any("/var/lib/dpkg/status" in line for line in lines)


def test_parents_come_before_their_children(tmp_path: Path) -> None:
    paths = [line.split()[1] for line in var_tmpfiles(_tree(tmp_path)).splitlines()[1:]]
    for i, path in enumerate(paths):
        parent = str(Path(path).parent)
        if parent in paths:
            assert paths.index(parent) < i, (parent, path)


def test_paths_other_tmpfiles_files_name_are_left_to_them(tmp_path: Path) -> None:
    covered = tmpfiles_paths("# systemd's own\nd /var/tmp 1777 root root 30d\nL /var/run - - - - ../run\n\n")
    assert covered == {"/var/tmp", "/var/run"}
    text = var_tmpfiles(_tree(tmp_path), covered)
    assert "/var/tmp " not in text
    assert "/var/run " not in text
    assert "d /var/log/audit 0700 0 4 -" in text


def test_a_symlinked_directory_is_not_walked_into(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "run" / "inside").mkdir(parents=True)
    assert "/var/run/inside" not in var_tmpfiles(root)
