"""A reboot keeps /etc, /var and the journal, gives a new boot id, and does not run Ignition again.

One machine serves the module: it is changed once, rebooted once, and each test reads one consequence.
"""

import uuid
from dataclasses import dataclass

import pytest

from harness.ignition import IgnitionConfig

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file("/etc/railyard/provisioned", "first boot\n")
    .add_file("/etc/railyard/delete-me", "Ignition wrote this once\n")
    .to_dict()
)


@dataclass(frozen=True)
class BeforeReboot:
    boot_id: str
    journal_marker: str
    machine_id: str
    host_key: str


@pytest.fixture(scope="module")
def rebooted(module_machine):
    """The module's machine, changed and then rebooted once; what it was before."""
    m = module_machine
    before = BeforeReboot(
        boot_id=m.boot_id(),
        journal_marker=f"railyard-before-reboot-{uuid.uuid4().hex}",
        machine_id=m.succeed("cat /etc/machine-id").strip(),
        host_key=m.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1],
    )
    m.succeed("echo changed | sudo tee /etc/railyard/provisioned")
    m.succeed("sudo rm /etc/railyard/delete-me")
    m.succeed("echo kept | sudo tee /var/lib/railyard-state")
    m.succeed(f"logger -t railyard-test {before.journal_marker}")
    m.succeed("sudo journalctl --sync && sync")
    m.reboot()
    return before


def test_reboot_gives_a_new_boot_id(module_machine, rebooted):
    assert module_machine.boot_id() != rebooted.boot_id
    assert module_machine.boot_ids[-2:] == [rebooted.boot_id, module_machine.boot_id()]


def test_etc_and_var_persist_across_a_reboot(module_machine, rebooted):
    assert module_machine.succeed("cat /etc/railyard/provisioned") == "changed\n"
    assert module_machine.succeed("cat /var/lib/railyard-state") == "kept\n"
    assert module_machine.os.booted_slot() == "USR-A"


def test_ignition_runs_only_once(module_machine, rebooted):
    """kola: coreos.ignition.once"""
    module_machine.fail("test -e /etc/railyard/delete-me")  # Ignition would have written it again
    assert "ignition.firstboot" not in module_machine.succeed("cat /proc/cmdline")
    ignition_lines = module_machine.journal("-b -t ignition").strip()
    assert ignition_lines in ("", "-- No entries --"), f"Ignition ran again:\n{ignition_lines}"


def test_the_journal_of_the_previous_boot_is_kept(module_machine, rebooted):
    boots = module_machine.journal("--list-boots -q").strip().splitlines()
    assert len(boots) >= 2, boots
    previous = module_machine.journal("-b -1 -t railyard-test -o cat")
    assert rebooted.journal_marker in previous


def test_the_system_is_running_after_a_reboot(module_machine, rebooted):
    state = module_machine.execute("systemctl is-system-running --wait").stdout.strip()
    failed = module_machine.succeed("systemctl list-units --failed --no-legend --plain --no-pager").strip()
    assert state == "running", f"{state}; failed units:\n{failed}"


def test_the_machine_id_and_host_key_are_kept(module_machine, rebooted):
    """The identity made at first boot is committed to disk, not made anew at every boot."""
    assert module_machine.succeed("cat /etc/machine-id").strip() == rebooted.machine_id
    assert module_machine.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] == rebooted.host_key


def test_system_users_are_made_on_the_first_boot_of_a_usr_only(module_machine, rebooted):
    """The first boot ran systemd-sysusers and marked /etc as up to date with this /usr (/etc/.updated, with
    /usr's time); the reboot, on the same /usr, skipped it (ConditionNeedsUpdate=/etc)."""
    assert module_machine.succeed("stat -c %Y /etc/.updated") == module_machine.succeed("stat -c %Y /usr/")
    skipped = module_machine.succeed("systemctl show -P ConditionResult systemd-sysusers.service").strip()
    assert skipped == "no", "systemd-sysusers ran again on a boot of the same /usr"
    first = module_machine.journal("-b -1 -u railyard-update-done.service -o cat")
    assert "Finished railyard-update-done.service" in first, first
