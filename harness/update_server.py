"""The update server of the update tests: an Omaha server that publishes the default image's channels as
signed /usr payloads (good ones, and deliberately bad or unbootable ones), or a Flatcar update payload
(`--update-payload`) under Flatcar's app id, and points machines at itself."""

from __future__ import annotations

import base64
import enum
import hashlib
import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, UpdateError
from harness.flatcar_payload import FlatcarPayload
from harness.machine import GuestMachine
from harness.omaha import OmahaEvent, OmahaServer, Published
from harness.omaha_protocol import (
    ERROR_INSTALL,
    ERROR_PAYLOAD_HASH_MISMATCH,
    ERROR_PAYLOAD_SIZE_MISMATCH,
    ERROR_PAYLOAD_VERIFICATION,
    FLATCAR_APP_ID,
    RAILYARD_APP_ID,
)
from harness.update_signing import generate_signing_key, sign_payload

log = logging.getLogger(__name__)

SMALL_FS_MIB = 16


class BadPayload(enum.Enum):
    """Payloads a client must refuse before it writes anything to a slot."""

    WRONG_SHA256 = "wrong-sha256"  # the offer names another SHA-256 than the file has
    TRUNCATED = "truncated"  # a correctly signed file whose ext4 file system is cut short
    WRONG_SIGNATURE = "wrong-signature"  # signed, but not with the key the image trusts
    OVERSIZED = "oversized"  # the server sends more bytes than the offer announced

    @property
    def error_code(self) -> int:
        """The Omaha error code the default image's agent reports for it."""
        return {
            BadPayload.WRONG_SHA256: ERROR_PAYLOAD_HASH_MISMATCH,
            BadPayload.TRUNCATED: ERROR_INSTALL,
            BadPayload.WRONG_SIGNATURE: ERROR_PAYLOAD_VERIFICATION,
            BadPayload.OVERSIZED: ERROR_PAYLOAD_SIZE_MISMATCH,
        }[self]


FLATCAR_REFUSALS = {
    BadPayload.WRONG_SHA256: ERROR_PAYLOAD_HASH_MISMATCH,
    BadPayload.OVERSIZED: ERROR_PAYLOAD_SIZE_MISMATCH,
}
"""What Flatcar's update_engine reports for the bad payloads a real Flatcar payload can be made into: its
download takes every byte sent, then PayloadProcessor::VerifyPayload compares the size the offer announced
(kActionCodePayloadSizeMismatchError), then the SHA-256 (kActionCodePayloadHashMismatchError). A payload
signed with a stranger's key or cut short needs Flatcar's payload tools: the default image's only."""


def make_ext4(path: Path, size_mib: int, files: Mapping[str, str] | None = None) -> Path:
    """A small ext4 file system (no journal) in a file, holding `files` (relative path -> text)."""
    with tempfile.TemporaryDirectory(prefix="railyard-fs-") as tmp:
        content = Path(tmp)
        for rel, text in (files or {}).items():
            target = content / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        path.unlink(missing_ok=True)
        with path.open("wb") as out:
            out.truncate(size_mib << 20)
        result = subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-b",
                "4096",
                "-O",
                "^has_journal",
                "-L",
                "USR",
                "-d",
                str(content),
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise ConfigError(f"mkfs.ext4 could not make {path}: {result.stderr.strip()} (install e2fsprogs)")
    return path


@dataclass(frozen=True)
class Payload:
    """A /usr payload file of a channel's version and its signature with the image's key."""

    channel: str
    version: str
    path: Path
    signature: bytes


GUEST_PORT = 8470
"""Where guests reach every update server (forwarded to the server's own port): one config for all update
machines of a channel, so they share a booted checkpoint."""


class UpdateServer(OmahaServer):
    """An Omaha server for the default image: publishes its channels' /usr payloads, signed; given `flatcar`
    (a Flatcar update payload), it offers that one under Flatcar's app id instead.

    One track per channel (the machine's GROUP); publishing replaces what the track offered before, so each
    call decides what the next update check gets. `workdir` holds the payloads made for this server.
    """

    def __init__(
        self,
        workdir: Path,
        app_id: str | None = None,
        guest_port: int = GUEST_PORT,
        *,
        flatcar: FlatcarPayload | None = None,
    ) -> None:
        app_id = app_id or (FLATCAR_APP_ID if flatcar is not None else RAILYARD_APP_ID)
        super().__init__(app_id, app_ids=(FLATCAR_APP_ID,), guest_port=guest_port)
        self.flatcar = flatcar
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def bad_payload_kinds(self) -> tuple[BadPayload, ...]:
        """The bad payloads this server can offer (all of them for the default image)."""
        return tuple(FLATCAR_REFUSALS) if self.flatcar is not None else tuple(BadPayload)

    def refusal_code(self, kind: BadPayload) -> int:
        """The Omaha error code the machine's updater reports when it refuses `kind`."""
        return FLATCAR_REFUSALS[kind] if self.flatcar is not None else kind.error_code

    @property
    def knows_versions(self) -> bool:
        """Whether a published version is the version the machine runs after the update (the default
        image's always are; a Flatcar payload's when `--update-payload-version` said it)."""
        return self.flatcar is None or self.flatcar.version is not None

    def _flatcar_payload(self, what: str) -> FlatcarPayload:
        if self.flatcar is None:
            raise UpdateError(f"no Flatcar update payload to {what}: give one with --update-payload")
        return self.flatcar

    # -- the default image's payloads ------------------------------------------------------------

    @cached_property
    def signing_key(self) -> Path:
        """The private key the default images of this cache trust."""
        from images.build import signing_key

        return signing_key()

    def version_after(self, channel: str, steps: int = 1) -> str:
        from images.build import update_version

        return update_version(channel, steps)

    def payload(self, channel: str, steps: int = 1) -> Payload:
        """The real /usr of the version `steps` after the channel's image (built once, cached), signed."""
        from images.build import update_payload

        version, path = update_payload(channel, steps)
        return Payload(channel, version, path, self._signature(path))

    def _signature(self, path: Path) -> bytes:
        sig = path.with_name(path.name + ".sig")
        if sig.exists() and sig.stat().st_mtime >= path.stat().st_mtime:
            return sig.read_bytes()
        signature = sign_payload(path, self.signing_key)
        partial = sig.with_name(f"{sig.name}.{os.getpid()}.tmp")
        partial.write_bytes(signature)
        partial.replace(sig)
        return signature

    def _publish(self, channel: str, version: str, path: Path, signature: bytes, **kwargs: Any) -> Published:
        self.unpublish(self.app_id, channel)
        return self.publish(self.app_id, channel, version, path, signature=signature, **kwargs)

    def publish_next(self, channel: str, steps: int = 1) -> Published:
        """Offer the channel's next version (`steps=2`: the one after it) as a signed /usr payload; for
        Flatcar, the `--update-payload` (there is one: `steps` must be 1)."""
        if self.flatcar is not None:
            if steps != 1:
                raise UpdateError("one Flatcar update payload is given (--update-payload): no second step")
            return self._publish_flatcar(channel)
        item = self.payload(channel, steps)
        return self._publish(channel, item.version, item.path, item.signature)

    def _publish_flatcar(self, channel: str, **kwargs: Any) -> Published:
        payload = self._flatcar_payload("publish")
        self.unpublish(self.app_id, channel)
        return self.publish(self.app_id, channel, payload.announced_version, payload.path, **kwargs)

    def publish_unbootable(self, channel: str, steps: int = 1) -> Published:
        """Offer a correctly signed payload that installs but cannot boot: an empty ext4 file system."""
        if self.flatcar is not None:
            raise UpdateError("an unbootable Flatcar payload needs Flatcar's payload tools: not offered")
        path = make_ext4(self.workdir / f"unbootable-{channel}.ext4", SMALL_FS_MIB * 2)
        return self._publish(
            channel, self.version_after(channel, steps), path, sign_payload(path, self.signing_key)
        )

    def publish_bad(self, channel: str, kind: BadPayload, steps: int = 1) -> Published:
        """Offer a payload the client must refuse (see BadPayload) as the channel's next version (for
        Flatcar, the `--update-payload` with a wrong SHA-256 or size: `bad_payload_kinds`)."""
        if self.flatcar is not None:
            return self._publish_bad_flatcar(channel, kind)
        version = self.version_after(channel, steps)
        path = make_ext4(
            self.workdir / f"{kind.value}-{channel}.ext4",
            SMALL_FS_MIB,
            {"lib/os-release": f"ID=railyard\nVERSION_ID={version}\n"},
        )
        if kind is BadPayload.WRONG_SHA256:
            real = sign_payload(path, self.signing_key)
            other = sha256_b64(path.read_bytes() + b"\0")
            return self._publish(channel, version, path, real, override_sha256=other)
        if kind is BadPayload.TRUNCATED:
            with path.open("r+b") as data:
                data.truncate((SMALL_FS_MIB << 20) // 2)
            return self._publish(channel, version, path, sign_payload(path, self.signing_key))
        if kind is BadPayload.WRONG_SIGNATURE:
            return self._publish(channel, version, path, sign_payload(path, self._stranger_key))
        if kind is BadPayload.OVERSIZED:
            size = path.stat().st_size
            return self._publish(
                channel, version, path, sign_payload(path, self.signing_key), override_size=size // 2
            )
        raise ConfigError(f"unknown bad payload kind {kind!r}")

    def _publish_bad_flatcar(self, channel: str, kind: BadPayload) -> Published:
        payload = self._flatcar_payload("spoil")
        if kind is BadPayload.WRONG_SHA256:
            with payload.path.open("rb") as data:
                other = sha256_b64(data.read(1 << 20) + b"\0")
            return self._publish_flatcar(channel, override_sha256=other)
        if kind is BadPayload.OVERSIZED:
            return self._publish_flatcar(channel, override_size=payload.path.stat().st_size // 2)
        raise UpdateError(f"a {kind.value} Flatcar payload needs Flatcar's payload tools: not offered")

    @cached_property
    def _stranger_key(self) -> Path:
        """A signing key no image trusts."""
        private, _ = generate_signing_key(self.workdir / "stranger-key")
        return private

    # -- what machines reported --------------------------------------------------------------------

    def machine_events(self, machine: GuestMachine, after: int = 0) -> list[OmahaEvent]:
        """Events the machine reported (from index `after` of `events` on), oldest first."""
        mid = machine_id(machine)
        return [e for e in self.events[after:] if e.machine_id == mid]

    def wait_for_machine_event(
        self, machine: GuestMachine, event_type: int, event_result: int, *, timeout: float, after: int = 0
    ) -> OmahaEvent:
        """The first event of that type and result from the machine (after index `after`), waiting."""
        return self.wait_for_event(
            (event_type, event_result), machine_id=machine_id(machine), timeout=timeout, after=after
        )


def sha256_b64(data: bytes) -> str:
    """Base64 SHA-256 of `data`, as Omaha manifests carry it."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def machine_id(machine: GuestMachine) -> str:
    """The id the machine's updater reports to Omaha (/etc/machine-id)."""
    value = machine.succeed("cat /etc/machine-id").strip()
    if not value:
        raise UpdateError(f"{machine.name} has no /etc/machine-id")
    return value


def point_at(machine: GuestMachine, server: OmahaServer) -> None:
    """Point a running machine's updater at `server` for its channel (for machines booted without it)."""
    machine.forward_host_service(server.port, server.guest_port)
    distro = machine.distro
    if distro.update_conf is None:
        raise UpdateError(f"{distro.name} has no A/B update support in Railyard")
    text = distro.update_config(server.guest_url, machine.channel)
    path = shlex.quote(distro.update_conf)
    machine.succeed(
        f'sudo mkdir -p "$(dirname {path})" && printf %s {_sh(text)} | sudo tee {path} >/dev/null'
    )
    machine.os.reload_update_config()


def _sh(text: str) -> str:
    return shlex.quote(text)


__all__ = ["BadPayload", "Payload", "UpdateServer", "machine_id", "make_ext4", "point_at", "sha256_b64"]
