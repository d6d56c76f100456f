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
from harness.omaha_protocol import (
    EVENT_DOWNLOAD_FINISHED,
    EVENT_DOWNLOAD_STARTED,
    EVENT_UPDATE_COMPLETE,
    RESULT_SUCCESS,
    RESULT_SUCCESS_REBOOT,
)
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


# How long the agent may take to report after a boot (it waits for boot-complete.target first).
REPORT_TIMEOUT = 300.0


def events_of(omaha: UpdateServer, machine: GuestMachine, after: int = 0) -> list[tuple[Any, Any, Any]]:
    """The (event type, result, error code) of what `machine` reported to `omaha` since event `after`."""
    return [(e.event_type, e.event_result, e.error_code) for e in omaha.machine_events(machine, after)]


def update_and_reboot(machine: GuestMachine, omaha: UpdateServer, steps: int = 1) -> Any:
    """Publish the version `steps` after the image's, update to it, reboot; return what was published
    (asserting each step: the download and install events, the other slot booted, the new version reported)."""
    before = machine.os.booted_slot()
    previous = machine.os.version()
    published = omaha.publish_next(machine.channel, steps)
    start = len(omaha.events)
    machine.os.update()
    assert events_of(omaha, machine, start) == [
        (EVENT_DOWNLOAD_STARTED, RESULT_SUCCESS, None),
        (EVENT_DOWNLOAD_FINISHED, RESULT_SUCCESS, None),
        (EVENT_UPDATE_COMPLETE, RESULT_SUCCESS, None),
    ]
    machine.reboot()
    assert machine.os.booted_slot() != before
    assert machine.os.version() == published.version
    done = omaha.wait_for_machine_event(
        machine, EVENT_UPDATE_COMPLETE, RESULT_SUCCESS_REBOOT, timeout=REPORT_TIMEOUT, after=start
    )
    assert done.previous_version == previous
    assert done.version == published.version
    return published
