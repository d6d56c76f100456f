"""Signing update payloads with OpenSSH signatures (`ssh-keygen -Y`), as the default image verifies them.

A signature signs one line naming the payload's SHA-256 (`signed_statement`), as Flatcar's payload
signatures sign the payload's hash: the guest hashes the payload as it downloads it and never reads it
again to check the signature. The guest needs nothing beyond openssh-client. It holds the public key as an
allowed_signers line (`/usr/share/railyard/update-signing.pub`) and, once the payload's SHA-256 matches the
offer, checks the signature before anything touches a slot with

    printf 'railyard-update payload sha256=%s\\n' SHA256_HEX |
        ssh-keygen -Y verify -f ALLOWED_SIGNERS -I railyard-update -n railyard-update -s SIG
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import ConfigError, UpdateError

# What is signed, and how it is checked, are the guest agent's own (the host signs what the agent verifies).
from images.agent.railyard_agent.payload import (
    SIGNER_IDENTITY,
    SIGNING_NAMESPACE,
    signed_statement,
    verify_command,
)

log = logging.getLogger(__name__)

KEY_FILE_NAME = "railyard-update-signing"


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise ConfigError("ssh-keygen is not installed: install openssh-client to sign update payloads")
    return found


def allowed_signers_line(public_key: str) -> str:
    """The allowed_signers line for an OpenSSH public key (`ssh-ed25519 AAAA... comment`)."""
    key = public_key.strip()
    if not key or "\n" in key:
        raise ConfigError(f"expected one OpenSSH public key line, got {public_key!r}")
    return f'{SIGNER_IDENTITY} namespaces="{SIGNING_NAMESPACE}" {key}'


def generate_signing_key(directory: Path) -> tuple[Path, str]:
    """Create an ed25519 key pair in `directory`; return the private key path and the allowed_signers line.

    Ship the line in the image (or in `/etc/railyard/update-signing.pub` with `SIGNING_KEY=` in update.conf)
    and sign payloads with the private key.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / KEY_FILE_NAME
    if private.exists():
        raise ConfigError(f"{private} already exists: remove it or use another directory for the new key")
    result = subprocess.run(
        [_ssh_keygen(), "-q", "-t", "ed25519", "-N", "", "-C", SIGNER_IDENTITY, "-f", str(private)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigError(
            f"ssh-keygen could not create a signing key in {directory}: {result.stderr.strip()}"
        )
    public = private.with_name(private.name + ".pub").read_text().strip()
    return private, allowed_signers_line(public)


def payload_sha256(payload: Path) -> str:
    """The SHA-256 of a file, lower-case hex."""
    with payload.open("rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()


def sign_payload(payload: Path, private_key: Path) -> bytes:
    """The armored OpenSSH signature (namespace `railyard-update`) of the statement of `payload`'s
    SHA-256."""
    if not payload.is_file():
        raise UpdateError(f"cannot sign {payload}: no such file")
    result = subprocess.run(
        [_ssh_keygen(), "-Y", "sign", "-f", str(private_key), "-n", SIGNING_NAMESPACE],
        input=signed_statement(payload_sha256(payload)),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or b"BEGIN SSH SIGNATURE" not in result.stdout:
        raise UpdateError(
            f"ssh-keygen could not sign {payload} with {private_key}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    log.debug("signed %s with %s", payload, private_key)
    return result.stdout


def verify_payload(payload: Path, signature: bytes, allowed_signers: str) -> bool:
    """Check a signature the way the guest does. `allowed_signers` is the text of the allowed_signers file."""
    with tempfile.TemporaryDirectory(prefix="railyard-verify-") as tmp:
        signers = Path(tmp) / "allowed_signers"
        signers.write_text(allowed_signers.strip() + "\n")
        sig = Path(tmp) / "payload.sig"
        sig.write_bytes(signature)
        result = subprocess.run(
            verify_command(_ssh_keygen(), signers, sig),
            input=signed_statement(payload_sha256(payload)),
            capture_output=True,
            check=False,
        )
    return result.returncode == 0
