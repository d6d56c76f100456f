"""The system services a Container-Linux machine runs besides sshd: systemd-timesyncd sets the clock from the
NTP server a config names, the rules a config drops into /etc/audit/rules.d are loaded and the kernel audits
what they watch (the records are read from the journal, which receives every audit record), and auditd runs
where a config enables it (it is off by default, as on Flatcar: test_basic.py).

One machine serves the module. The audit tests only read; the clock test moves the guest's clock and leaves it
set from the host's NTP server again."""

import time

import pytest

from harness.ignition import IgnitionConfig
from harness.ntp_server import NtpServer

AUDITED = "/etc/railyard-audited"
AUDIT_RULE = f"-w {AUDITED} -p wa -k railyard-watch"
TIMESYNC_DROPIN = "/etc/systemd/timesyncd.conf.d/50-railyard-test.conf"

pytestmark = [
    pytest.mark.ignition(
        IgnitionConfig()
        .add_file("/etc/audit/rules.d/90-railyard.rules", AUDIT_RULE + "\n")
        .add_file(AUDITED, "before\n")  # a watch on a file that exists (written before the rules load)
        .add_unit("auditd.service", enabled=True)
        .to_dict()
    ),
    pytest.mark.distros(
        "railyard"
    ),  # Flatcar has no timesyncd.conf.d default and loads audit rules its own way
]


def guest_offset(machine) -> float:
    """The guest's wall clock minus the host's, in seconds (the command's round trip halved)."""
    before = time.time()
    guest = float(machine.succeed("date +%s.%N").strip())
    return guest - (before + time.time()) / 2


def test_auditd_runs_where_a_config_enables_it_and_the_rules_a_config_drops_in_load(module_machine):
    """kola: none (Flatcar loads /etc/audit/rules.d with audit-rules.service, and so does this image)"""
    module_machine.wait_for_unit("audit-rules.service")
    module_machine.wait_for_unit("auditd.service")
    status = module_machine.succeed("sudo auditctl -s")
    assert "enabled 1" in status, status
    assert "pid 0" not in status, status  # a daemon receives the records
    assert AUDIT_RULE in module_machine.succeed("sudo auditctl -l").splitlines()


def test_a_write_to_a_watched_file_is_audited_with_the_rules_key(module_machine):
    """kola: none"""
    # The syscall records of the rule's key (its CONFIG_CHANGE record, from loading the rule, names it too).
    records = (
        "sudo journalctl -b _TRANSPORT=audit -o cat --no-pager"
        " | grep -F 'key=\"railyard-watch\"' | grep -F 'comm=\"tee\"'"
    )
    module_machine.wait_for_unit("audit-rules.service")
    assert module_machine.succeed(records + " || true").strip() == ""  # nothing yet
    module_machine.succeed(f"echo audited | sudo tee {AUDITED} >/dev/null")
    found = module_machine.wait_until_succeeds(records, timeout=60)
    assert 'exe="/usr/bin/tee"' in found, found
    assert "success=yes" in found, found


@pytest.mark.requires("boot-host-services")  # the guest asks an NTP server the test runs on the host
def test_timesyncd_sets_the_clock_from_the_server_a_config_names(module_machine, platform):
    """kola: none (Flatcar documents timesyncd with NTP= servers of the user's choice)"""
    m = module_machine
    m.wait_for_unit("systemd-timesyncd.service")
    # The image asks no server by itself: not the pool built into timesyncd, none from DHCP; only itself.
    assert m.succeed("timedatectl show-timesync -p FallbackNTPServers --value").split() == ["127.0.0.1"]
    assert m.succeed("timedatectl show-timesync -p ServerName --value").strip() in {"", "127.0.0.1"}

    with NtpServer() as server:
        m.succeed(
            f"sudo mkdir -p {TIMESYNC_DROPIN.rsplit('/', 1)[0]} && "
            f"printf '[Time]\\nNTP={platform.boot_host_address}\\n' | sudo tee {TIMESYNC_DROPIN} >/dev/null"
        )
        m.succeed("sudo date -u -s @$(( $(date +%s) + 3600 )) >/dev/null")  # an hour fast
        assert guest_offset(m) > 3500
        try:
            m.succeed("sudo systemctl restart systemd-timesyncd")
            m.wait_until_succeeds('test "$(timedatectl show -p NTPSynchronized --value)" = yes', timeout=120)
            assert abs(guest_offset(m)) < 2.0
            assert server.requests(), "timesyncd synchronised without asking the test's server"
            status = m.succeed("timedatectl timesync-status")
            assert platform.boot_host_address in status, status
        finally:
            m.succeed(f"sudo rm -f {TIMESYNC_DROPIN} && sudo systemctl restart systemd-timesyncd")
            m.sync_clock()
