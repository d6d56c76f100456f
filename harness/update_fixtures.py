"""Fixtures for update tests: an Omaha server per test that publishes the default image's payloads,
and machines pointed at it.

    def test_update(update_machine, omaha):
        omaha.publish_next(update_machine.channel)
        update_machine.os.update()
        update_machine.reboot()

`omaha` is an `UpdateServer` (harness.update_server). `update_machine` boots a machine whose Ignition points
its updater at that server, reached through a reverse forward over the harness's SSH connection;
`module_omaha` and `module_update_machine` do the same for the read-only tests of a module, sharing one boot
per channel.
"""

from __future__ import annotations

import shutil
from collections.abc import Generator
from typing import Any

import pytest

from harness.machine import GuestMachine
from harness.update_server import BadPayload, UpdateServer, make_ext4, point_at

# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def omaha(tmp_path_factory: pytest.TempPathFactory) -> Generator[UpdateServer, None, None]:
    """An Omaha server for this test (started, stopped afterwards): `omaha.publish_next(channel)`."""
    workdir = tmp_path_factory.mktemp("omaha")
    with UpdateServer(workdir) as server:
        yield server
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def update_machine(machine_factory: Any, omaha: UpdateServer) -> GuestMachine:
    """A fresh machine whose updater checks `omaha` (only when told to) for its channel."""
    distro = machine_factory.image.distro
    config = distro.update_ignition(omaha.guest_url, machine_factory.image.channel)
    machines: list[GuestMachine] = machine_factory.create(1, ignition=config)
    # The guest reaches the server at its own 127.0.0.1:8470, through the harness's SSH connection; where it
    # can reach the host directly, it downloads payloads that way (no cipher pass over every byte in the guest).
    machines[0].forward_host_service(omaha.port, omaha.guest_port)
    omaha.serve_payloads_at(machine_factory.run.platform_cls.boot_host_address)
    return machines[0]


@pytest.fixture(scope="module")
def module_omaha(tmp_path_factory: pytest.TempPathFactory) -> Generator[UpdateServer, None, None]:
    """One Omaha server for a module's tests (each channel publishes on its own track)."""
    workdir = tmp_path_factory.mktemp("module-omaha")
    with UpdateServer(workdir) as server:
        yield server
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def module_update_machine(module_machine: GuestMachine, module_omaha: UpdateServer) -> GuestMachine:
    """The module's shared machine, its updater pointed at `module_omaha` for its channel."""
    point_at(module_machine, module_omaha)
    return module_machine


__all__ = [
    "BadPayload",
    "UpdateServer",
    "make_ext4",
    "module_omaha",
    "module_update_machine",
    "omaha",
    "update_machine",
]
