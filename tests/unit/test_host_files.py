"""The host's file server for guests: what was added is served at the guest's URL (here fetched through the
host's own 127.0.0.1), with Ignition's hash of it, and every request is recorded."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request

import pytest

from harness.errors import ConfigError
from harness.host_files import HostFiles, verification_hash


@pytest.fixture
def files():
    server = HostFiles("10.0.2.2")
    yield server
    server.close()


def local(url: str) -> str:
    """What the guest's URL is on the host itself."""
    return url.replace("10.0.2.2", "127.0.0.1", 1)


def test_an_added_file_is_served_with_its_hash(files):
    data = bytes(range(256)) * 10
    served = files.add("blob.bin", data)
    assert served.url.startswith(f"http://10.0.2.2:{files.port}/")
    assert served.url.endswith("/blob.bin")
    assert served.sha512 == "sha512-" + hashlib.sha512(data).hexdigest()
    assert not files.was_fetched(served)
    with urllib.request.urlopen(local(served.url), timeout=10) as response:
        assert response.read() == data
    assert files.was_fetched(served)


def test_files_of_the_same_name_do_not_collide(files):
    first, second = files.add("config.ign", "{}"), files.add("config.ign", '{"a": 1}')
    assert first.url != second.url
    with urllib.request.urlopen(local(second.url), timeout=10) as response:
        assert response.read() == b'{"a": 1}'


def test_an_unknown_path_is_a_404_and_is_recorded(files):
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{files.port}/9/nothing", timeout=10)
    assert missing.value.code == 404
    assert files.fetched == ["/9/nothing"]


@pytest.mark.parametrize("name", ["", "a/b"])
def test_a_bad_name_is_refused(files, name):
    with pytest.raises(ConfigError):
        files.add(name, b"x")


def test_the_hash_is_ignitions_format():
    assert verification_hash(b"") == "sha512-" + hashlib.sha512(b"").hexdigest()
