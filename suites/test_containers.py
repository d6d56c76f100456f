"""The OS's container runtime (podman on the default image, docker on Flatcar) loads an image the test builds
on the host, no registry involved, and runs it. One boot (the default config) serves the module."""

import pytest

from harness.container_image import build_image_archive, hello_program

TAG = "localhost/railyard-hello:1"
MESSAGE = b"hello from a container built on the host\n"


@pytest.fixture(scope="module")
def hello_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("container") / "hello.tar"
    return build_image_archive(path, TAG, {"/hello": (hello_program(MESSAGE), 0o755)}, ["/hello"])


def test_an_image_built_on_the_host_is_loaded_and_run(module_machine, hello_image):
    """kola: docker.base (here with an image from the host instead of a registry)"""
    m = module_machine
    cli = m.distro.container_cli
    if cli is None:
        pytest.skip(f"{m.distro.name} has no container runtime")
    m.copy_to(hello_image.path, "/tmp/railyard-hello.tar")
    m.succeed(f"sudo {cli} load -i /tmp/railyard-hello.tar")
    ids = m.succeed(f"sudo {cli} images --no-trunc --format '{{{{.ID}}}}' {TAG}")
    assert hello_image.image_id in ids, ids
    # No network: nothing the container does may leave the machine.
    output = m.succeed(f"sudo {cli} run --rm --network=none --name railyard-hello {TAG}")
    assert output == MESSAGE.decode()
    assert m.succeed(f"sudo {cli} ps --all --quiet --filter name=railyard-hello").strip() == ""
    m.succeed(f"sudo {cli} rmi {TAG}")
