"""Detached GPG signatures checked with gpgv against a keyring made for the purpose, in a temporary folder.

The keyring holds either Flatcar's image signing key, fetched from its official address and accepted only
if its primary key has the pinned fingerprint (and then that key alone), or whatever `--signing-key` file
the user gives (trusted as given: a mirror's or a test's own key). Never the user's own GnuPG keyring.

gpgv exits 0 for a good signature by a key that has since expired, so its `--status-fd` lines decide:
a signature counts only with GOODSIG and VALIDSIG and none of EXPKEYSIG, REVKEYSIG, EXPSIG.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.errors import ConfigError, FetchError

log = logging.getLogger(__name__)

OFFICIAL_KEY_URL = "https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc"
"""Where Flatcar publishes its image signing key (its documentation's "Image Signing Key" page)."""
OFFICIAL_FINGERPRINT = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"
"""Flatcar Buildbot (Official Builds): the primary key; its signing subkeys rotate."""

GPG_TIMEOUT = 120.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(
            f"{name} is not installed: it checks the images' signatures (Debian: apt install {name})"
        )
    return path


def _gpg(home: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_tool("gpg"), "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args],
        input=data,
        capture_output=True,
        timeout=GPG_TIMEOUT,
        check=False,
    )


def primary_fingerprints(home: Path) -> list[str]:
    """Fingerprints of the primary keys in a GnuPG home (colon listing: `fpr` after each `pub`)."""
    listing = _gpg(home, "--with-colons", "--fixed-list-mode", "--list-keys").stdout.decode(errors="replace")
    found: list[str] = []
    after_pub = False
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            after_pub = True
        elif fields[0] == "fpr" and after_pub:
            found.append(fields[9].upper())
            after_pub = False
        elif fields[0] in ("sub", "uid"):
            after_pub = False
    return found


class Keyring:
    """A gpgv keyring made from an armored (or binary) key file. A context manager: the folder goes at exit.

    `pinned`: the primary key fingerprint the file must hold; only that key goes into the keyring.
    """

    def __init__(self, key: bytes, source: str, pinned: str | None = None) -> None:
        self.source = source
        self.pinned = pinned.upper().replace(" ", "") if pinned else None
        self._dir = Path(tempfile.mkdtemp(prefix="railyard-keyring-"))
        try:
            self.path, self.fingerprints = self._build(key)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    def _build(self, key: bytes) -> tuple[Path, list[str]]:
        home = self._dir / "home"
        home.mkdir(mode=0o700)
        imported = _gpg(home, "--import", data=key)
        fingerprints = primary_fingerprints(home)
        if not fingerprints:
            detail = imported.stderr.decode(errors="replace").strip()
            raise FetchError(f"the signing key from {self.source} holds no usable OpenPGP key: {detail}")
        if self.pinned is not None and self.pinned not in fingerprints:
            raise FetchError(
                f"the signing key from {self.source} is not Flatcar's: expected primary key {self.pinned}, "
                f"found {', '.join(fingerprints)}; nothing was downloaded"
            )
        wanted = [self.pinned] if self.pinned else fingerprints
        exported = _gpg(home, "--export", *wanted)
        if exported.returncode != 0 or not exported.stdout:
            raise FetchError(
                f"gpg could not export the key from {self.source}: {exported.stderr.decode().strip()}"
            )
        path = self._dir / "keyring.gpg"
        path.write_bytes(exported.stdout)
        return path, wanted

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class GoodSignature:
    """What gpgv said of a good signature: the signing (sub)key and its primary key."""

    signing_fingerprint: str
    primary_fingerprint: str
    created: str


REFUSALS = {
    "EXPKEYSIG": "was made by a signing key that has expired",
    "REVKEYSIG": "was made by a signing key that was revoked",
    "EXPSIG": "has expired",
    "BADSIG": "does not match the file (the file or its signature was altered)",
    "NO_PUBKEY": "was made by a key the signing key file does not hold",
}


def verify_detached(keyring: Keyring, signature: Path, data: Path, name: str) -> GoodSignature:
    """Check `signature` of `data` (published as `name`) with gpgv; FetchError saying why otherwise."""
    result = subprocess.run(
        [_tool("gpgv"), "--keyring", str(keyring.path), "--status-fd", "1", str(signature), str(data)],
        capture_output=True,
        timeout=GPG_TIMEOUT,
        check=False,
    )
    status: dict[str, list[str]] = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.startswith("[GNUPG:] "):
            keyword, *args = line[len("[GNUPG:] ") :].split()
            status.setdefault(keyword, args)
    for keyword, why in REFUSALS.items():
        if keyword in status:
            raise FetchError(
                f"the signature of {name} {why}; nothing was cached (key: {keyring.source}; gpgv: "
                f"{' '.join([keyword, *status[keyword][:1]])})"
            )
    valid = status.get("VALIDSIG")
    if result.returncode != 0 or "GOODSIG" not in status or not valid or len(valid) < 10:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise FetchError(
            f"the signature of {name} did not verify with the key from {keyring.source}; nothing was cached"
            + (f": {detail[-1]}" if detail else "")
        )
    primary = valid[9].upper()
    if keyring.pinned is not None and primary != keyring.pinned:
        raise FetchError(f"{name} is signed by {primary}, not by the pinned key {keyring.pinned}")
    log.info("%s: good signature by %s (primary key %s)", name, valid[0], primary)
    return GoodSignature(valid[0].upper(), primary, valid[1])
