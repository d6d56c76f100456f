"""SSH user certificates: sshd trusts a user CA a config names (TrustedUserCAKeys in a drop-in), so a user
Ignition created with no authorized key logs in with a key the CA signed for that user, and only so.

The CA's key is kept on this host (the config, and the machine's checkpoint, stay the same run after run);
each run signs a new user key for a few minutes. One machine serves the module; the tests only log in."""

import datetime
import io

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

from harness.ignition import IgnitionConfig
from harness.ssh_keys import user_keypair

USER = "frank"
CA_FILE = "/etc/ssh/railyard-user-ca.pub"
_CA = user_keypair("railyard-user-ca")

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_user(USER)
    .add_file(CA_FILE, _CA.public_line + "\n")
    .add_file("/etc/ssh/sshd_config.d/30-railyard-user-ca.conf", f"TrustedUserCAKeys {CA_FILE}\n")
    .to_dict()
)


def signed_key(principal: str) -> tuple[str, str]:
    """A new private key (OpenSSH PEM) and the certificate the CA signed for it as `principal`'s, valid from a
    minute ago for an hour."""
    ca = serialization.load_ssh_private_key(_CA.private_path.read_bytes(), password=None)
    assert isinstance(ca, Ed25519PrivateKey)
    user = Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        SSHCertificateBuilder()
        .public_key(user.public_key())
        .serial(1)
        .type(SSHCertificateType.USER)
        .key_id(f"railyard-test-{principal}".encode())
        .valid_principals([principal.encode()])
        .valid_after(int((now - datetime.timedelta(minutes=1)).timestamp()))
        .valid_before(int((now + datetime.timedelta(hours=1)).timestamp()))
        .add_extension(b"permit-pty", b"")
        .sign(ca)
    )
    pem = user.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return pem.decode(), certificate.public_bytes().decode()


def key_of(pem: str, certificate: str | None = None) -> paramiko.Ed25519Key:
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
    if certificate is not None:
        key.load_certificate(certificate)
    return key


def log_in(machine, key: paramiko.PKey) -> str:
    """Log in as USER with `key` and return what `id -un` says."""
    ep = machine.vm.ssh_endpoint
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a fresh machine: its key is new anyway
    try:
        client.connect(
            ep.host, ep.port, username=USER, pkey=key, allow_agent=False, look_for_keys=False,
            timeout=30, banner_timeout=60, auth_timeout=60,
        )  # fmt: skip
        _, stdout, _ = client.exec_command("id -un", timeout=60)
        return stdout.read().decode().strip()
    finally:
        client.close()


def test_a_key_the_ca_signed_for_the_user_logs_in(module_machine):
    module_machine.succeed(f"test ! -s ~{USER}/.ssh/authorized_keys.d/ignition")  # no key of its own
    assert log_in(module_machine, key_of(*signed_key(USER))) == USER


def test_the_same_key_without_its_certificate_is_refused(module_machine):
    pem, _ = signed_key(USER)
    with pytest.raises(paramiko.AuthenticationException):
        log_in(module_machine, key_of(pem))


def test_a_certificate_for_another_user_is_refused(module_machine):
    with pytest.raises(paramiko.AuthenticationException):
        log_in(module_machine, key_of(*signed_key("somebody-else")))
