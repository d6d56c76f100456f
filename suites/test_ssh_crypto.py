"""An sshd_config drop-in that narrows sshd's algorithms (a crypto policy, as hardening guides ask): a client
that offers an allowed cipher, key exchange and MAC logs in; one that offers only what the drop-in removed is
refused before it can authenticate. One machine serves the module; the tests only log in."""

import paramiko
import pytest

from harness.ignition import IgnitionConfig
from harness.ssh_keys import user_keypair

USER = "gina"
_KEY = user_keypair(USER)  # kept on this host: the config (and its checkpoint) is the same on every run

ALLOWED = {
    "ciphers": "aes256-ctr",  # not an AEAD cipher: the MAC is negotiated too
    "kex": "curve25519-sha256@libssh.org",
    "macs": "hmac-sha2-256-etm@openssh.com",
}

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_user(USER, ssh_keys=[_KEY.public_line])
    .add_file(
        "/etc/ssh/sshd_config.d/10-railyard-crypto.conf",
        f"Ciphers {ALLOWED['ciphers']}\nKexAlgorithms {ALLOWED['kex']}\nMACs {ALLOWED['macs']}\n",
    )
    .to_dict()
)


def connect_offering(machine, kind: str, offered: str) -> paramiko.Transport:
    """Log in as USER, offering only `offered` of `kind` (ciphers, kex or macs)."""
    ep = machine.vm.ssh_endpoint
    transport = paramiko.Transport((ep.host, ep.port))
    options = transport.get_security_options()
    setattr(options, {"macs": "digests"}.get(kind, kind), (offered,))
    transport.connect(username=USER, pkey=_KEY.pkey)
    return transport


def test_the_algorithms_the_drop_in_allows_log_in(module_machine):
    for kind, name in ALLOWED.items():
        transport = connect_offering(module_machine, kind, name)
        try:
            assert transport.is_authenticated()
            if kind == "ciphers":
                assert transport.remote_cipher == name
            if kind == "macs":
                assert transport.remote_mac == name
        finally:
            transport.close()


@pytest.mark.parametrize(
    ("kind", "removed"),
    [("ciphers", "aes128-ctr"), ("kex", "diffie-hellman-group14-sha256"), ("macs", "hmac-sha2-512")],
)
def test_an_algorithm_the_drop_in_removed_is_refused(module_machine, kind, removed):
    with pytest.raises(paramiko.SSHException, match="ncompatible"):
        connect_offering(module_machine, kind, removed).close()
