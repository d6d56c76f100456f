"""What systemd's sandboxing gives a service a config writes: a user allocated for it as it starts (DynamicUser; the image has no nss-systemd, so only its uid shows) with
a state directory of its own, a read-only view of the system (ProtectSystem=strict) with one writable path, a
private /tmp, credentials handed to it alone (LoadCredential). One machine serves the module; the tests only
read what the services wrote at boot."""

import pytest

from harness.ignition import IgnitionConfig

SECRET = "railyard-credential-value"
SANDBOXED = (
    "[Unit]\nDescription=Railyard sandboxed\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    "DynamicUser=yes\nStateDirectory=railyard-sandboxed\nProtectSystem=strict\nPrivateTmp=yes\n"
    "ReadWritePaths=/var/lib/railyard-shared\n"
    "LoadCredential=token:/etc/railyard/token\n"
    "ExecStart=/bin/sh -c '"
    "id -u > $STATE_DIRECTORY/user; "
    "cat $CREDENTIALS_DIRECTORY/token > $STATE_DIRECTORY/credential; "
    "(touch /var/lib/railyard-other/wrote 2>/dev/null && echo wrote || echo refused) > $STATE_DIRECTORY/other; "
    "touch /tmp/railyard-private-tmp; ls /tmp > $STATE_DIRECTORY/tmp; "
    "echo from-the-sandbox > /var/lib/railyard-shared/out'\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file("/etc/railyard/token", SECRET + "\n", mode=0o600)
    .add_directory("/var/lib/railyard-shared", mode=0o777)
    .add_directory("/var/lib/railyard-other", mode=0o777)  # writable by anyone, but not named in the unit
    .add_unit("railyard-sandboxed.service", contents=SANDBOXED, enabled=True)
    .to_dict()
)

STATE = "/var/lib/private/railyard-sandboxed"


@pytest.fixture(scope="module")
def sandboxed(module_machine):
    module_machine.wait_for_unit("railyard-sandboxed.service")
    return module_machine


def state(machine, name: str) -> str:
    return machine.succeed(f"sudo cat {STATE}/{name}").strip()


def test_a_dynamic_user_and_its_state_directory(sandboxed):
    m = sandboxed
    uid = int(state(m, "user"))
    assert 61184 <= uid <= 65519, uid  # systemd's range for dynamic users
    assert not m.execute(f"grep -q '^[^:]*:[^:]*:{uid}:' /etc/passwd").ok, "not a user of /etc/passwd"
    assert m.succeed("readlink /var/lib/railyard-sandboxed").strip() == "private/railyard-sandboxed"


def test_the_system_is_read_only_but_for_the_paths_it_names(sandboxed):
    m = sandboxed
    # The directory is world-writable: what refused the write is the read-only view of the system.
    assert state(m, "other") == "refused"
    m.succeed("test ! -e /var/lib/railyard-other/wrote")
    assert m.succeed("cat /var/lib/railyard-shared/out") == "from-the-sandbox\n"


def test_its_tmp_is_its_own(sandboxed):
    m = sandboxed
    assert "railyard-private-tmp" in state(m, "tmp").split()
    m.succeed("test ! -e /tmp/railyard-private-tmp")


def test_a_credential_reaches_the_service_alone(sandboxed):
    m = sandboxed
    assert state(m, "credential") == SECRET
    assert m.succeed("stat -c %a /etc/railyard/token").strip() == "600"
    assert not m.execute("cat /etc/railyard/token").ok
