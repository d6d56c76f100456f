"""Host-built container images: the program runs (here, on the host), and the archive is what `docker load`
and `podman load` read, with the image id known in advance."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.container_image import build_image_archive, hello_program

MESSAGE = b"hello from a host-built container\n"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the program is x86-64 code")
def test_the_program_writes_its_message_and_exits_0(tmp_path: Path) -> None:
    program = tmp_path / "hello"
    program.write_bytes(hello_program(MESSAGE))
    program.chmod(0o755)
    done = subprocess.run([str(program)], capture_output=True, timeout=10, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, MESSAGE, b"")
    assert len(program.read_bytes()) < 256


def test_the_archive_is_a_docker_archive_whose_config_digest_is_the_image_id(tmp_path: Path) -> None:
    made = build_image_archive(
        tmp_path / "hello.tar", "localhost/railyard-hello:1", {"/hello": (b"x", 0o755)}, ["/hello"]
    )
    with tarfile.open(made.path) as tar:
        read = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    [entry] = json.loads(read["manifest.json"])
    assert entry["RepoTags"] == ["localhost/railyard-hello:1"]
    config = read[entry["Config"]]
    assert hashlib.sha256(config).hexdigest() == made.image_id
    layer = read[entry["Layers"][0]]
    assert json.loads(config)["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    assert json.loads(config)["config"]["Entrypoint"] == ["/hello"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as files:
        [member] = files.getmembers()
    assert (member.name, member.mode, member.size) == ("hello", 0o755, 1)


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    a = build_image_archive(tmp_path / "a.tar", "t:1", {"/hello": (b"x", 0o755)}, ["/hello"])
    b = build_image_archive(tmp_path / "b.tar", "t:1", {"/hello": (b"x", 0o755)}, ["/hello"])
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.image_id == b.image_id
