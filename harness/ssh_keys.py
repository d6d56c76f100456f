"""SSH key pairs for guests: ed25519, written in OpenSSH format, one per host shared by every run on it."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from filelock import FileLock

from images.build import default_cache_dir

KEY_COMMENT = "railyard"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_line: str
    """`ssh-ed25519 AAAA... railyard`, ready for authorized_keys or Ignition's sshAuthorizedKeys."""
    pkey: paramiko.PKey


def generate_keypair(directory: Path, comment: str = KEY_COMMENT) -> KeyPair:
    """Create an ed25519 key pair in `directory` (`id_ed25519` mode 0600 and `id_ed25519.pub`)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_line = f"{public.decode()} {comment}"
    private_path = directory / "id_ed25519"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    os.chmod(private_path, 0o600)
    (directory / "id_ed25519.pub").write_text(public_line + "\n")
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(private_pem.decode()))
    return KeyPair(private_path=private_path, public_line=public_line, pkey=pkey)


def shared_keypair(directory: Path, comment: str = KEY_COMMENT) -> KeyPair:
    """The key pair kept in `directory` (made once, under a lock, by whichever process comes first): the
    same key for every run on this host, so that machines saved in checkpoints accept later runs too."""
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / "key.lock"), timeout=60):
        private = directory / "id_ed25519"
        if private.is_file() and (directory / "id_ed25519.pub").is_file():
            return load_keypair(private, comment)
        return generate_keypair(directory, comment)


def user_keypair(user: str, root: Path | None = None) -> KeyPair:
    """The key pair of a user a test's Ignition config creates (`bob`), kept on this host like the
    harness's own (under `root`, by default the cache's `ssh/users/<user>`): a config that holds its public
    key is the same on every run, so machines of that config come from the same checkpoint run after run."""
    if root is None:
        root = default_cache_dir() / "ssh" / "users"
    return shared_keypair(root / user, f"{user}@railyard")


def load_keypair(private_path: Path, comment: str = KEY_COMMENT) -> KeyPair:
    """Load a key pair written by `generate_keypair` (e.g. one shared by xdist workers)."""
    pkey = paramiko.Ed25519Key.from_private_key_file(str(private_path))
    return KeyPair(private_path, f"{pkey.get_name()} {pkey.get_base64()} {comment}", pkey)
