"""Booting machines for a test: Ignition, admission, boot, SSH, settle; checks and artifacts afterwards."""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.admission import BootSlot
from harness.consolecheck import ConsoleMatch, scan
from harness.disk_journal import read_journal
from harness.errors import BootError, ConfigError, RailyardError
from harness.ignition import merge, translate_butane, validate
from harness.l2hub import L2Hub
from harness.machine import GuestMachine
from harness.run import ImageChoice, Run
from harness.targets import Requirements
from platforms.base import MachineSpec, PrivateNet

log = logging.getLogger(__name__)


PRIVATE_PREFIX = "10.0.3"


def private_net_ignition(net: PrivateNet, hostname: str, version: str) -> dict[str, Any]:
    """networkd configuration of the cluster NIC (matched by MAC), and a hostname, as Ignition."""
    network = (
        f"[Match]\nMACAddress={net.mac}\n\n[Network]\nAddress={net.address}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    return {
        "ignition": {"version": version},
        "storage": {
            "files": [
                {
                    "path": "/etc/systemd/network/10-railyard-cluster.network",
                    "mode": 0o644,
                    "contents": {"source": "data:," + quote(network)},
                },
                {
                    "path": "/etc/hostname",
                    "mode": 0o644,
                    "overwrite": True,
                    "contents": {"source": "data:," + quote(hostname_for(hostname) + "\n")},
                },
            ]
        },
    }


def hostname_for(name: str) -> str:
    """A valid host name (RFC 1123 label) for a machine name."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "railyard"


def safe_name(text: str, limit: int = 60) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return name[:limit] or "machine"


@dataclass
class _Watch:
    """How far the console and journal of a machine have been checked."""

    console_offset: int = 0
    journal_cursor: str | None = None
    journal_parts: list[str] = field(default_factory=list)


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
        self._watch: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self._hub: L2Hub | None = None
        self._private_index = 0
        self._life_slots: list[BootSlot] = []  # held until `finish` (under TCG)

    # -- Ignition -------------------------------------------------------------------------------------

    def base_ignition(self) -> dict[str, Any]:
        distro = self.image.distro
        user: dict[str, Any] = {"name": distro.default_user, "groups": ["sudo"]}
        if "no_ssh_key" not in self.req.flags:
            user["sshAuthorizedKeys"] = [self.run.keypair.public_line]
        config: dict[str, Any] = {
            "ignition": {"version": distro.ignition_version},
            "passwd": {"users": [user]},
        }
        # Updates are off unless the test asks (its own update.conf replaces this one in the merge).
        updates_off = distro.updates_off_ignition()
        if updates_off is not None:
            config = merge(config, updates_off)
        return config

    def ignition_for(
        self, extra: Sequence[Mapping[str, Any]] = (), butane: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The harness's base config merged with the test's markers and `extra`; validated."""
        config: dict[str, Any] = self.base_ignition()
        for part in [*self.req.ignition, *extra]:
            config = merge(config, part)
        for text in [*self.req.butane, *butane]:
            config = merge(config, translate_butane(text))
        return validate(config, max_version=self.image.distro.ignition_version)

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

        With `private_network`, each machine gets a second NIC on a segment shared by every machine of this
        factory, with a static address (`machine.private_address`), so the machines reach each other.
        """
        config = self.ignition_for([ignition] if ignition else (), [butane] if butane else ())
        if count > self.run.platform_cls.max_cluster_size:
            raise ConfigError(
                f"{count} machines asked for, but platform {self.run.platform_name} allows at most "
                f"{self.run.platform_cls.max_cluster_size} per test"
            )
        names = [self._next_name(name) for _ in range(count)]
        nets = [self._private_net() if private_network else None for _ in names]
        if self.run.slots_for_life:
            # All machines of one request are admitted together; they hold their slots until `finish`.
            who = names[0] if count == 1 else f"{names[0]}..{names[-1]}"
            slot = self.run.boot_slots.slot(who, timeout=self.run.slot_timeout, count=count).acquire()
            with self._lock:
                self._life_slots.append(slot)
        if count == 1:
            return [self._boot_one(names[0], config, nets[0])]
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [
                pool.submit(self._boot_one, n, config, net) for n, net in zip(names, nets, strict=True)
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

    def _private_net(self) -> PrivateNet:
        with self._lock:
            if self._hub is None:
                self._hub = L2Hub()
            self._private_index += 1
            index = self._private_index
        if index > 250:
            raise ConfigError("a private network holds at most 250 machines")
        return PrivateNet(self._hub.port, f"52:54:00:cc:00:{index:02x}", f"{PRIVATE_PREFIX}.{index}/24")

    def _boot_one(self, name: str, config: dict[str, Any], net: PrivateNet | None = None) -> GuestMachine:
        workdir = self.directory / name
        workdir.mkdir(parents=True, exist_ok=True)
        if net is not None:
            config = merge(config, private_net_ignition(net, name, self.image.distro.ignition_version))
        rendered = json.dumps(config, indent=2)
        (workdir / "ignition.json").write_text(rendered + "\n")
        if self.image.metadata is not None:  # what the image was built from (kernel, systemd, Ignition...)
            (workdir / "image.json").write_text(json.dumps(self.image.metadata.to_dict(), indent=2) + "\n")
        distro = self.image.distro
        spec = MachineSpec(
            name=name,
            image=self.image.path,
            ignition=rendered,
            ignition_fw_cfg=distro.ignition_fw_cfg,
            workdir=workdir,
            ssh_user=distro.default_user,
            memory_mib=self.run.machine_memory_mib,
            cpus=self.run.machine_cpus,
            firmware=self.run.machine_firmware(self.image),
            private_net=net,
            channel=self.image.channel,
            test_id=self.test_id,
        )
        with self._boot_gate(name):
            vm = self.run.platform.boot(spec)
            guest = GuestMachine(
                vm,
                pkey=self.run.keypair.pkey,
                timeouts=self.run.timeouts,
                distro=distro,
                channel=self.image.channel,
                boot_gate=lambda: self._boot_gate(name),
            )
            guest.private_address = net.address.split("/")[0] if net else None
            with self._lock:
                self.machines.append(guest)
                self._watch[name] = _Watch()
            if "no_ssh_key" in self.req.flags:
                return guest
            try:
                guest.wait_for_ssh()
                if "no_settle" not in self.req.flags:
                    guest.settle()
            except RailyardError as exc:
                tail = "\n".join(guest.console_text().splitlines()[-25:])
                raise BootError(f"{name} did not come up: {exc}\n--- last console lines ---\n{tail}") from exc
        log.info("%s: ready", name)
        return guest

    def _boot_gate(self, name: str) -> AbstractContextManager[object]:
        """Held while a machine boots: a slot of its own, unless its slot is held for its whole life."""
        if self.run.slots_for_life:
            return nullcontext()
        return self.run.boot_slots.slot(name, timeout=self.run.slot_timeout)

    # -- after the test -------------------------------------------------------------------------------

    def check(self, ignore: Sequence[str] = ()) -> list[ConsoleMatch]:
        """Scan what each machine printed since the last check, for panics, emergency shells, failed units."""
        found: list[ConsoleMatch] = []
        for guest in list(self.machines):
            watch = self._watch[guest.name]
            text = guest.console_text()
            found += scan(text[watch.console_offset :], f"{guest.name} console", ignore=ignore)
            watch.console_offset = len(text)
            journal = self._fetch_journal(guest, watch)
            if journal:
                found += scan(journal, f"{guest.name} journal", ignore=ignore)
        return found

    def _fetch_journal(self, guest: GuestMachine, watch: _Watch) -> str:
        if not guest.vm.is_running() or "no_ssh_key" in self.req.flags:
            return ""
        after = f" --after-cursor={shlex.quote(watch.journal_cursor)}" if watch.journal_cursor else ""
        try:
            result = guest.execute(
                f"sudo journalctl --no-pager -o short-monotonic --show-cursor{after}", timeout=120.0
            )
        except RailyardError as exc:
            log.warning("%s: could not read the journal: %s", guest.name, exc)
            return ""
        lines = result.stdout.splitlines()
        if lines and lines[-1].startswith("-- cursor: "):
            watch.journal_cursor = lines.pop()[len("-- cursor: ") :]
        text = "\n".join(lines)
        watch.journal_parts.append(text)
        return text

    def _journal_from_disk(self, guest: GuestMachine, watch: _Watch) -> list[str]:
        """Stop a machine whose journal SSH could not read and read it from the machine's own disk."""
        disk = guest.vm.disk_path()
        if disk is None:
            return []
        guest.close()
        try:
            guest.vm.kill()
            text = read_journal(disk)
        except RailyardError as exc:
            note = f"{guest.name}: no journal over SSH, nor from its disk: {exc}"
            log.warning("%s", note)
            return [note]
        watch.journal_parts.append(f"-- read from the disk of {guest.name} after it stopped --\n{text}")
        return [f"{guest.name}: SSH did not answer; its journal was read from its disk into journal.txt"]

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
            workdir = guest.vm.spec.workdir
            watch = self._watch[guest.name]
            if failed and not watch.journal_parts:
                self._fetch_journal(guest, watch)
            keep = failed and self.run.keep_on_failure
            if failed and not watch.journal_parts and not keep:
                notes += self._journal_from_disk(guest, watch)
            if watch.journal_parts:
                (workdir / "journal.txt").write_text("\n".join(watch.journal_parts) + "\n")
            for fname, text in guest.vm.artifacts().items():
                (workdir / fname).write_text(text)
            guest.close()
            if failed and self.run.keep_on_failure:
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
        if self._hub is not None:
            self._hub.close()
            self._hub = None
        if not failed and not self.run.keep_artifacts:
            shutil.rmtree(self.directory, ignore_errors=True)
        return notes
