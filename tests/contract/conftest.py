"""One target per platform for the contract test: the platform made as a run makes it, how to boot a machine
on it and reach its SSH, and what of the run is left on the platform.

QEMU and libvirt boot the default image for real. AWS and Azure run against their local fakes; their
machines' SSH is pointed at a real sshd in a network namespace of the test's (`fake_guest`).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.acceleration import Timeouts, detect
from harness.distros import Distro, get_distro
from harness.errors import PlatformError
from harness.ignition import merge, validate
from harness.image_choice import resolve_image
from harness.machine import GuestMachine
from harness.provisioning import base_ignition, private_net_ignition
from harness.ssh import KeyPair, generate_keypair
from platforms.base import FirstBootConfig, MachineSpec, Platform, PlatformContext, PrivateNet
from tests.aws.conftest import aws, aws_options, moto_server  # noqa: F401  (fixtures)
from tests.aws.conftest import make_platform as aws_platform_factory  # noqa: F401
from tests.azure.conftest import azure_options, fake_arm, fake_arm_server  # noqa: F401  (fixtures)
from tests.azure.conftest import make_platform as azure_platform_factory  # noqa: F401
from tests.contract.fake_guest import FakeGuest, fake_guest

try:
    import libvirt  # noqa: F401
except ImportError:  # the libvirt target then fails on its missing fixture, naming it
    pass
else:
    from tests.libvirt.conftest import hypervisors, vm_budget  # noqa: F401  (fixtures)
from tests.integration.helpers import leftover_disks, qemu_processes_under

RUN_ID = "20240101-000000-abcd"


@dataclass
class ContractTarget:
    """A platform under the contract, and what the test needs to know of it."""

    platform: Platform
    distro: Distro
    keypair: KeyPair
    timeouts: Timeouts
    workdir: Path
    image: Path = Path()
    channel: str = "stable"
    ssh_user: str = "core"
    fake_guest: FakeGuest | None = None
    """Clouds: where their machines' SSH really goes."""
    leftovers: Callable[[], list[str]] = list
    """What of the run is still on the platform (processes, disks, domains, instances, groups)."""
    expected_private_address: Callable[[Any], str | None] = field(default=lambda vm: None)
    """Clouds: the address the fake gave the machine (a local platform's shows in the guest instead)."""
    break_cleanup: Callable[[pytest.MonkeyPatch], str] | None = None
    """Make the platform's next cleanup fail; returns a pattern of the error's naming what is left. None:
    destroying the machine fails."""

    def fail_next_cleanup(self, monkeypatch: pytest.MonkeyPatch, machine: str) -> str:
        if self.break_cleanup is not None:
            return self.break_cleanup(monkeypatch)

        def broken(vm: object) -> None:
            raise PlatformError("the hypervisor did not answer")

        monkeypatch.setattr(self.platform, "_destroy", broken)
        return rf"{machine}: the hypervisor did not answer.*railyard gc"

    def spec(self, name: str, net: PrivateNet | None) -> MachineSpec:
        config = base_ignition(self.distro, self.keypair.public_line)
        if net is not None:
            config = merge(config, private_net_ignition(net, name, self.distro.ignition_version))
        config = validate(config, max_version=self.distro.ignition_version)
        return MachineSpec(
            name=name,
            image=self.image,
            ignition=FirstBootConfig.render(config),
            ignition_fw_cfg=self.distro.ignition_fw_cfg,
            workdir=self.workdir / name,
            ssh_user=self.ssh_user,
            memory_mib=1024,
            cpus=2,
            private_net=net,
            channel=self.channel,
            test_id=f"tests/contract/test_platform_contract.py::{name}",
        )

    def guest(self, vm: Any) -> GuestMachine:
        if self.fake_guest is not None:
            vm.host = self.fake_guest.address  # the cloud's address leads nowhere: SSH goes to the fake guest
        return GuestMachine(
            vm, pkey=self.keypair.pkey, timeouts=self.timeouts, distro=self.distro, channel=""
        )


def _local_context(tmp_path: Path, options: dict[str, Any]) -> PlatformContext:
    accel = detect("auto")
    return PlatformContext(RUN_ID, tmp_path, accel, Timeouts.for_acceleration(accel), options)


def _options(platform_cls: type[Platform], **given: Any) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    platform_cls.add_options(parser.add_argument_group("railyard"))
    return {**vars(parser.parse_args([])), **given}


def _qemu(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractTarget]:
    from platforms.qemu import QemuPlatform

    image = resolve_image("stable", explicit=None, metadata=None, distro=None, local=True)
    ctx = _local_context(tmp_path, _options(QemuPlatform))
    platform = QemuPlatform(ctx)
    platform.validate()

    def leftovers() -> list[str]:
        return qemu_processes_under(tmp_path) + [str(p) for p in leftover_disks(tmp_path)]

    with contextlib.closing(platform):
        yield ContractTarget(platform, image.distro, generate_keypair(tmp_path / "key"), ctx.timeouts,
                             tmp_path / "machines", image.path, leftovers=leftovers)  # fmt: skip


def _libvirt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractTarget]:
    from platforms.libvirt import LibvirtPlatform
    from tests.libvirt.conftest import pool_volumes, railyard_domains

    uri = request.getfixturevalue("hypervisors").system
    image = resolve_image("stable", explicit=None, metadata=None, distro=None, local=True)
    ctx = _local_context(tmp_path, _options(LibvirtPlatform, libvirt_uri=[uri]))
    platform = LibvirtPlatform(ctx)
    platform.validate()

    def leftovers() -> list[str]:
        domains = [name for name, owner in railyard_domains(uri) if owner.run_id == RUN_ID]  # type: ignore[attr-defined]
        volumes = [v for v in pool_volumes(uri) if RUN_ID in v]
        return domains + volumes + qemu_processes_under(tmp_path)

    with request.getfixturevalue("vm_budget")(1), contextlib.closing(platform):
        yield ContractTarget(platform, image.distro, generate_keypair(tmp_path / "key"), ctx.timeouts,
                             tmp_path / "machines", image.path, leftovers=leftovers)  # fmt: skip


def _aws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractTarget]:
    aws_fake = request.getfixturevalue("aws")
    aws_fake.register_ami("railyard-stable-1.0.0")
    platform = request.getfixturevalue("aws_platform_factory")()
    keypair = generate_keypair(tmp_path / "key")

    def leftovers() -> list[str]:
        return (
            [i["InstanceId"] for i in aws_fake.live_instances()]
            + [g["GroupId"] for g in aws_fake.our_groups()]
            + [k["KeyName"] for k in aws_fake.key_pairs()]
        )

    def private_address(vm: Any) -> str | None:
        [instance] = [i for i in aws_fake.live_instances() if i["InstanceId"] == vm.instance_id]
        return str(instance["PrivateIpAddress"])

    with fake_guest(tmp_path / "fake-guest", keypair.public_line) as guest:
        yield ContractTarget(platform, get_distro("railyard"), keypair, platform.ctx.timeouts,
                             tmp_path / "machines", ssh_user=guest.user, fake_guest=guest, leftovers=leftovers,
                             expected_private_address=private_address)  # fmt: skip


def _azure(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractTarget]:
    arm = request.getfixturevalue("fake_arm")
    platform = request.getfixturevalue("azure_platform_factory")()
    keypair = generate_keypair(tmp_path / "key")

    def leftovers() -> list[str]:
        return [str(r["name"]) for r in arm.all_resources()] + list(arm.state.groups)

    def break_cleanup(monkeypatch: pytest.MonkeyPatch) -> str:
        from azure.core.exceptions import HttpResponseError

        def refuse(*args: object, **kwargs: object) -> None:
            raise HttpResponseError(message="the service did not answer")

        groups = platform._group.clients.resources.resource_groups
        monkeypatch.setattr(groups, "begin_delete", refuse)
        return rf"resource group {platform.group_name}.*the service did not answer"

    def private_address(vm: Any) -> str | None:
        [nic] = [r for r in arm.all_resources() if r["name"] == vm.names.nic]
        return str(nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"])

    with fake_guest(tmp_path / "fake-guest", keypair.public_line) as guest:
        yield ContractTarget(platform, get_distro("railyard"), keypair, platform.ctx.timeouts,
                             tmp_path / "machines", ssh_user=guest.user, fake_guest=guest, leftovers=leftovers,
                             expected_private_address=private_address, break_cleanup=break_cleanup)  # fmt: skip


TARGETS = {"qemu": _qemu, "libvirt": _libvirt, "aws": _aws, "azure": _azure}


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractTarget]:
    yield from TARGETS[request.param](request, tmp_path)
