"""The platform contract, the same on every platform: boot -> SSH -> each capability the platform declares ->
destroy -> close, which leaves nothing of the run behind; a cleanup that fails is an error naming the machine.

QEMU and libvirt boot the default image for real; AWS and Azure talk HTTP to their local fakes, and their
machines' SSH reaches a real sshd in a network namespace (see conftest.py).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from harness.errors import PlatformError
from harness.machine import GuestMachine
from platforms.base import (
    CAP_BOOT_HOST_SERVICES,
    CAP_HARD_RESET,
    CAP_HOST_SERVICES,
    CAP_POWER_CYCLE,
    CAP_PRIVATE_NETWORK,
    CAP_SNAPSHOT,
    CAPABILITIES,
)
from tests.contract.conftest import ContractTarget

GREETING = b"hello from the host\n"
# Guests differ in what they carry; both the default image and the fake guest have python3.
FETCH = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/').read().decode(), end='')\""


@contextmanager
def host_service() -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1 answering GREETING; yields its port."""

    class Greeter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(GREETING)))
            self.end_headers()
            self.wfile.write(GREETING)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Greeter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def check_host_services(target: ContractTarget, guest: GuestMachine) -> None:
    with host_service() as host_port:
        port = guest.forward_host_service(host_port, guest_port=host_port + 1 if host_port < 65535 else 1024)
        assert port != host_port
        # Not reachable without the forward: the guest's 127.0.0.1 is its own.
        guest.fail(FETCH.format(port=host_port))
        assert guest.succeed(FETCH.format(port=port)) == GREETING.decode()


def check_boot_host_services(target: ContractTarget, guest: GuestMachine) -> None:
    address = target.platform.boot_host_address
    assert address, "a platform with boot-host-services says where its guests reach the host"
    with host_service() as host_port:
        fetch = FETCH.format(port=host_port).replace("127.0.0.1", address)
        assert guest.succeed(fetch) == GREETING.decode()


def check_private_network(target: ContractTarget, guest: GuestMachine) -> None:
    address = guest.private_address
    assert address, "a machine on a private network has a private address"
    expected = target.expected_private_address(guest.vm)
    if expected is not None:  # a cloud: the address the cloud gave the machine
        assert address == expected
    else:  # a local segment: the guest holds the address on its private NIC
        guest.wait_until_succeeds(f"ip -brief address | grep -w {address}")


def check_hard_reset(target: ContractTarget, guest: GuestMachine) -> None:
    before = guest.boot_id()
    guest.hard_reset()
    assert guest.boot_id() != before


def check_power_cycle(target: ContractTarget, guest: GuestMachine) -> None:
    before = guest.boot_id()
    guest.power_cycle()
    assert guest.boot_id() != before


def check_snapshot(target: ContractTarget, guest: GuestMachine) -> None:
    guest.succeed("rm -f /var/tmp/after-snapshot")
    guest.vm.save_snapshot("contract")
    guest.succeed("touch /var/tmp/after-snapshot")
    guest.close()
    guest.vm.load_snapshot("contract")
    guest.fail("test -e /var/tmp/after-snapshot")


CHECKS: dict[str, Callable[[ContractTarget, GuestMachine], None]] = {
    CAP_HOST_SERVICES: check_host_services,
    CAP_BOOT_HOST_SERVICES: check_boot_host_services,
    CAP_PRIVATE_NETWORK: check_private_network,
    CAP_SNAPSHOT: check_snapshot,
    CAP_HARD_RESET: check_hard_reset,
    CAP_POWER_CYCLE: check_power_cycle,
}


def test_every_capability_has_a_contract_check() -> None:
    assert set(CHECKS) == CAPABILITIES


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("qemu", marks=pytest.mark.boots),
        pytest.param("libvirt", marks=pytest.mark.boots),
        "aws",
        "azure",
    ],
    indirect=True,
)
def test_platform_contract(target: ContractTarget) -> None:
    platform = target.platform
    capabilities = platform.machine_capabilities
    assert capabilities <= CAPABILITIES
    network = platform.private_network() if CAP_PRIVATE_NETWORK in capabilities else None
    vm = platform.boot(target.spec("contract-1", network.join("contract-1") if network else None))
    assert vm.capabilities == capabilities
    guest = target.guest(vm)
    try:
        guest.wait_for_ssh()
        assert guest.succeed("echo contract") == "contract\n"
        # In a fixed order, each leaving the machine answering SSH. `hard-reset` comes first, seconds after the
        # first boot: what the first boot wrote (sshd's host key) must already be on the disk.
        for capability in sorted(capabilities):
            CHECKS[capability](target, guest)
        guest.succeed("true")
    finally:
        guest.close()

    # A cleanup that fails is an error that names what is left, not a log line.
    with pytest.MonkeyPatch.context() as patch:
        names_what_is_left = target.fail_next_cleanup(patch, vm.name)
        with pytest.raises(PlatformError, match=names_what_is_left):
            platform.close()

    platform.destroy(vm)
    platform.destroy(vm)  # idempotent
    if network is not None:
        network.close()
    platform.close()
    assert target.leftovers() == []
