"""A platform's cleanup tries every machine, then raises an error naming what it may have left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.acceleration import Acceleration, Timeouts
from harness.errors import PlatformError
from platforms.base import FirstBootConfig, Machine, MachineSpec, Platform, PlatformContext, SSHEndpoint

TCG = Acceleration("tcg", "test")


class FakeMachine(Machine):
    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        return SSHEndpoint("127.0.0.1", 22, "core")

    def is_running(self) -> bool:
        return True

    def reset(self) -> None: ...

    def poweroff(self, timeout: float) -> None: ...

    def kill(self) -> None: ...


class FakePlatform(Platform):
    name = "fake"
    machine_capabilities = frozenset({"hard-reset"})

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.destroyed: list[str] = []

    def _boot(self, spec: MachineSpec) -> Machine:
        return FakeMachine(spec)

    def _destroy(self, machine: Machine) -> None:
        if machine.name == "stuck":
            raise PlatformError("the hypervisor did not answer; its disk is still there")
        self.destroyed.append(machine.name)


def spec(tmp_path: Path, name: str) -> MachineSpec:
    return MachineSpec(
        name=name,
        image=tmp_path / "i",
        ignition=FirstBootConfig("{}", "3.3.0"),
        ignition_fw_cfg="x",
        workdir=tmp_path,
    )


def test_close_destroys_the_others_and_names_what_is_left(tmp_path):
    platform = FakePlatform(PlatformContext("run", tmp_path, TCG, Timeouts.for_acceleration(TCG), {}))
    for name in ("a", "stuck", "b"):
        machine = platform.boot(spec(tmp_path, name))
        assert machine.capabilities == {"hard-reset"}  # what the platform declares, given at boot
    with pytest.raises(PlatformError, match=r"fake: cleanup failed .*stuck: the hypervisor did not answer"):
        platform.close()
    assert sorted(platform.destroyed) == ["a", "b"]
    assert platform.machines == []
    platform.close()  # nothing left to try: no error the second time
