"""Booting the machines of a test: admission, boot, SSH, settle; and their end (artifacts, destroy)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from harness.admission import BootSlot
from harness.consolecheck import ConsoleMatch
from harness.errors import ConfigError, RailyardError
from harness.ignition import merge
from harness.image_choice import ImageChoice
from harness.machine import GuestMachine
from harness.provisioning import base_ignition, compose_ignition, private_net_ignition
from harness.records import MachineRecord
from harness.run import Run
from harness.starts import MachineStarter, StartPolicy
from harness.targets import Requirements
from images.metadata import FEATURE_FIRSTBOOT_CHECKPOINT, FEATURE_SSH_READY_LINE
from platforms.base import (
    ExtraNic,
    FirstBootConfig,
    Machine,
    MachineSpec,
    NicSegment,
    PrivateNet,
    PrivateNetwork,
)

log = logging.getLogger(__name__)

WARM_EXEMPT = frozenset({"cold_boot", "no_ssh_key", "no_settle"})
"""Flags of tests whose machines always boot cold (see harness.warm)."""


def cold_boot_reason(flags: set[str] | frozenset[str]) -> str | None:
    """Why a machine must boot cold rather than come from a checkpoint, or None.

    Shape, firmware, memory, kernel arguments, extra disks (their sizes and serials) and NICs (their MACs)
    are part of a checkpoint's signature, and the Ignition config is part of its key (which holds the
    addresses of a private network). A booted checkpoint holds its machine's extra disks as they were when
    it was saved; each clone gets overlays of them, so it finds what that boot wrote, as a machine booted
    with the same config would, and nothing any other clone wrote. The machines that share a segment (a
    private network, extra NICs) never share a key: their MACs and addresses differ, so each comes from a
    checkpoint of its own, with the machine id and host keys of its own first boot; and a clone joins the
    segments of its own test, never one where the machine it was saved from is. A first-boot checkpoint is
    taken in the initramfs before Ignition. Only the flags keep a machine from them.
    """
    exempt = WARM_EXEMPT & flags
    if exempt:
        return f"flags {', '.join(sorted(exempt))}"
    return None


def safe_name(text: str, limit: int = 60) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return name[:limit] or "machine"


class MachineFactory:
    """Boots the machines of one test (or one module) and owns them until `finish`."""

    def __init__(
        self, run: Run, image: ImageChoice, req: Requirements, directory: Path, label: str, test_id: str = ""
    ) -> None:
        self.test_id = test_id
        self.run = run
        self.image = image
        self.req = req
        self.directory = directory
        self.label = safe_name(label, 40)
        self.machines: list[GuestMachine] = []
        self._records: dict[str, MachineRecord] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self._network: PrivateNetwork | None = None
        self._nic_segments: dict[int, NicSegment] = {}  # extra NIC number -> its segment
        self._life_slots: list[BootSlot] = []  # held until `finish` (under TCG)

    # -- Ignition -------------------------------------------------------------------------------------

    def base_ignition(self) -> dict[str, Any]:
        """The distro's user with the run's SSH key (none with `no_ssh_key`), updates off."""
        key = None if "no_ssh_key" in self.req.flags else self.run.keypair.public_line
        return base_ignition(self.image.distro, key)

    def ignition_for(
        self, extra: Sequence[Mapping[str, Any]] = (), butane: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The harness's base config merged with the test's markers and `extra`; validated."""
        return compose_ignition(
            self.base_ignition(),
            [*self.req.ignition, *extra],
            [*self.req.butane, *butane],
            max_version=self.image.distro.ignition_version,
        )

    # -- booting --------------------------------------------------------------------------------------

    def create(
        self,
        count: int = 1,
        *,
        ignition: Mapping[str, Any] | None = None,
        butane: str | None = None,
        name: str | None = None,
        private_network: bool = False,
    ) -> list[GuestMachine]:
        """Boot `count` machines at once (admitted by host cores) and wait until each is up and settled.

        With `private_network`, the machines join the platform's private network shared by every machine of
        this factory (a segment of their own on QEMU and libvirt, the run's subnet on a cloud), and
        `machine.private_address` is where the others reach each.
        """
        config = self.ignition_for([ignition] if ignition else (), [butane] if butane else ())
        if count > self.run.platform_cls.max_cluster_size:
            raise ConfigError(
                f"{count} machines asked for, but platform {self.run.platform_name} allows at most "
                f"{self.run.platform_cls.max_cluster_size} per test"
            )
        names = [self._next_name(name) for _ in range(count)]
        nets = [self._join_private_network(n) if private_network else None for n in names]
        nics = [self._attach_extra_nics(n) for n in names]
        waited = 0.0
        if self.run.slots_for_life:
            # All machines of one request are admitted together; they hold their slots until `finish`.
            who = names[0] if count == 1 else f"{names[0]}..{names[-1]}"
            slot = self.run.boot_slots.slot(
                who, timeout=self.run.slot_timeout, count=count, memory_mib=self.memory_mib
            ).acquire()
            waited = slot.waited
            with self._lock:
                self._life_slots.append(slot)
        if count == 1:
            return [self._boot_one(names[0], config, nets[0], nics[0], waited)]
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [
                pool.submit(self._boot_one, n, config, net, nic, waited)
                for n, net, nic in zip(names, nets, nics, strict=True)
            ]
            results: list[GuestMachine] = []
            errors: list[BaseException] = []
            for fut in futures:
                try:
                    results.append(fut.result())
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
        return results

    def _next_name(self, name: str | None) -> str:
        with self._lock:
            self._counter += 1
            return safe_name(name) if name else f"{self.label}-{self._counter}"

    def _join_private_network(self, name: str) -> PrivateNet | None:
        with self._lock:
            if self._network is None:
                self._network = self.run.platform.private_network()
            network = self._network
        return network.join(name)

    @property
    def memory_mib(self) -> int:
        """Guest memory of this factory's machines: the test's `memory` marker, else the run's."""
        return self.run.memory_for(self.req.machine.memory_mib)

    def _attach_extra_nics(self, name: str) -> tuple[ExtraNic, ...]:
        """Machine `name`'s extra NICs (`@pytest.mark.nics`): number k on the k-th segment of this factory."""
        nics: list[ExtraNic] = []
        for number in range(1, self.req.machine.nics + 1):
            with self._lock:
                segment = self._nic_segments.get(number)
                if segment is None:
                    segment = self._nic_segments[number] = self.run.platform.nic_segment(number)
            nics.append(segment.attach(name))
        return tuple(nics)

    def _boot_one(
        self,
        name: str,
        config: dict[str, Any],
        net: PrivateNet | None = None,
        nics: tuple[ExtraNic, ...] = (),
        slot_wait: float = 0.0,
    ) -> GuestMachine:
        """Boot (or restore) one machine; `slot_wait` is how long its request waited for a slot it holds for
        life, and goes into its start record with any wait for a boot slot."""
        workdir = self.directory / name
        workdir.mkdir(parents=True, exist_ok=True)
        if net is not None:
            config = merge(config, private_net_ignition(net, name, self.image.distro.ignition_version))
        rendered = FirstBootConfig.render(config)
        (workdir / "ignition.json").write_text(rendered.text + "\n")
        if self.image.metadata is not None:  # what the image was built from (kernel, systemd, Ignition...)
            (workdir / "image.json").write_text(json.dumps(self.image.metadata.to_dict(), indent=2) + "\n")
        distro = self.image.distro
        wanted = self.req.machine
        spec = MachineSpec(
            name=name,
            image=self.image.path,
            ignition=rendered,
            ignition_fw_cfg=distro.ignition_fw_cfg,
            workdir=workdir,
            ssh_user=distro.default_user,
            memory_mib=self.memory_mib,
            cpus=self.run.machine_cpus,
            firmware=self.run.machine_firmware(self.image, wanted.firmware),
            private_net=net,
            channel=self.image.channel,
            test_id=self.test_id,
            extra_disks_mib=wanted.disks_mib,
            extra_nics=nics,
            kernel_args=wanted.kernel_args,
        )
        with self._boot_gate(name) as gate:
            guest = self._start(spec)
        if isinstance(gate, BootSlot):
            slot_wait += gate.waited
        if guest.start is not None and slot_wait:
            guest.start = dataclasses.replace(guest.start, slot_wait=slot_wait)
        return guest

    @property
    def _features(self) -> tuple[str, ...]:
        """What the image declares it can do (images.metadata), nothing for an image without metadata."""
        return self.image.metadata.features if self.image.metadata is not None else ()

    def _start(self, spec: MachineSpec) -> GuestMachine:
        """Restored from a checkpoint where the warm pool has one (harness.starts), else booted cold."""
        flags = self.req.flags
        run = self.run
        features = self._features
        pooled = cold_boot_reason(flags) is None
        booted = pooled and run.warm_mode in ("booted", "all")
        firstboot = (
            pooled and run.warm_mode in ("firstboot", "all") and FEATURE_FIRSTBOOT_CHECKPOINT in features
        )
        policy = StartPolicy(
            store=run.checkpoints if booted or firstboot else None,
            booted=booted,
            firstboot=firstboot,
            ssh="no_ssh_key" not in flags,
            settle="no_settle" not in flags,
        )
        starter = MachineStarter(run.platform, run.timeouts, self._guest, self._skip_console)
        return starter.start(spec, policy)

    def _skip_console(self, guest: GuestMachine) -> None:
        self._records[guest.name].console_offset = len(guest.console_text())

    def _guest(self, vm: Machine) -> GuestMachine:
        name = vm.name
        guest = GuestMachine(
            vm,
            pkey=self.run.keypair.pkey,
            timeouts=self.run.timeouts,
            distro=self.image.distro,
            channel=self.image.channel,
            boot_gate=lambda: self._boot_gate(name),
            ready_line=FEATURE_SSH_READY_LINE in self._features,
        )
        with self._lock:
            self.machines.append(guest)
            self._records[name] = MachineRecord(guest, ssh="no_ssh_key" not in self.req.flags)
        return guest

    def _boot_gate(self, name: str) -> AbstractContextManager[object]:
        """Held while a machine boots: a slot of its own, unless its slot is held for its whole life."""
        if self.run.slots_for_life:
            return nullcontext()
        return self.run.boot_slots.slot(name, timeout=self.run.slot_timeout, memory_mib=self.memory_mib)

    # -- after the test -------------------------------------------------------------------------------

    def check(self, ignore: Sequence[str] = ()) -> list[ConsoleMatch]:
        """Scan what each machine printed since the last check, for panics, emergency shells, failed units."""
        return [match for guest in list(self.machines) for match in self._records[guest.name].check(ignore)]

    def finish(self, failed: bool) -> list[str]:
        """Write artifacts, then destroy the machines (or keep them on failure if asked). Returns notes."""
        try:
            return self._finish(failed)
        finally:
            with self._lock:
                slots, self._life_slots = self._life_slots, []
            for slot in slots:
                slot.release()

    def _finish(self, failed: bool) -> list[str]:
        notes: list[str] = []
        for guest in list(self.machines):
            keep = failed and self.run.keep_on_failure
            notes += self._records[guest.name].save(failed, keep)
            guest.close()
            if keep:
                self.run.platform.release(guest.vm)
                self.run.kept_machines.append(guest.name)
                notes.append(
                    f"kept {guest.name} running: {guest.vm.access_hint()} -i {self.run.keypair.private_path}"
                )
                continue
            try:
                self.run.platform.destroy(guest.vm)
            except RailyardError as exc:
                notes.append(f"cleanup of {guest.name} failed: {exc}")
        self.machines.clear()
        with self._lock:
            network, self._network = self._network, None
            segments, self._nic_segments = list(self._nic_segments.values()), {}
        if network is not None:
            network.close()
        for segment in segments:
            segment.close()
        if not failed and not self.run.keep_artifacts:
            shutil.rmtree(self.directory, ignore_errors=True)
        return notes
