"""The machine boots, provisions and is healthy. One boot is shared: these tests only read."""

import pytest

from harness.errors import CommandError


def test_ssh_as_default_user(module_machine):
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
    options = module_machine.succeed("findmnt -n -o OPTIONS /usr").strip().split(",")
    assert "ro" in options, f"/usr is mounted {options}"
    with pytest.raises(CommandError):
        module_machine.succeed("sudo touch /usr/.railyard-write-test")
    assert module_machine.os.booted_slot() == "USR-A"


def test_no_failed_units(module_machine):
    failed = module_machine.succeed("systemctl list-units --failed --no-legend --plain --no-pager").strip()
    assert failed == "", f"failed units:\n{failed}"


def test_ignition_ran_without_errors(module_machine):
    journal = module_machine.journal("-b -t ignition")
    assert "Ignition finished successfully" in journal or "files: op(" in journal, (
        "no trace of Ignition in this boot"
    )
    errors = module_machine.journal("-b -t ignition -p err").strip()
    assert errors in ("", "-- No entries --"), f"Ignition logged errors:\n{errors}"
