"""Channel versions, update versions, the payload-signing key and what the image carries for updates."""

import shutil
import stat
import subprocess
import sys

import pytest

from harness.errors import ImageError
from harness.update_signing import sign_payload, verify_payload
from images import build, tree


def test_each_channel_has_its_own_version_and_updates_count_up():
    versions = {ch: build.channel_version(ch) for ch in ("alpha", "beta", "stable", "lts")}
    assert len(set(versions.values())) == 4
    assert build.channel_version("unknown") == build.DEFAULT_VERSION
    assert build.update_version("stable") == build.next_version(versions["stable"])
    assert build.update_version("stable", 2) == build.next_version(versions["stable"], 2)


@pytest.mark.parametrize(
    ("version", "steps", "expected"),
    [
        ("2.0.0", 1, "2.0.1"),
        ("2.0.9", 1, "2.0.10"),
        ("4.0.0", 2, "4.0.2"),
        ("3510", 1, "3511"),
        ("1.2.3-rc", 1, "1.2.4-rc"),
    ],
)
def test_next_version(version, steps, expected):
    assert build.next_version(version, steps) == expected


def test_next_version_needs_a_number_and_a_step():
    with pytest.raises(ImageError):
        build.next_version("current")
    with pytest.raises(ImageError):
        build.next_version("1.0.0", 0)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_signing_key_is_made_once_per_cache_and_changes_the_cache_keys(tmp_path):
    before = build.image_path(tmp_path, "stable", "2.0.0")
    private = build.signing_key(tmp_path)
    assert build.signing_key(tmp_path) == private
    line = build.signing_public_key(tmp_path)
    assert line.startswith('railyard-update namespaces="railyard-update" ssh-ed25519 ')
    assert build.image_path(tmp_path, "stable", "2.0.0") != before
    payload = tmp_path / "payload"
    payload.write_bytes(b"usr")
    assert verify_payload(payload, sign_payload(payload, private), line)
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "railyard-update-signing",
        "railyard-update-signing.pub",
        "update-signing.pub",
    ]


def test_image_key_depends_on_the_signer():
    assert build.image_key("stable", "2.0.0", "a") != build.image_key("stable", "2.0.0", "b")


def test_the_image_runs_the_update_agent_from_usr_and_loads_the_power_button():
    assert tree.OVERLAY_MODES["usr/lib/railyard/update-agent"] == 0o755
    assert tree.OVERLAY_MODES["usr/bin/railyard-update"] == 0o755
    assert ("multi-user.target.wants/railyard-update-agent.service", "../railyard-update-agent.service") in (
        tree.STATIC_LINKS
    )
    modules = (tree.OVERLAY_DIR / "usr/lib/modules-load.d/railyard.conf").read_text().split()
    assert "button" in modules
    assert (tree.OVERLAY_DIR / "usr/lib/systemd/system/railyard-update-agent.service").is_file()


def test_every_unit_the_image_enables_in_usr_is_in_its_overlay():
    units = tree.OVERLAY_DIR / "usr/lib/systemd/system"
    for link, target in tree.STATIC_LINKS:
        assert (units / link).parent.joinpath(target).resolve().is_file(), (link, target)
    assert ("sysinit.target.wants/railyard-update-done.service", "../railyard-update-done.service") in (
        tree.STATIC_LINKS
    )


def test_every_module_of_the_update_agent_is_installed_and_the_installed_launcher_runs(tmp_path, monkeypatch):
    package = tree.AGENT_DIR / tree.AGENT_PACKAGE
    modules = sorted(p.name for p in package.glob("*.py"))
    assert {"__init__.py", "__main__.py", "agent.py", "commands.py"} <= set(modules)
    assert sorted(rel for rel in tree.INSTALLED_FILES if rel.startswith(f"{tree.AGENT_LIB_IN_TREE}/")) == [
        f"{tree.AGENT_LIB_IN_TREE}/{tree.AGENT_PACKAGE}/{name}" for name in modules
    ]
    unit = (tree.OVERLAY_DIR / "usr/lib/systemd/system/railyard-update-agent.service").read_text()
    assert "ExecStart=/usr/bin/python3 /usr/lib/railyard/update-agent run\n" in unit

    monkeypatch.setattr(tree.os, "chown", lambda *args: None)  # the image build runs as root
    root = tmp_path / "root"
    tree.install_files(root)
    listing = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert listing == sorted(tree.INSTALLED_FILES)
    for name in modules:
        installed = root / tree.AGENT_LIB_IN_TREE / tree.AGENT_PACKAGE / name
        assert installed.read_bytes() == (package / name).read_bytes()
        assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    launcher = root / "usr/lib/railyard/update-agent"
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755

    # Isolated and without site-packages: the installed package alone, with the standard library.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "update-status").write_text("CURRENT_OP=UPDATE_STATUS_IDLE\n")
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(launcher), "--run-dir", str(run_dir), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "CURRENT_OP=UPDATE_STATUS_IDLE\n"), result.stderr
    assert not list(root.rglob("__pycache__"))  # nothing written into /usr
