"""sudo takes rules from /etc/sudoers.d: a user a config creates may run the one command a drop-in grants, with
no password, and nothing else. One machine serves the module; the tests only read."""

import pytest

from harness.ignition import IgnitionConfig

GRANTED = "/usr/bin/systemctl restart railyard-noop.service"
NOOP = "[Unit]\nDescription=Railyard no-op\n[Service]\nType=oneshot\nExecStart=/bin/true\n"

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_user("operator2")
    .add_unit("railyard-noop.service", contents=NOOP)
    # sudo reads a drop-in only with no write bits for group or others (0440, as visudo leaves them).
    .add_file(
        "/etc/sudoers.d/50-railyard-operator2", f"operator2 ALL=(root) NOPASSWD: {GRANTED}\n", mode=0o440
    )
    .to_dict()
)


def as_operator(command: str) -> str:
    """Run `command` as operator2 with its own sudo rights (-n: never ask for a password)."""
    return f"sudo -u operator2 -- sudo -n {command}"


def test_the_granted_command_runs_without_a_password(module_machine):
    m = module_machine
    m.succeed("sudo visudo -c -q")  # the drop-in parses
    m.succeed(as_operator(GRANTED))
    runs = m.succeed("sudo journalctl -b -q -o cat _PID=1 | grep -c 'Finished railyard-noop.service' || true")
    assert int(runs.strip()) >= 1, runs
    listed = m.succeed(as_operator("-l"))
    assert f"(root) NOPASSWD: {GRANTED}" in listed, listed


def test_anything_else_is_refused(module_machine):
    m = module_machine
    for command in ("/usr/bin/id -u", "/usr/bin/systemctl restart sshd.socket", "-s"):
        result = m.execute(as_operator(command))
        assert not result.ok, (command, result)
        assert "a password is required" in result.stderr, (command, result.stderr)
    assert m.succeed("id -u operator2").strip() != "0"
