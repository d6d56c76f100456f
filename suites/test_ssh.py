"""sshd takes drop-ins from Ignition (its own configuration's and its socket's), refuses passwords, and lets each
user Ignition created log in with its own key. One machine serves the module; the tests only read."""

import io

import paramiko
import pytest

from harness.ignition import IgnitionConfig
from harness.ssh_keys import user_keypair

# Kept on this host: the module's config is the same on every run (one checkpoint serves them all).
_BOB = user_keypair("bob")
BOB_PRIVATE = _BOB.private_path.read_text()
BOB_PUBLIC = _BOB.public_line
PASSWORD = "railyard-pw"
# `openssl passwd -6 -salt railyard.salt railyard-pw`
PASSWORD_HASH = (
    "$6$railyard.salt$aqHO9uMqOlnPlAPfPbVdeQ0l/dmJ1MFt4amPQp8GLu8/i/godLrMquz0sjuJ.0TOlYiKE73J0TR38rB8a4GFA1"
)
EXTRA_PORT = 2222
BANNER = "Authorized use only: railyard test machine\n"

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_user("bob", ssh_keys=[BOB_PUBLIC], password_hash=PASSWORD_HASH)
    .add_file("/etc/ssh/railyard-banner", BANNER)
    .add_file("/etc/ssh/sshd_config.d/20-railyard-banner.conf", "Banner /etc/ssh/railyard-banner\n")
    # sshd runs once per connection (sshd.socket, as on Container Linux): another port is another
    # ListenStream= of the socket, not a Port of sshd_config.
    .add_unit("sshd.socket", dropins={"20-railyard-port.conf": f"[Socket]\nListenStream={EXTRA_PORT}\n"})
    .to_dict()
)


def _client() -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a fresh machine: its key is new anyway
    return client


def _connect(client: paramiko.SSHClient, machine, **auth) -> None:
    ep = machine.vm.ssh_endpoint
    client.connect(
        ep.host, ep.port, allow_agent=False, look_for_keys=False, timeout=30, banner_timeout=60, auth_timeout=60,
        **auth,
    )  # fmt: skip


def _log_in_as_bob(client: paramiko.SSHClient, machine) -> paramiko.Transport:
    """Log `client` in as bob with bob's key; return its transport."""
    _connect(
        client, machine, username="bob", pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(BOB_PRIVATE))
    )
    transport = client.get_transport()
    assert transport is not None
    return transport


def test_a_second_user_logs_in_with_its_own_key(module_machine):
    """kola: coreos.ignition.ssh.key (there for the default user; here for a user of the test's own)"""
    with _client() as client:
        _log_in_as_bob(client, module_machine)
        _, stdout, _ = client.exec_command("id -un")
        assert stdout.read().decode().strip() == "bob"


def test_password_login_is_refused(module_machine):
    """kola: coreos.auth.verify"""
    shadow = module_machine.succeed("sudo getent shadow bob").strip().split(":")
    assert shadow[1] == PASSWORD_HASH, (
        "bob has a password: a refusal below is sshd's policy, not a bad password"
    )
    with _client() as client, pytest.raises(paramiko.AuthenticationException):
        _connect(client, module_machine, username="bob", password=PASSWORD)
    effective = dict(
        line.split(" ", 1) for line in module_machine.succeed("sudo sshd -T").splitlines() if " " in line
    )
    assert effective["passwordauthentication"] == "no"
    assert effective["permitrootlogin"] == "no"


def test_an_sshd_config_drop_in_applies_to_each_connection(module_machine):
    """The sshd that serves a connection reads sshd_config.d: the banner of the drop-in comes before the login."""
    with _client() as client:
        assert _log_in_as_bob(client, module_machine).get_banner() == BANNER.encode()


def test_a_socket_drop_in_adds_a_port(module_machine, tmp_path):
    """A drop-in of sshd.socket (written by Ignition) adds a port; the sshd it starts serves it."""
    listening = module_machine.succeed("ss -Htln").split()
    assert any(word.endswith(f":{EXTRA_PORT}") for word in listening), listening
    key = tmp_path / "bob"
    key.write_text(BOB_PRIVATE)
    module_machine.copy_to(key, "/tmp/bob-key", mode=0o600)
    who = module_machine.succeed(
        f"ssh -p {EXTRA_PORT} -i /tmp/bob-key -o BatchMode=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null bob@127.0.0.1 id -un"
    )
    assert who.strip() == "bob"


def test_the_host_key_is_the_machines_own(module_machine):
    """The image ships no host key: the one sshd presents was made on this machine at its first boot."""
    with _client() as client:
        presented = _log_in_as_bob(client, module_machine).get_remote_server_key().get_base64()
    on_disk = module_machine.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert presented == on_disk
