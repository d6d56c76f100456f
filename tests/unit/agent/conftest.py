"""The update agent's tests share a signing key, an Omaha server, a pretend guest and a payload."""

import os

import pytest

from harness.omaha import OmahaServer
from harness.update_signing import generate_signing_key
from tests.unit.agent.guest import Guest


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_signing_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def server():
    with OmahaServer() as omaha:
        yield omaha


@pytest.fixture
def guest(tmp_path, server, keys):
    return Guest(tmp_path / "guest", server, keys[1])


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "usr-1.1.0.img"
    path.write_bytes(os.urandom(300_000))
    return path
