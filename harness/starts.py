"""How one machine of a test comes up: restored from a booted checkpoint, restored from a first-boot
checkpoint, or booted cold; and the checkpoints it saves for the machines after it (see harness.warm).

`--warm` decides what may be used:

- `booted`: a machine whose key (platform signature + Ignition config) has a booted checkpoint is restored from
  it; else it boots cold and, once up and settled, is saved as that checkpoint when its key came up before
  (in this run or an earlier one: a checkpoint is only worth its disk space for a config that comes back).
- `firstboot`: every machine of an image that can (the default image) is restored from the image's first-boot
  checkpoint, taken in the initramfs before Ignition reads its config: Ignition, the first-boot machine id and
  the host keys then come from the machine's own config and its own reseeded RNG. The first machine of an
  image makes it: a machine that boots to that point, is saved, and is thrown away.
- `all` (the default): booted checkpoints where one exists; else a first-boot restore (or a cold boot), saved
  as the booted checkpoint of its key for the next machine with the same config (in this run or a later one).
- `off`: every machine boots cold.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from harness.acceleration import Timeouts
from harness.errors import BootError, CheckpointError, RailyardError, WaitTimeout
from harness.machine import GuestMachine
from harness.progress import heartbeat, last_line
from harness.retry import poll
from harness.warm import (
    START_COLD,
    START_FIRSTBOOT,
    START_RESTORED,
    CheckpointStore,
    StartRecord,
    checkpoint_key,
    image_about,
)
from platforms.base import FIRSTBOOT_WAITING, Machine, MachineSpec, Platform

log = logging.getLogger(__name__)

FIRSTBOOT_KEY = "first-boot checkpoint: before Ignition reads its config"
"""Stands for the Ignition config in the key of a first-boot checkpoint (the config is read after it)."""

# Run in a machine just before it is saved as a booted checkpoint: sudo, date and journalctl, what the harness
# runs first in every clone (its clock, then the journal check after each test). A clone's first sudo took
# 0.6 s reading them from the disk, against 0.15 s from the saved page cache.
PREWARM = "sudo -n date >/dev/null && sudo -n journalctl --no-pager -n 0 --show-cursor >/dev/null"


@dataclasses.dataclass(frozen=True)
class StartPolicy:
    """What one machine may use: which checkpoints, and how it must come up."""

    store: CheckpointStore | None
    """None: boot cold (`--warm=off`, a platform without checkpoints, a machine exempt from the pool)."""
    booted: bool
    firstboot: bool
    ssh: bool = True
    """Whether the harness logs in (not with `no_ssh_key`)."""
    settle: bool = True


class MachineStarter:
    """Brings up machines for a factory. `adopt(vm)` wraps a platform machine as the factory's guest."""

    def __init__(
        self,
        platform: Platform,
        timeouts: Timeouts,
        adopt: Callable[[Machine], GuestMachine],
        skip_console: Callable[[GuestMachine], None],
    ) -> None:
        self.platform = platform
        self.timeouts = timeouts
        self.adopt = adopt
        self.skip_console = skip_console
        """Marks a restored machine's console, up to now, as checked (it starts with the checkpoint's boot)."""

    def start(self, spec: MachineSpec, policy: StartPolicy) -> GuestMachine:
        store = policy.store
        notes: list[str] = []
        key = None
        if store is not None and (policy.booted or policy.firstboot):
            key = checkpoint_key(self.platform.checkpoint_signature(spec), spec.ignition.text)
        if store is not None and key is not None and policy.booted:
            guest = self._restore_booted(spec, store, key, notes)
            if guest is not None:
                return guest
        guest = None
        if store is not None and policy.firstboot:
            guest = self._restore_firstboot(spec, store, policy, notes)
        if guest is None:
            guest = self._cold(spec, policy, notes)
        savable = store is not None and key is not None and policy.booted and policy.ssh and policy.settle
        if savable and store is not None and key is not None and store.wanted(key):
            self._save_booted(guest, store, key, notes)
        if notes and guest.start is not None:
            guest.start = dataclasses.replace(guest.start, note="; ".join(notes))
        log.info("%s: ready (%s)", spec.name, guest.start.describe() if guest.start else "up")
        return guest

    # -- the three ways up ---------------------------------------------------------------------------

    def _restore_booted(
        self, spec: MachineSpec, store: CheckpointStore, key: str, notes: list[str]
    ) -> GuestMachine | None:
        found = store.find(key)
        if found is None:
            return None
        started = time.monotonic()
        guest = self._restore(spec, store, key, found, notes)
        if guest is None:
            return None
        self._up(guest, settle=False, booting=False)
        guest.sync_clock()
        guest.start = StartRecord(START_RESTORED, time.monotonic() - started, checkpoint=found.name)
        log.info("%s: ready (%s)", spec.name, guest.start.describe())
        return guest

    def _restore_firstboot(
        self, spec: MachineSpec, store: CheckpointStore, policy: StartPolicy, notes: list[str]
    ) -> GuestMachine | None:
        key = checkpoint_key(self.platform.checkpoint_signature(spec), FIRSTBOOT_KEY)
        found = store.find(key)
        if found is None:
            made = time.monotonic()
            with store.making(
                key, {"kind": "firstboot", "made for": spec.name, **image_about(spec.image)}
            ) as draft:
                if draft is None:
                    return None  # another process is making it: boot cold meanwhile
                if not self._make_firstboot(spec, draft.directory, notes):
                    draft.abandoned = True
                    return None
            found = store.find(key)
            if found is None:
                return None
            notes.append(f"first-boot checkpoint made in {time.monotonic() - made:.1f} s")
        started = time.monotonic()
        guest = self._restore(spec, store, key, found, notes)
        if guest is None:
            return None
        if policy.ssh:
            self._up(guest, settle=policy.settle, booting=True)
        guest.start = StartRecord(START_FIRSTBOOT, time.monotonic() - started, checkpoint=found.name)
        return guest

    def _cold(self, spec: MachineSpec, policy: StartPolicy, notes: list[str]) -> GuestMachine:
        started = time.monotonic()
        guest = self.adopt(self.platform.boot(spec))
        if policy.ssh:
            self._up(guest, settle=policy.settle, booting=True)
        guest.start = StartRecord(START_COLD, time.monotonic() - started)
        return guest

    # -- pieces --------------------------------------------------------------------------------------

    def _restore(
        self, spec: MachineSpec, store: CheckpointStore, key: str, found: Path, notes: list[str]
    ) -> GuestMachine | None:
        """A machine restored from `found`, or None (and the checkpoint dropped) when it cannot be."""
        try:
            vm = self.platform.restore(spec, found)
        except CheckpointError as exc:
            store.drop(key, str(exc))
            notes.append(f"checkpoint dropped: {exc}")
            return None
        guest = self.adopt(vm)
        self.skip_console(guest)
        return guest

    def _up(self, guest: GuestMachine, settle: bool, booting: bool) -> None:
        try:
            with heartbeat(f"{guest.name}: starting", lambda: "console: " + last_line(guest.console_text())):
                guest.wait_for_ssh(booting=booting)
                if settle:
                    guest.settle()
        except RailyardError as exc:
            tail = "\n".join(guest.console_text().splitlines()[-25:])
            raise BootError(
                f"{guest.name} did not come up: {exc}\n--- last console lines ---\n{tail}"
            ) from exc

    def _save_booted(self, guest: GuestMachine, store: CheckpointStore, key: str, notes: list[str]) -> None:
        """Save `guest` as the booted checkpoint of `key`, unless another process has or is making it."""
        about = {"kind": "booted", "made by": guest.name, **image_about(guest.vm.spec.image)}
        with store.making(key, about) as draft:
            if draft is None:
                return
            # What every clone runs first (the clock, the journal check after each test) is read from the
            # disk once here and saved in the checkpoint's page cache, not once per clone.
            guest.execute(PREWARM)
            guest.close()  # nobody may be connected while it is saved
            started = time.monotonic()
            try:
                self.platform.save_checkpoint(guest.vm, draft.directory)
            except RailyardError as exc:
                draft.abandoned = True
                notes.append(f"its checkpoint could not be saved: {exc}")
                log.warning("%s: its checkpoint could not be saved: %s", guest.name, exc)
            else:
                notes.append(f"saved as checkpoint {key} in {time.monotonic() - started:.1f} s")
        guest.sync_clock()  # it stood still while it was saved

    def _make_firstboot(self, spec: MachineSpec, directory: Path, notes: list[str]) -> bool:
        """Make the first-boot checkpoint of `spec`'s image into `directory`. False (with a note) when the
        image never reaches that point."""
        try:
            make_firstboot_checkpoint(self.platform, spec, directory, self.timeouts.boot)
        except (BootError, WaitTimeout, RailyardError) as exc:
            notes.append(f"no first-boot checkpoint: {exc}")
            log.warning("%s: no first-boot checkpoint: %s", spec.name, exc)
            return False
        return True


def make_firstboot_checkpoint(platform: Platform, spec: MachineSpec, directory: Path, timeout: float) -> None:
    """Boot a machine of `spec`'s image to the point before Ignition, save it into `directory`, throw it away.
    Raises BootError, WaitTimeout or RailyardError when the image never reaches that point in `timeout`."""
    maker_spec = dataclasses.replace(
        spec,
        name=f"{spec.name}-firstboot",
        workdir=spec.workdir.parent / f"{spec.workdir.name}.firstboot",
        checkpoint_stage="firstboot",
    )
    maker = platform.boot(maker_spec)
    try:

        def waiting() -> bool | None:
            if not maker.is_running():
                raise BootError(f"{maker.name} stopped before the first-boot checkpoint")
            try:
                return FIRSTBOOT_WAITING in maker.console_path.read_text(errors="replace") or None
            except FileNotFoundError:
                return None

        poll(waiting, timeout=timeout, what=f"{maker.name} to wait for its checkpoint")
        platform.save_checkpoint(maker, directory)
    finally:
        platform.destroy(maker)
