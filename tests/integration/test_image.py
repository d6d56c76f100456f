"""The default image: Ignition provisions it at first boot; a stopped machine's journal is read from its disk.

Its A/B /usr (a trial boot of the other slot, the automatic fallback from a broken one) is shown by the update
suite, for every channel, through the real update agent: `suites/test_update.py`."""

from __future__ import annotations

import dataclasses

import pytest

from harness.disk_journal import read_journal
from harness.ignition import IgnitionConfig
from harness.ssh import SSHConnection, generate_keypair


@pytest.fixture(scope="module")
def tester_key(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("tester-key"))


def test_ignition_adds_user_with_key_and_writes_file(machine_factory, tester_key):
    config = (
        IgnitionConfig()
        .add_user("tester", ssh_keys=[tester_key.public_line])
        .add_file("/etc/railyard-image-test", "written by ignition\n", mode=0o600)
        .to_dict()
    )
    [machine] = machine_factory.create(ignition=config)
    endpoint = dataclasses.replace(machine.vm.ssh_endpoint, user="tester")
    with SSHConnection(endpoint, tester_key.pkey, connect_timeout=30.0) as ssh:
        ssh.connect()
        assert ssh.run("id -un", timeout=60).stdout == "tester\n"
    assert machine.succeed("sudo cat /etc/railyard-image-test") == "written by ignition\n"
    assert machine.succeed("sudo stat -c %a /etc/railyard-image-test").strip() == "600"

    # What a stuck machine's report would say: the vCPU's place, and the monitor's full view on disk.
    view = machine.vm.diagnose()
    assert view.startswith("run state running; CPU#0 RIP="), view
    dump = machine.vm.paths.console.parent / "hypervisor-1.txt"
    assert dump.name in view
    text = dump.read_text()
    assert "# info registers -a" in text
    assert "CR0=" in text

    # A stopped machine's journal, read from its own disk on the host (how a boot that never answered SSH
    # is diagnosed): it holds what this boot logged.
    # `journalctl --sync` of systemd 252 may answer before journald's flush thread has written the files
    # out, and a killed machine keeps only what reached its disk: `sync` waits for all of it.
    marker = f"railyard-disk-journal-{machine.boot_ids[-1]}"
    machine.succeed(f"logger -t railyard-test {marker} && sudo journalctl --sync && sync")
    machine.close()
    machine.vm.kill()
    journal = read_journal(machine.vm.disk_path())
    assert marker in journal
    assert "Reached target multi-user.target" in journal or "Reached target Multi-User System" in journal
