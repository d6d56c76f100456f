"""The machine boots, provisions and is healthy. One boot is shared: these tests only read."""

import pytest

from harness.errors import CommandError


def test_ssh_as_default_user(module_machine):
    """kola: cl.basic (PortSSH)"""
    assert module_machine.succeed("id -un").strip() == module_machine.distro.default_user
    assert module_machine.succeed("sudo id -u").strip() == "0"


def test_os_release_matches_image(module_machine, railyard_target):
    _, image = railyard_target
    release = module_machine.os.os_release()
    assert release.get("ID"), f"/etc/os-release has no ID: {release}"
    if image.metadata is not None:
        assert release["ID"] == image.metadata.os_id
        assert release.get("VERSION_ID") == image.metadata.version


def test_usr_is_read_only_and_from_usr_a(module_machine):
    """kola: cl.basic (ReadOnly)"""
    options = module_machine.succeed("findmnt -n -o OPTIONS /usr").strip().split(",")
    assert "ro" in options, f"/usr is mounted {options}"
    with pytest.raises(CommandError):
        module_machine.succeed("sudo touch /usr/.railyard-write-test")
    assert module_machine.os.booted_slot() == "USR-A"


def test_no_failed_units(module_machine):
    """kola: cl.basic (ServicesActive)"""
    failed = module_machine.succeed("systemctl list-units --failed --no-legend --plain --no-pager").strip()
    assert failed == "", f"failed units:\n{failed}"


def test_ignition_ran_without_errors(module_machine):
    journal = module_machine.journal("-b -t ignition")
    assert "Ignition finished successfully" in journal or "files: op(" in journal, (
        "no trace of Ignition in this boot"
    )
    errors = module_machine.journal("-b -t ignition -p err").strip()
    assert errors in ("", "-- No entries --"), f"Ignition logged errors:\n{errors}"


# setuid/setgid programs a Debian-based image may ship (kola's cl.filesystem keeps a list like it for Flatcar).
SETUID_ALLOWED = {
    "/usr/bin/chfn",
    "/usr/bin/chsh",
    "/usr/bin/gpasswd",
    "/usr/bin/mount",
    "/usr/bin/newgrp",
    "/usr/bin/passwd",
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/umount",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
    "/usr/lib/openssh/ssh-keysign",
}
SETGID_ALLOWED = {
    "/usr/bin/chage",
    "/usr/bin/expiry",
    "/usr/bin/ssh-agent",
    "/usr/bin/wall",
    "/usr/bin/write.ul",
    "/usr/sbin/unix_chkpwd",
}


def test_machine_id_is_set(module_machine):
    """kola: cl.basic (MachineID)"""
    machine_id = module_machine.succeed("cat /etc/machine-id").strip()
    assert len(machine_id) == 32, machine_id
    int(machine_id, 16)  # hex, not "uninitialized"


def test_an_unprivileged_user_cannot_restart_units(module_machine):
    """kola: cl.basic (DbusPerms)"""
    result = module_machine.execute(
        "busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 "
        "org.freedesktop.systemd1.Manager RestartUnit ss systemd-journald.service replace"
    )
    assert result.status != 0, result.stdout
    assert "denied" in result.stderr.lower() or "authentication" in result.stderr.lower(), result.stderr


def test_useradd(module_machine):
    """kola: cl.basic (Useradd)"""
    module_machine.succeed("sudo useradd --create-home railyard-added")
    assert module_machine.succeed("getent passwd railyard-added").split(":")[5] == "/home/railyard-added"
    assert module_machine.succeed("sudo stat -c %U /home/railyard-added").strip() == "railyard-added"


@pytest.mark.distros("railyard")  # the allowlists name this image's programs
def test_setuid_and_setgid_programs_are_the_expected_ones(module_machine):
    """kola: cl.filesystem (suid, sgid)"""
    setuid = set(module_machine.succeed("sudo find /usr /etc -xdev -type f -perm -4000").split())
    setgid = set(module_machine.succeed("sudo find /usr /etc -xdev -type f -perm -2000").split())
    assert setuid <= SETUID_ALLOWED, f"unexpected setuid programs: {sorted(setuid - SETUID_ALLOWED)}"
    assert setgid <= SETGID_ALLOWED, f"unexpected setgid programs: {sorted(setgid - SETGID_ALLOWED)}"


def test_world_writable_directories_are_sticky_and_files_are_not_writable(module_machine):
    """kola: cl.filesystem (writabledirs, writablefiles)"""
    dirs = module_machine.succeed(
        "sudo find / /usr /var -xdev -type d -perm -0002 ! -perm -1000 -print"
    ).split()
    files = module_machine.succeed("sudo find / /usr /var /etc -xdev -type f -perm -0002 -print").split()
    assert dirs == [], f"world-writable directories without the sticky bit: {dirs}"
    assert files == [], f"world-writable files: {files}"


@pytest.mark.distros("railyard")  # Flatcar's is update-engine.service
def test_the_update_agent_runs(module_machine):
    """kola: cl.basic (ServicesActive: update-engine)"""
    module_machine.wait_for_unit("railyard-update-agent.service")


@pytest.mark.distros("railyard")  # the image's defaults (Flatcar documents the same ones; not run against it)
def test_the_audit_rules_load_and_the_journal_gets_the_records_without_auditd(module_machine):
    """kola: none (Flatcar loads /etc/audit/rules.d with audit-rules.service; its auditd is off by default)"""
    m = module_machine
    m.wait_for_unit("audit-rules.service")
    assert m.execute("systemctl is-enabled auditd.service").stdout.strip() == "disabled"
    assert m.execute("systemctl is-active auditd.service").stdout.strip() == "inactive"
    status = m.succeed("sudo auditctl -s")
    assert "enabled 1" in status, status  # the rules loaded turned auditing on (-e 1): no auditd did
    assert "pid 0" in status, status  # no daemon: the kernel's records go to the journal alone
    assert "SERVICE_START" in m.succeed("sudo journalctl -b _TRANSPORT=audit -o cat --no-pager")
