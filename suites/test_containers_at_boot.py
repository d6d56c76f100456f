"""A container a unit starts at boot, the way Container Linux runs its workloads: Ignition writes an image
archive (built on the host, no registry) and a unit that loads and runs it with no network. One machine serves
the module; the tests only read."""

import tempfile
from pathlib import Path

import pytest

from harness.container_image import build_image_archive, hello_program
from harness.ignition import IgnitionConfig

TAG = "localhost/railyard-boot-hello:1"
MESSAGE = b"hello from a container a unit started at boot\n"
ARCHIVE = "/var/lib/railyard/boot-hello.tar"


def _archive() -> bytes:
    """The image archive's bytes (the same on every run: the config and its checkpoint stay the same)."""
    with tempfile.TemporaryDirectory(prefix="railyard-boot-hello-") as d:
        path = Path(d, "hello.tar")
        build_image_archive(path, TAG, {"/hello": (hello_program(MESSAGE), 0o755)}, ["/hello"])
        return path.read_bytes()


UNIT = (
    "[Unit]\nDescription=Railyard container at boot\nWants=network-online.target\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    f"ExecStartPre=/usr/bin/podman load -q -i {ARCHIVE}\n"
    f"ExecStart=/usr/bin/podman run --rm --network=none --name railyard-boot-hello {TAG}\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

pytestmark = [
    pytest.mark.distros("railyard", reason="the unit runs podman, the default image's runtime"),
    pytest.mark.ignition(
        IgnitionConfig()
        .add_file(ARCHIVE, _archive(), mode=0o600)
        .add_unit("railyard-container.service", contents=UNIT, enabled=True)
        .to_dict()
    ),
]


def test_the_unit_ran_the_container_and_its_output_is_in_the_journal(module_machine):
    """kola: docker.base (a container started by systemd)"""
    m = module_machine
    m.wait_for_unit("railyard-container.service", timeout=300)
    assert m.succeed("systemctl show -P Result railyard-container.service").strip() == "success"
    output = m.succeed("sudo journalctl -b -q -o cat -u railyard-container.service")
    assert MESSAGE.decode().strip() in output.splitlines(), output


def test_the_image_stays_and_the_container_is_gone(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-container.service", timeout=300)
    assert TAG in m.succeed("sudo podman images --format '{{.Repository}}:{{.Tag}}'").split()
    assert m.succeed("sudo podman ps -a --format '{{.Names}}'").strip() == ""
