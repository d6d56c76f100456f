"""Payload signatures: signed on the host, verified with the same ssh-keygen call the guest makes."""

import shutil

import pytest

from harness.errors import ConfigError
from harness.update_signing import allowed_signers_line, generate_signing_key, sign_payload, verify_payload

pytestmark = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)"
)


def test_sign_and_verify_round_trip(tmp_path):
    private, line = generate_signing_key(tmp_path / "keys")
    assert line.startswith('railyard-update namespaces="railyard-update" ssh-ed25519 ')
    payload = tmp_path / "usr.img"
    payload.write_bytes(b"\x00" * 4096 + b"the new /usr")
    signature = sign_payload(payload, private)
    assert signature.startswith(b"-----BEGIN SSH SIGNATURE-----")
    assert verify_payload(payload, signature, line)


def test_tampered_payload_or_other_key_is_rejected(tmp_path):
    private, line = generate_signing_key(tmp_path / "a")
    _, other_line = generate_signing_key(tmp_path / "b")
    payload = tmp_path / "usr.img"
    payload.write_bytes(b"payload" * 1000)
    signature = sign_payload(payload, private)
    assert not verify_payload(payload, signature, other_line)
    payload.write_bytes(b"payload" * 1000 + b"!")
    assert not verify_payload(payload, signature, line)


def test_key_is_not_overwritten(tmp_path):
    generate_signing_key(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        generate_signing_key(tmp_path)


def test_allowed_signers_line_needs_one_key():
    with pytest.raises(ConfigError):
        allowed_signers_line("a\nb")
