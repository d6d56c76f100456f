"""Reboots are detected by boot id; /etc and /var persist; Ignition runs only on the first boot."""

import pytest

from harness.ignition import IgnitionConfig

pytestmark = pytest.mark.ignition(
    IgnitionConfig().add_file("/etc/railyard/provisioned", "first boot\n").to_dict()
)


def test_reboot_persists_state_and_skips_ignition(machine):
    first_boot = machine.boot_id()
    machine.succeed("echo changed | sudo tee /etc/railyard/provisioned")
    machine.succeed("echo kept | sudo tee /var/lib/railyard-state")
    machine.succeed("sync")

    machine.reboot()

    assert machine.boot_id() != first_boot
    assert len(machine.boot_ids) == 2
    # Ignition would have rewritten the file had it run again.
    assert machine.succeed("cat /etc/railyard/provisioned") == "changed\n"
    assert machine.succeed("cat /var/lib/railyard-state") == "kept\n"
    assert "ignition.firstboot" not in machine.succeed("cat /proc/cmdline")
    ignition_lines = machine.journal("-b -t ignition").strip()
    assert ignition_lines in ("", "-- No entries --"), f"Ignition ran again:\n{ignition_lines}"
    assert machine.os.booted_slot() == "USR-A"
