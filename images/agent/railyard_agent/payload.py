"""One offered payload, from download to install: fetched into the state directory (resuming a partial
file) and hashed as it arrives, checked (size, SHA-256, then the OpenSSH signature of its SHA-256),
then decompressed straight into the slot by `railyard-slot install` (no unpacked copy on the root file
system). Every byte is read once before the install: the signature covers the digest taken on the way in,
as Flatcar's payload signatures cover the payload's hash, not a second pass over the file.

The offer's SHA-1 (the package's `hash`) is not checked: update_engine takes the payload's hash from the
postinstall action's `sha256` alone, and so does this agent (SHA-1 would add nothing a forger could not
match, and hashing every byte a second time costs 1.9 s of a one-vCPU guest per 200 MB)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import json
import lzma
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from .config import CHUNK, HTTP_TIMEOUT, AgentConfig, AgentPaths, log
from .protocol import (
    ERROR_DOWNLOAD_TRANSFER,
    ERROR_INSTALL,
    ERROR_PAYLOAD_HASH_MISMATCH,
    ERROR_PAYLOAD_SIZE_MISMATCH,
    ERROR_PAYLOAD_VERIFICATION,
    Offer,
    UpdateFailure,
)
from .sparse import SparseWriter
from .status import STATUS_DOWNLOADING, StatusFile, write_atomically

SIGNING_NAMESPACE = "railyard-update"
SIGNER_IDENTITY = "railyard-update"
MAX_SIGNATURE_BYTES = 64 * 1024


class Digests:
    """The SHA-256 of a payload, taken while it is written (one pass over the bytes, not two)."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()

    def reset(self) -> None:
        self.sha256 = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)

    @classmethod
    def of_file(cls, path: Path, length: int | None = None) -> Digests:
        """The digests of the first `length` bytes of `path` (all of it if None)."""
        digests = cls()
        left = path.stat().st_size if length is None else length
        with path.open("rb") as data:
            while left > 0 and (chunk := data.read(min(CHUNK, left))):
                digests.update(chunk)
                left -= len(chunk)
        return digests


class Installer:
    """Download, verify and install for one agent; the partial download survives for a resume."""

    def __init__(self, paths: AgentPaths, status: StatusFile) -> None:
        self.paths = paths
        self.status = status
        self._digests: Digests | None = None  # of the complete download, when this process fetched it

    @property
    def _partial(self) -> Path:
        return self.paths.state_dir / "payload.partial"

    @property
    def _partial_meta(self) -> Path:
        return self.paths.state_dir / "payload.partial.json"

    def discard_download(self) -> None:
        for path in self.paths.state_dir.glob("payload*"):
            with contextlib.suppress(OSError):
                path.unlink()

    def download(self, offer: Offer) -> Path:
        """Fetch the payload into the state directory, resuming a partial file of the same payload."""
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        meta = {"url": offer.url, "sha256": offer.sha256_b64, "size": offer.size}
        try:
            previous = json.loads(self._partial_meta.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != meta:
            self.discard_download()
        write_atomically(self._partial_meta, json.dumps(meta) + "\n", 0o600)
        have = self._partial.stat().st_size if self._partial.exists() else 0
        if have > offer.size:
            self._partial.unlink()
            have = 0
        self._digests = None
        if have < offer.size:
            self.status.set(CURRENT_OP=STATUS_DOWNLOADING)
            digests = Digests.of_file(self._partial, have) if have else Digests()
            try:
                self._fetch(offer, have, digests)
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have:
                    log.warning("the server refused to resume at byte %d; starting over", have)
                    self._partial.unlink()
                    digests = Digests()
                    self._fetch(offer, 0, digests)
                else:
                    raise UpdateFailure(
                        ERROR_DOWNLOAD_TRANSFER, f"downloading {offer.url} failed: {exc}"
                    ) from exc
            self._digests = digests
        got = self._partial.stat().st_size
        if got != offer.size:
            raise UpdateFailure(
                ERROR_PAYLOAD_SIZE_MISMATCH,
                f"the payload has {got} bytes, the update offer said {offer.size}",
            )
        return self._partial

    def _fetch(self, offer: Offer, have: int, digests: Digests) -> None:
        """Append the rest of the payload to the partial file, feeding `digests` (which cover `have`)."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        if have:
            log.info("resuming the download of %s at byte %d", offer.name, have)
        request = urllib.request.Request(offer.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                if have and answer.status == 200:
                    log.warning(
                        "the server ignored the range request; downloading %s from the start", offer.name
                    )
                    have = 0
                    digests.reset()
                elif have and answer.status == 206:
                    content_range = answer.headers.get("Content-Range", "")
                    if not content_range.startswith(f"bytes {have}-"):
                        raise UpdateFailure(
                            ERROR_DOWNLOAD_TRANSFER,
                            f"the server resumed at the wrong place: {content_range!r}",
                        )
                length = answer.headers.get("Content-Length")
                if length is not None and length.isdigit() and have + int(length) > offer.size:
                    raise UpdateFailure(
                        ERROR_PAYLOAD_SIZE_MISMATCH,
                        f"the server sends {have + int(length)} bytes, the update offer said {offer.size}",
                    )
                with SparseWriter(self._partial, have) as out:
                    last_note = 0.0
                    while chunk := answer.read(CHUNK):
                        if out.position + len(chunk) > offer.size:
                            raise UpdateFailure(
                                ERROR_PAYLOAD_SIZE_MISMATCH,
                                f"the payload is larger than the {offer.size} bytes offered",
                            )
                        out.write(chunk)
                        digests.update(chunk)
                        if time.monotonic() - last_note > 2 or out.position == offer.size:
                            last_note = time.monotonic()
                            self.status.set(PROGRESS=f"{out.position / offer.size:.4f}")
                    done = out.position
                if length is not None and length.isdigit() and done < have + int(length):
                    raise http.client.IncompleteRead(b"", have + int(length) - done)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise UpdateFailure(
                ERROR_DOWNLOAD_TRANSFER, f"downloading {offer.url} broke off: {exc}", keep_download=True
            ) from exc

    def verify(self, config: AgentConfig, offer: Offer, payload: Path) -> None:
        """Size, SHA-256 and signature, before anything is written to a slot."""
        digests = self._digests if self._digests is not None else Digests.of_file(payload)
        sha256 = digests.sha256
        got256 = base64.b64encode(sha256.digest()).decode()
        if got256 != offer.sha256_b64:
            raise UpdateFailure(
                ERROR_PAYLOAD_HASH_MISMATCH,
                f"the payload's SHA-256 is {got256}, the update offer said {offer.sha256_b64}",
            )
        self.verify_signature(config, offer, sha256.hexdigest())

    def verify_signature(self, config: AgentConfig, offer: Offer, sha256_hex: str) -> None:
        """The offer's signature must sign `signed_statement(sha256_hex)`: the digest of the bytes that
        were downloaded (already compared with the offer's), signed by the trusted key."""
        key = config.signing_key
        if key is None:
            log.warning("SIGNING_KEY=none: the payload's signature is not checked")
            return
        if not key.is_file():
            raise UpdateFailure(
                ERROR_PAYLOAD_VERIFICATION,
                f"no signing key at {key}, so the payload cannot be verified "
                "(ship it in /usr/share/railyard/update-signing.pub or name one with SIGNING_KEY=)",
            )
        if offer.signature_url is None:
            raise UpdateFailure(
                ERROR_PAYLOAD_VERIFICATION, "the update offer names no signature, and one is required"
            )
        try:
            with urllib.request.urlopen(offer.signature_url, timeout=HTTP_TIMEOUT) as answer:
                signature: bytes = answer.read(MAX_SIGNATURE_BYTES + 1)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise UpdateFailure(
                ERROR_DOWNLOAD_TRANSFER, f"cannot fetch the signature {offer.signature_url}: {exc}"
            ) from exc
        if len(signature) > MAX_SIGNATURE_BYTES:
            raise UpdateFailure(ERROR_PAYLOAD_VERIFICATION, "the payload signature is implausibly large")
        sig_path = self.paths.state_dir / "payload.sig"
        signers = self.paths.state_dir / "payload.allowed_signers"
        sig_path.write_bytes(signature)
        signers.write_text(allowed_signers(key.read_text()))
        result = subprocess.run(
            verify_command(self.paths.ssh_keygen, signers, sig_path),
            input=signed_statement(sha256_hex),
            capture_output=True,
            check=False,
        )
        stdout = result.stdout.decode(errors="replace").strip()
        stderr = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0:
            raise UpdateFailure(
                ERROR_PAYLOAD_VERIFICATION,
                f"the payload signature does not verify with {key}: {stderr or stdout}",
            )
        log.info("payload signature good: %s", stdout or stderr)

    def install(self, payload: Path) -> None:
        """Hand the verified payload to `railyard-slot install`: a raw image or a zstd one by its path (the
        tool decompresses zstd straight into the slot: no pipe, no second copy of every byte); gzip and xz
        decompressed into the tool's standard input. Either way the image is written once, to the slot."""
        kind = compression(payload)
        streamed = kind is not None and kind != "zstd"
        command = [*self.paths.slot_tool, "install", "-" if streamed else str(payload)]
        log.info(
            "installing %s%s with %s", payload, f" ({kind})" if kind else "", " ".join(self.paths.slot_tool)
        )
        unpack_error: BaseException | None = None
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            slot = subprocess.Popen(
                command, stdin=subprocess.PIPE if streamed else subprocess.DEVNULL, stdout=out, stderr=err
            )
            try:
                if slot.stdin is not None:
                    with slot.stdin:
                        decompress_into(payload, kind, slot.stdin)
            except (OSError, EOFError, lzma.LZMAError, subprocess.CalledProcessError) as exc:
                unpack_error = exc
            finally:
                code = slot.wait()
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace").strip()
            stderr = err.read().decode(errors="replace").strip()
        if code == 0 and stderr:  # what it did on the way (how it wrote the slot), for the journal
            log.info("%s", stderr)
        if stdout:
            log.info("%s", stdout)
        if code != 0:  # the tool's own reason first: a broken pipe only says that it stopped reading
            raise UpdateFailure(ERROR_INSTALL, f"railyard-slot install failed: {stderr}")
        if unpack_error is not None:
            raise UpdateFailure(ERROR_INSTALL, f"cannot unpack the payload: {unpack_error}")


def compression(payload: Path) -> str | None:
    """ "gzip", "xz" or "zstd" from the payload's magic bytes; None for a raw image."""
    with payload.open("rb") as data:
        magic = data.read(6)
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic == b"\xfd7zXZ\x00":
        return "xz"
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


def decompress_into(payload: Path, kind: str | None, sink: IO[bytes]) -> None:
    """Write the decompressed gzip or xz payload to `sink` (zstd goes to the slot tool by its path)."""
    opener = gzip.open if kind == "gzip" else lzma.open
    with opener(payload, "rb") as source:
        while chunk := source.read(CHUNK):
            sink.write(chunk)


def signed_statement(sha256_hex: str) -> bytes:
    """What a payload's signature signs: one line naming the payload's SHA-256 (lower-case hex). The host
    signs this line (harness.update_signing)."""
    return f"railyard-update payload sha256={sha256_hex}\n".encode()


def verify_command(ssh_keygen: str, allowed_signers_file: Path, signature_file: Path) -> list[str]:
    """The `ssh-keygen -Y verify` that checks a signature of the statement given on its standard input."""
    return [
        ssh_keygen,
        "-Y",
        "verify",
        "-f",
        str(allowed_signers_file),
        "-I",
        SIGNER_IDENTITY,
        "-n",
        SIGNING_NAMESPACE,
        "-s",
        str(signature_file),
    ]


def allowed_signers(key_text: str) -> str:
    """An allowed_signers file from the shipped key: kept as is, or built from a bare public key line."""
    lines: list[str] = []
    for raw in key_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
            line = f'{SIGNER_IDENTITY} namespaces="{SIGNING_NAMESPACE}" {line}'
        lines.append(line)
    return "\n".join(lines) + "\n"
