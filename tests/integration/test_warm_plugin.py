"""The warm pool through the plugin, in child runs as a user has it: booted checkpoints saved and restored,
a damaged one dropped, first-boot checkpoints running Ignition with each machine's own config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.helpers import run_inner

PROPERTY = re.compile(r'<property name="start (?P<machine>[^"]+)" value="(?P<value>[^"]+)"')


def starts(xml: Path) -> dict[str, str]:
    return {m["machine"]: m["value"] for m in PROPERTY.finditer(xml.read_text())}


def test_the_plugin_restores_machines_and_boots_cold_past_a_damaged_checkpoint(
    pytester: pytest.Pytester,
) -> None:
    """A machine of a config seen before boots cold and saves the checkpoint; the next is restored from it; a
    checkpoint QEMU refuses is dropped, and the machine boots cold (and saves it anew) with a note."""
    pytester.makepyfile(
        test_two="""
        def test_first(machine):
            assert machine.succeed("systemctl is-system-running").strip() == "running"

        def test_second(machine):
            assert machine.succeed("systemctl is-system-running").strip() == "running"
        """
    )
    store = pytester.path / "checkpoints"
    xml = pytester.path / "report.xml"
    warm = ("--warm=booted", "--checkpoint-dir", str(store), f"--junitxml={xml}")
    result = run_inner(pytester, *warm, "-k", "first", "test_two.py")
    result.assert_outcomes(passed=1, deselected=1)
    once = starts(xml)["test_first-1"]
    assert once.startswith("cold in "), once
    assert "saved" not in once, "a config seen once is not worth a checkpoint"
    result = run_inner(pytester, *warm, "test_two.py")
    result.assert_outcomes(passed=2)
    first = starts(xml)
    assert first["test_first-1"].startswith("cold in "), first
    assert "saved as checkpoint" in first["test_first-1"], "it came back: now it is worth one"
    [made] = [p for p in store.iterdir() if not p.name.startswith(".")]
    restored = re.fullmatch(
        rf"restored-booted in [0-9.]+ s from {made.name}(, after [0-9.]+ s waiting for a machine slot)?",
        first["test_second-1"],
    )
    assert restored is not None, first

    state = made / "state"
    state.chmod(0o644)
    with state.open("r+b") as stream:  # the same size, unreadable to QEMU
        stream.write(b"\0" * 4096)
    result = run_inner(pytester, *warm, "-k", "first", "test_two.py")
    result.assert_outcomes(passed=1, deselected=1)
    again = starts(xml)["test_first-1"]
    assert again.startswith("cold in "), again
    assert "checkpoint dropped:" in again
    assert "could not load it" in again
    assert (made / "state").read_bytes()[:4096] != b"\0" * 4096, "the checkpoint was saved anew"


def test_first_boot_checkpoints_run_ignition_with_each_machines_own_config(pytester: pytest.Pytester) -> None:
    """Machines restored from the first-boot checkpoint (taken in the initramfs before Ignition) get their
    own config, machine id and host keys, not those of the boot that made the checkpoint."""
    pytester.makepyfile(
        test_own="""
        import pytest
        from harness.ignition import IgnitionConfig

        def config(text):
            return IgnitionConfig().add_file("/etc/railyard/which", text + "\\n").to_dict()

        def identity(machine):
            return {
                "which": machine.succeed("cat /etc/railyard/which").strip(),
                "machine-id": machine.succeed("cat /etc/machine-id").strip(),
                "host-key": machine.succeed("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1],
                "ignition": machine.succeed("sudo journalctl -b -o cat -u ignition-files.service"),
                "console": machine.console_text(),
            }

        SEEN = []

        @pytest.mark.ignition(config("one"))
        def test_one(machine):
            SEEN.append(identity(machine))
            assert SEEN[-1]["which"] == "one"

        @pytest.mark.ignition(config("two"))
        def test_two(machine):
            SEEN.append(identity(machine))
            one, two = SEEN
            assert two["which"] == "two"
            assert one["machine-id"] != two["machine-id"]
            assert one["host-key"] != two["host-key"]
            # Ignition ran in this boot, after the resume, with this machine's own config.
            assert 'writing file "/sysroot/etc/railyard/which"' in two["ignition"]
            before, after = two["console"].split("[railyard: restored from checkpoint", 1)
            assert "first-boot checkpoint: waiting before Ignition" in before
            assert "first-boot checkpoint: resumed as none" in after
        """
    )
    store = pytester.path / "checkpoints"
    xml = pytester.path / "report.xml"
    result = run_inner(
        pytester, "--warm=firstboot", "--checkpoint-dir", str(store), f"--junitxml={xml}", "test_own.py"
    )
    result.assert_outcomes(passed=2)
    made = starts(xml)
    assert made["test_one-1"].startswith("restored-firstboot in "), made
    assert "first-boot checkpoint made in" in made["test_one-1"]
    assert made["test_two-1"].startswith("restored-firstboot in "), made
    [checkpoint] = [p for p in store.iterdir() if not p.name.startswith(".")]
    assert '"kind": "firstboot"' in (checkpoint / "checkpoint.json").read_text()
