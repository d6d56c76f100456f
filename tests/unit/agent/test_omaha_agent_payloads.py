"""The default image's update agent, run on the host against the real Omaha server and a fake slot tool:
payloads it must never install (wrong digests or size, no signature, another key's), a failing install, and
how it downloads (resumed, discarded, decompressed into the slot tool, written sparse)."""

import hashlib
import json
import shutil
import subprocess

import pytest

from harness.omaha_protocol import (
    ERROR_INSTALL,
    ERROR_PAYLOAD_HASH_MISMATCH,
    ERROR_PAYLOAD_SIZE_MISMATCH,
    ERROR_PAYLOAD_VERIFICATION,
    RAILYARD_APP_ID,
)
from harness.update_signing import generate_signing_key, sign_payload
from images.agent.railyard_agent.payload import allowed_signers
from images.agent.railyard_agent.sparse import SparseWriter
from tests.unit.agent.guest import event_codes, publish

pytestmark = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)"
)


@pytest.mark.parametrize(
    ("publish_kwargs", "code"),
    [
        ({"override_sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}, ERROR_PAYLOAD_HASH_MISMATCH),
        ({"override_size": 300_001}, ERROR_PAYLOAD_SIZE_MISMATCH),  # truncated: fewer bytes than announced
        ({"override_size": 299_999}, ERROR_PAYLOAD_SIZE_MISMATCH),  # oversized
        ({"signature": None}, ERROR_PAYLOAD_VERIFICATION),
    ],
    ids=["wrong-sha256", "truncated", "oversized", "unsigned"],
)
def test_bad_payload_is_never_installed(guest, server, payload, keys, publish_kwargs, code):
    publish(server, payload, keys, **publish_kwargs)
    assert guest.agent.check() == "failed"
    assert guest.calls("install") == []
    assert event_codes(server) == [(13, 1, None), (3, 0, code)]
    status = guest.status()
    assert status["CURRENT_OP"] == "UPDATE_STATUS_IDLE"
    assert status["LAST_ERROR_CODE"] == str(code)
    assert status["LAST_ERROR"]
    assert guest.downloads_left() == []


def test_the_offered_sha1_is_not_checked(guest, server, payload, keys):
    """As update_engine: the payload's hash is the postinstall action's sha256; the package's SHA-1 (the
    Omaha `hash` that servers still send) is not the agent's to check."""
    publish(server, payload, keys, override_sha1="2jmj7l5rSw0yVb/vlWAYkK/YBwk=")
    assert guest.agent.check() == "updated"
    assert len(guest.calls("install")) == 1
    assert event_codes(server) == [(13, 1, None), (14, 1, None), (3, 1, None)]


def test_missing_signing_key_fails_closed_unless_disabled(guest, server, payload):
    server.publish(RAILYARD_APP_ID, "stable", "1.1.0", payload)
    guest.configure(SERVER=server.url, SIGNING_KEY=str(guest.root / "missing.pub"))
    assert guest.agent.check() == "failed"
    assert event_codes(server)[-1] == (3, 0, ERROR_PAYLOAD_VERIFICATION)
    assert "no signing key" in guest.status()["LAST_ERROR"]
    guest.configure(SERVER=server.url, SIGNING_KEY="none")
    assert guest.agent.check() == "updated"


def test_signature_by_another_key_is_rejected(guest, server, payload, tmp_path):
    other_private, _ = generate_signing_key(tmp_path / "other")
    server.publish(
        RAILYARD_APP_ID, "stable", "1.1.0", payload, signature=sign_payload(payload, other_private)
    )
    assert guest.agent.check() == "failed"
    assert guest.calls("install") == []
    assert event_codes(server)[-1] == (3, 0, ERROR_PAYLOAD_VERIFICATION)


def test_tampered_payload_with_matching_digests_fails_the_signature(guest, server, payload, keys, tmp_path):
    signature = sign_payload(payload, keys[0])
    tampered = tmp_path / "tampered.img"
    data = payload.read_bytes()
    tampered.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # a changed byte, whatever it was
    server.publish(RAILYARD_APP_ID, "stable", "1.1.0", tampered, signature=signature)
    assert guest.agent.check() == "failed"
    assert event_codes(server)[-1] == (3, 0, ERROR_PAYLOAD_VERIFICATION)
    assert guest.calls("install") == []


def test_failing_slot_tool_reports_install_error(guest, server, payload, keys):
    publish(server, payload, keys)
    (guest.root / "slot/fail-install").write_text("")
    assert guest.agent.check() == "failed"
    assert event_codes(server) == [(13, 1, None), (14, 1, None), (3, 0, ERROR_INSTALL)]
    assert "writing USR-B failed" in guest.status()["LAST_ERROR"]


def test_interrupted_download_resumes_with_a_range_request(guest, server, payload, keys):
    published = publish(server, payload, keys, interrupt_at=120_000)
    assert guest.agent.check() == "failed"
    assert event_codes(server)[-1] == (3, 0, 9)
    assert (guest.root / "state/payload.partial").stat().st_size == 120_000
    assert guest.calls("install") == []
    assert guest.agent.check(interactive=True) == "updated"
    gets = [d for d in server.downloads if d.path.endswith(published.name)]
    assert [(d.range_header, d.status) for d in gets] == [(None, 200), ("bytes=120000-", 206)]
    assert gets[1].bytes_sent == 300_000 - 120_000
    assert guest.installed_sha256() == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_partial_download_of_another_payload_is_discarded(guest, server, payload, keys):
    (guest.root / "state/payload.partial").write_bytes(b"stale" * 100)
    (guest.root / "state/payload.partial.json").write_text(json.dumps({"url": "x", "sha256": "y", "size": 1}))
    publish(server, payload, keys)
    assert guest.agent.check() == "updated"
    assert [d.range_header for d in server.downloads if not d.path.endswith(".sig")] == [None]


@pytest.mark.parametrize("packer", ["gzip", "xz", "zstd"])
def test_compressed_payload_is_streamed_into_the_slot_tool(guest, server, payload, keys, tmp_path, packer):
    packed = tmp_path / "usr.img.packed"
    packed.write_bytes(subprocess.run([packer, "-c", str(payload)], capture_output=True, check=True).stdout)
    publish(server, packed, keys)
    assert guest.agent.check() == "updated"
    # No unpacked copy in the state directory: gzip and xz are unpacked into the tool's standard input, zstd
    # by the tool itself, from the downloaded file.
    partial = str(guest.root / "state/payload.partial")
    assert guest.calls("install") == [f"install {partial}" if packer == "zstd" else "install -"]
    assert guest.installed_sha256() == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert guest.downloads_left() == []


def test_bare_public_key_becomes_an_allowed_signers_line():
    text = allowed_signers("# key\nssh-ed25519 AAAAC3Nza comment\n")
    assert text == 'railyard-update namespaces="railyard-update" ssh-ed25519 AAAAC3Nza comment\n'
    line = 'railyard-update namespaces="railyard-update" ssh-ed25519 AAAA'
    assert allowed_signers(line) == line + "\n"


def test_downloads_are_written_sparse(tmp_path):
    path = tmp_path / "image"
    with SparseWriter(path, 0) as out:
        out.write(b"a" * 100)
        out.write(bytes(4 << 20))
        out.write(b"b" * 70_000 + bytes(1 << 20))
    assert path.read_bytes() == b"a" * 100 + bytes(4 << 20) + b"b" * 70_000 + bytes(1 << 20)
    assert path.stat().st_blocks * 512 < 2 << 20  # the zero blocks are holes
    with SparseWriter(path, 100) as out:  # resuming cuts off what follows the offset
        out.write(b"c" * 10)
    assert path.read_bytes() == b"a" * 100 + b"c" * 10
