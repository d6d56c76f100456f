"""Fixtures for update tests: an Omaha server per test that publishes the default image's payloads (or,
for Flatcar, the `--update-payload` given), and machines pointed at it.

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
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.flatcar_payload import FlatcarPayload
from harness.ignition import merge
from harness.machine import GuestMachine
from harness.omaha_protocol import (
    EVENT_DOWNLOAD_FINISHED,
    EVENT_DOWNLOAD_STARTED,
    EVENT_UPDATE_COMPLETE,
    RESULT_SUCCESS,
    RESULT_SUCCESS_REBOOT,
)
from harness.update_server import BadPayload, UpdateServer, make_ext4, point_at

# -- options and fixtures ------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("railyard")
    group.addoption(
        "--update-payload",
        dest="update_payload",
        default=None,
        metavar="PATH",
        help="a Flatcar update payload (a release's flatcar_production_update.gz, or a build's "
        "flatcar_test_update.gz) that the update tests offer Flatcar machines",
    )
    group.addoption(
        "--update-payload-version",
        dest="update_payload_version",
        default=None,
        metavar="VERSION",
        help="the Flatcar version --update-payload installs (then checked after the update; else the "
        "payload is offered as 9999.9.9 and the tests check only that the version changed)",
    )
    group.addoption(
        "--update-payload-key",
        dest="update_payload_key",
        default=None,
        metavar="PEM",
        help="the public key that signs --update-payload, bind-mounted over the machine's "
        "/usr/share/update_engine/update-payload-key.pub.pem (default: the image's own key)",
    )


def flatcar_payload(config: pytest.Config) -> FlatcarPayload | None:
    """The `--update-payload` options (a ConfigError for a file that is not there)."""
    return FlatcarPayload.from_options(
        config.getoption("update_payload", None),
        config.getoption("update_payload_version", None),
        config.getoption("update_payload_key", None),
    )


def _server_for(request: pytest.FixtureRequest, target_fixture: str, workdir: Path) -> UpdateServer:
    """The default image's server, or for a Flatcar machine the server of `--update-payload`."""
    _, image = request.getfixturevalue(target_fixture)
    if not image.distro.given_payloads:
        return UpdateServer(workdir)
    try:
        payload = flatcar_payload(request.config)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from exc
    if payload is None:
        pytest.skip("a Flatcar update test needs --update-payload PATH (a Flatcar update payload)")
    return UpdateServer(workdir, flatcar=payload)


@pytest.fixture
def omaha(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[UpdateServer, None, None]:
    """An Omaha server for this test (started, stopped afterwards): `omaha.publish_next(channel)`."""
    workdir = tmp_path_factory.mktemp("omaha")
    with _server_for(request, "railyard_target", workdir) as server:
        yield server
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def update_machine(machine_factory: Any, omaha: UpdateServer) -> GuestMachine:
    """A fresh machine whose updater checks `omaha` (only when told to) for its channel; a Flatcar machine
    also trusts the key of `--update-payload-key`."""
    distro = machine_factory.image.distro
    config = distro.update_ignition(omaha.guest_url, machine_factory.image.channel)
    key_config = omaha.flatcar.ignition(distro.ignition_version) if omaha.flatcar is not None else None
    if key_config is not None:
        config = merge(config, key_config)
    machines: list[GuestMachine] = machine_factory.create(1, ignition=config)
    # The guest reaches the server at its own 127.0.0.1:8470, through the harness's SSH connection; where it
    # can reach the host directly, it downloads payloads that way (no cipher pass over every byte in the guest).
    machines[0].forward_host_service(omaha.port, omaha.guest_port)
    omaha.serve_payloads_at(machine_factory.run.platform_cls.boot_host_address)
    return machines[0]


@pytest.fixture(scope="module")
def module_omaha(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[UpdateServer, None, None]:
    """One Omaha server for a module's tests (each channel publishes on its own track)."""
    workdir = tmp_path_factory.mktemp("module-omaha")
    with _server_for(request, "railyard_module_target", workdir) as server:
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
    (asserting each step: the download and install events, the other slot booted, the new version reported;
    a Flatcar payload of unknown version: a version other than before)."""
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
    omaha.unpublish(omaha.app_id, machine.channel)  # the report's check gets no second offer of it
    assert machine.os.booted_slot() != before
    now = machine.os.version()
    assert now == published.version if omaha.knows_versions else now != previous
    machine.os.report_boot()
    done = omaha.wait_for_machine_event(
        machine, EVENT_UPDATE_COMPLETE, RESULT_SUCCESS_REBOOT, timeout=REPORT_TIMEOUT, after=start
    )
    assert done.previous_version == previous
    assert done.version == now
    return published
