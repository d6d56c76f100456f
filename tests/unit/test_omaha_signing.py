"""Payload signatures: signed on the host, verified with the same ssh-keygen call the guest makes."""

import hashlib
import shutil
import subprocess

import pytest

from harness.errors import ConfigError
from harness.update_signing import (
    allowed_signers_line,
    generate_signing_key,
    sign_payload,
    signed_statement,
    verify_payload,
)
from images.agent.railyard_agent import payload as agent_payload

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


def test_the_signature_signs_the_statement_of_the_sha256_the_agent_checks(tmp_path):
    """What the host signs is the agent's statement of the payload's SHA-256: ssh-keygen verifies it as it
    is, and refuses the payload's own bytes and the statement of another digest."""
    private, line = generate_signing_key(tmp_path / "keys")
    payload = tmp_path / "usr.img"
    payload.write_bytes(b"usr" * 5000)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert signed_statement is agent_payload.signed_statement
    assert signed_statement(digest) == f"railyard-update payload sha256={digest}\n".encode()
    (tmp_path / "signers").write_text(line + "\n")
    (tmp_path / "sig").write_bytes(sign_payload(payload, private))

    def verifies(message: bytes) -> bool:
        command = agent_payload.verify_command("ssh-keygen", tmp_path / "signers", tmp_path / "sig")
        return subprocess.run(command, input=message, capture_output=True, check=False).returncode == 0

    assert verifies(signed_statement(digest))
    assert not verifies(payload.read_bytes())
    assert not verifies(signed_statement(hashlib.sha256(b"another payload").hexdigest()))
