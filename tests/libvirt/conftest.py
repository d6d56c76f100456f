"""libvirt daemons for the tests in this directory, shared by every xdist worker of a run.

The first worker to need them starts (or finds) a system libvirtd with virtlogd and a session libvirtd of the
user `railyard-libvirt`; the last worker to finish stops what was started, by PID. A small state directory in
/tmp holds the pids and the workers still using them, under a file lock. VM boots are budgeted across workers:
at most two VMs of these tests run at a time (see `vm_budget`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from harness.admission import BootSlots
from tests.libvirt.daemons import Daemons, bridges, pid_alive

libvirt = pytest.importorskip("libvirt")

STATE_DIR = Path("/tmp/railyard-libvirt-tests")
MAX_VMS = 2


@dataclass(frozen=True)
class Hypervisors:
    system: str
    session: str

    @property
    def uris(self) -> list[str]:
        return [self.system, self.session]


def _state() -> dict[str, object]:
    try:
        return dict(json.loads((STATE_DIR / "state.json").read_text()))
    except (OSError, ValueError):
        return {}


def _started() -> list[tuple[int, str]]:
    return [(int(pid), str(what)) for pid, what in _state().get("started", [])]  # type: ignore[attr-defined]


def _users() -> list[int]:
    users = STATE_DIR / "users"
    users.mkdir(parents=True, exist_ok=True)
    alive = []
    for entry in users.iterdir():
        if entry.name.isdigit() and pid_alive(int(entry.name)):
            alive.append(int(entry.name))
        else:
            entry.unlink(missing_ok=True)
    return alive


@pytest.fixture(scope="session")
def hypervisors() -> Iterator[Hypervisors]:
    """A system and a session hypervisor on this host, running for as long as any worker needs them."""
    if os.geteuid() != 0:
        pytest.skip("the libvirt tests start libvirtd and create a user: run them as root")
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    lock = FileLock(str(STATE_DIR / "lock"))
    bridges_before = bridges()
    with lock:
        others = _users()
        daemons = Daemons(STATE_DIR, started=_started())
        if not others:
            daemons.stop()  # what a crashed earlier run left
            daemons = Daemons(STATE_DIR)
        try:
            system = daemons.start_system()
            session = daemons.start_session()
        finally:
            (STATE_DIR / "state.json").write_text(json.dumps({"started": daemons.started}))
        (STATE_DIR / "users" / str(os.getpid())).touch()
    assert bridges() == bridges_before, "libvirtd brought up a network bridge: it must not start any network"
    try:
        yield Hypervisors(system, session)
    finally:
        with lock:
            (STATE_DIR / "users" / str(os.getpid())).unlink(missing_ok=True)
            if not _users():
                Daemons(STATE_DIR, started=_started()).stop()
                (STATE_DIR / "state.json").unlink(missing_ok=True)
        assert bridges() == bridges_before


@pytest.fixture
def vm_budget() -> Iterator[object]:
    """`with vm_budget(n):` holds n of the MAX_VMS slots these tests share across workers."""
    slots = BootSlots(MAX_VMS, directory=STATE_DIR / "vm-slots")

    @contextlib.contextmanager
    def hold(count: int) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for index in range(count):
                stack.enter_context(slots.slot(f"libvirt test VM {index + 1}/{count}", timeout=3600.0))
            yield

    return hold


def railyard_domains(uri: str) -> list[tuple[str, object]]:
    """(name, owner record) of every Railyard domain on `uri`, running or not."""
    from platforms.libvirt.gc import domain_owner

    conn = libvirt.open(uri)
    try:
        found = []
        for domain in conn.listAllDomains(0):
            owner = domain_owner(domain)
            if owner is not None:
                found.append((domain.name(), owner))
        return found
    finally:
        conn.close()


def pool_volumes(uri: str, pool: str = "railyard") -> list[str]:
    conn = libvirt.open(uri)
    try:
        storage = conn.storagePoolLookupByName(pool)
        with contextlib.suppress(libvirt.libvirtError):  # busy while another test uploads an image
            storage.refresh(0)
        return [v.name() for v in storage.listAllVolumes(0)]
    finally:
        conn.close()
