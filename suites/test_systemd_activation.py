"""Units that start on demand, and an instance of a template that Ignition enables: a socket that starts a
service per connection, a path unit that starts one when a file changes, `railyard-hello@world.service`.
One machine serves the module; each test starts only what it activates."""

import shlex

import pytest

from harness.ignition import IgnitionConfig

PORT = 7777
ECHO_SOCKET = (
    "[Unit]\nDescription=Railyard echo socket\n"
    f"[Socket]\nListenStream=127.0.0.1:{PORT}\nAccept=yes\n"
    "[Install]\nWantedBy=sockets.target\n"
)
ECHO_SERVICE = (
    "[Unit]\nDescription=Railyard echo, one per connection\n"
    "[Service]\nExecStart=/bin/sh -c 'read -r line; echo \"echo: $line\"'\n"
    "StandardInput=socket\nStandardOutput=socket\n"
)
WATCH_PATH = (
    "[Unit]\nDescription=Railyard watch\n"
    "[Path]\nPathChanged=/run/railyard-trigger\n"
    "[Install]\nWantedBy=paths.target\n"
)
WATCH_SERVICE = (
    "[Unit]\nDescription=Railyard watched\n"
    "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'cp /run/railyard-trigger /run/railyard-triggered'\n"
)
HELLO_TEMPLATE = (
    "[Unit]\nDescription=Railyard hello %i\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo %i > /run/railyard-hello-%i'\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_unit("railyard-echo.socket", contents=ECHO_SOCKET, enabled=True)
    .add_unit("railyard-echo@.service", contents=ECHO_SERVICE)
    .add_unit("railyard-watch.path", contents=WATCH_PATH, enabled=True)
    .add_unit("railyard-watch.service", contents=WATCH_SERVICE)
    .add_unit("railyard-hello@.service", contents=HELLO_TEMPLATE)
    .add_unit("railyard-hello@world.service", enabled=True)
    .to_dict()
)


def test_a_socket_starts_a_service_per_connection(module_machine):
    """kola: none (systemd socket activation of a unit Ignition wrote)"""
    m = module_machine
    m.wait_for_unit("railyard-echo.socket")
    listeners = m.succeed(f"sudo ss -Htlnp 'sport = :{PORT}'")
    assert f"127.0.0.1:{PORT}" in listeners, listeners
    assert '"systemd"' in listeners, listeners
    one = f"exec 3<>/dev/tcp/127.0.0.1/{PORT}; echo {{}} >&3; timeout 60 cat <&3; "
    reply = m.succeed("bash -c " + shlex.quote(one.format("first") + one.format("second")), timeout=120)
    assert reply == "echo: first\necho: second\n"
    runs = m.succeed("sudo journalctl -b -q -o cat _PID=1 | grep -c 'Started railyard-echo@' || true").strip()
    assert int(runs) >= 2, runs


def test_a_path_unit_starts_its_service_when_the_file_changes(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-watch.path")
    m.succeed("test ! -e /run/railyard-triggered")
    m.succeed("echo go | sudo tee /run/railyard-trigger >/dev/null")
    m.wait_until_succeeds("grep -qx go /run/railyard-triggered", timeout=60)


def test_an_instance_of_a_template_is_enabled(module_machine):
    """kola: cl.ignition.instantiated.enable-unit"""
    m = module_machine
    assert m.succeed("systemctl is-enabled railyard-hello@world.service").strip() == "enabled"
    m.wait_for_unit("railyard-hello@world.service")
    assert m.succeed("cat /run/railyard-hello-world") == "world\n"
