"""Ignition's users and groups beyond names and keys (test_ignition.py): system accounts, accounts without a
home or without a group of their own, a primary group Ignition made, supplementary groups of the image.
One machine serves the module; the tests only read."""

import pytest

from harness.ignition import IgnitionConfig

CONFIG = IgnitionConfig.from_dict(
    {
        "ignition": {"version": "3.3.0"},
        "passwd": {
            "groups": [
                {"name": "ry-daemons", "system": True},
                {"name": "ry-staff", "gid": 5500},
            ],
            "users": [
                {
                    "name": "ry-daemon",
                    "system": True,
                    "noCreateHome": True,
                    "homeDir": "/var/lib/ry-daemon",
                    "shell": "/usr/sbin/nologin",
                    "noUserGroup": True,
                    "primaryGroup": "ry-daemons",
                },
                {
                    "name": "dave",
                    "uid": 3456,
                    "gecos": "Dave Railyard",
                    "noUserGroup": True,
                    "primaryGroup": "ry-staff",
                    "groups": ["adm", "systemd-journal"],
                },
                {"name": "erin", "noCreateHome": True},
            ],
        },
    }
).to_dict()

pytestmark = pytest.mark.ignition(CONFIG)


def passwd(machine, name: str) -> list[str]:
    return machine.succeed(f"getent passwd {name}").strip().split(":")


def group(machine, name: str) -> list[str]:
    return machine.succeed(f"getent group {name}").strip().split(":")


def test_a_system_account_in_a_system_group_without_a_home(module_machine):
    """kola: cl.ignition.v2.users (system users)"""
    m = module_machine
    _, _, uid, gid, _, home, shell = passwd(m, "ry-daemon")
    assert int(uid) < 1000, uid
    daemons = group(m, "ry-daemons")
    assert int(daemons[2]) < 1000, daemons
    assert gid == daemons[2]
    assert (home, shell) == ("/var/lib/ry-daemon", "/usr/sbin/nologin")
    m.succeed(f"test ! -e {home}")
    assert not m.execute("getent group ry-daemon").ok, "noUserGroup made a group of its own"


def test_a_primary_group_ignition_made_and_groups_of_the_image(module_machine):
    """kola: coreos.ignition.groups"""
    m = module_machine
    _, _, uid, gid, gecos, home, _ = passwd(m, "dave")
    assert (uid, gid, gecos) == ("3456", "5500", "Dave Railyard")
    assert not m.execute("getent group dave").ok, "noUserGroup made a group of its own"
    assert set(m.succeed("id -Gn dave").split()) == {"ry-staff", "adm", "systemd-journal"}
    assert m.succeed(f"sudo stat -c %U:%G:%F {home}").strip() == "dave:ry-staff:directory"
    # The group does what it is for: a member of systemd-journal reads the system journal.
    assert m.succeed("sudo -u dave journalctl -q -b -n 1 -o cat _PID=1").strip()


def test_an_account_without_a_home_keeps_its_own_group(module_machine):
    m = module_machine
    _, _, uid, gid, _, home, _ = passwd(m, "erin")
    assert int(uid) >= 1000, uid
    assert group(m, "erin")[2] == gid
    m.succeed(f"test ! -e {home}")
