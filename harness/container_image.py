"""Container images built on the host, with no registry and no container tool: a Docker archive (the format
`docker load` and `podman load` read) with one layer, and the smallest program a layer can run, a static x86-64
ELF that writes a message and exits. The same inputs give the same bytes, so the image id is known in advance.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# A fixed time for every archive member: the same inputs, the same bytes.
EPOCH = 1_700_000_000
LOAD_ADDRESS = 0x400000
ELF_HEADER_SIZE = 64
PROGRAM_HEADER_SIZE = 56


def hello_program(message: bytes) -> bytes:
    """A static Linux x86-64 executable that writes `message` to stdout and exits 0 (no libc, no loader)."""
    code_offset = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE
    # mov eax,1 (write); mov edi,1; lea rsi,[rip+message]; mov edx,len; syscall;
    # mov eax,60 (exit); xor edi,edi; syscall; then the message.
    head = b"\xb8\x01\x00\x00\x00" + b"\xbf\x01\x00\x00\x00"
    tail = (
        b"\xba"
        + struct.pack("<I", len(message))
        + b"\x0f\x05"
        + b"\xb8\x3c\x00\x00\x00"
        + b"\x31\xff\x0f\x05"
    )
    displacement = len(tail)  # from the end of the lea to the message, which follows the code
    code = head + b"\x48\x8d\x35" + struct.pack("<i", displacement) + tail
    size = code_offset + len(code) + len(message)
    elf_header = (
        b"\x7fELF"
        + bytes([2, 1, 1, 0])  # 64-bit, little endian, version 1, System V
        + bytes(8)
        + struct.pack(
            "<HHIQQQIHHHHHH",
            2,  # ET_EXEC
            0x3E,  # x86-64
            1,
            LOAD_ADDRESS + code_offset,  # entry point
            ELF_HEADER_SIZE,  # program headers follow
            0,  # no section headers
            0,
            ELF_HEADER_SIZE,
            PROGRAM_HEADER_SIZE,
            1,
            0,
            0,
            0,
        )
    )
    program_header = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # read + execute
        0,  # the whole file
        LOAD_ADDRESS,
        LOAD_ADDRESS,
        size,
        size,
        0x1000,
    )
    return elf_header + program_header + code + message


@dataclass(frozen=True)
class ImageArchive:
    path: Path
    tag: str
    image_id: str  # sha256 of the config: what `docker images`/`podman images` print as the image id
    layer_digest: str


def _tar(members: Mapping[str, tuple[bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def build_image_archive(
    path: Path, tag: str, files: Mapping[str, tuple[bytes, int]], entrypoint: list[str]
) -> ImageArchive:
    """Write a one-layer image (`files`: path in the image -> (contents, mode)) as a Docker archive at `path`."""
    layer = _tar({name.lstrip("/"): value for name, value in files.items()})
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {"Entrypoint": entrypoint, "Env": ["PATH=/"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "railyard (host-built layer)"}],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{image_id}.json", "RepoTags": [tag], "Layers": [f"{layer_digest}/layer.tar"]}]
    ).encode()
    archive = _tar(
        {
            "manifest.json": (manifest, 0o644),
            f"{image_id}.json": (config, 0o644),
            f"{layer_digest}/layer.tar": (layer, 0o644),
        }
    )
    path.write_bytes(archive)
    return ImageArchive(path, tag, image_id, layer_digest)


__all__ = ["ImageArchive", "build_image_archive", "hello_program"]
