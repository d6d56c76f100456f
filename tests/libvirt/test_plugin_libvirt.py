"""The libvirt platform end to end: real domains on a system and a session libvirtd, through a child pytest.

Run with `.venv/bin/pytest -n 2 tests/libvirt` as root. Each boot holds VM slots (`vm_budget`), so no more
than two VMs of these tests run at once whatever the number of workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from platforms.base import FirstBootConfig
from tests.integration.helpers import run_inner
from tests.libvirt.conftest import pool_volumes, railyard_domains

NAMES_FILE = "domains.txt"


RECORDER = f"""
def record(*machines):
    with open({NAMES_FILE!r}, "a") as f:
        for m in machines:
            f.write(m.vm.uri + " " + m.vm.domain_name + "\\n")
"""


def add_recorder(pytester: pytest.Pytester) -> None:
    """A module inner tests import to write down the domains of their machines, for the outer checks."""
    pytester.makepyfile(railyard_record=RECORDER)


def recorded(pytester: pytest.Pytester) -> list[tuple[str, str]]:
    lines = (pytester.path / NAMES_FILE).read_text().split("\n")
    return [(line.split()[0], line.split()[1]) for line in lines if line.strip()]


def assert_gone(uri: str, name: str) -> None:
    assert name not in [n for n, _ in railyard_domains(uri)], f"domain {name} is still on {uri}"
    leftovers = [v for v in pool_volumes(uri) if v.startswith(f"{name}.")]
    assert leftovers == [], f"volumes of {name} left on {uri}: {leftovers}"


def test_boot_ignition_and_ssh(pytester, hypervisors, vm_budget):
    """One boot on the system hypervisor: Ignition applied, `core` logs in over the forwarded port, a power
    cycle keeps the disks; a failing test of the same module keeps the console and domain XML; nothing is
    left on the hypervisor."""
    marker = {
        "ignition": {"version": "3.3.0"},
        "storage": {
            "files": [
                {
                    "path": "/etc/railyard-libvirt-marker",
                    "mode": 420,
                    "contents": {"source": "data:,from-ignition"},
                }
            ]
        },
    }
    add_recorder(pytester)
    pytester.makepyfile(
        test_on_libvirt=f"""
        import libvirt
        import pytest

        pytestmark = pytest.mark.ignition({marker!r})
        from railyard_record import record

        def test_ignition_applied(module_machine):
            record(module_machine)
            assert module_machine.succeed("id -un").strip() == "core"
            assert module_machine.succeed("cat /etc/railyard-libvirt-marker") == "from-ignition"
            assert module_machine.vm.ssh_endpoint.host == "127.0.0.1"
            domain = libvirt.open({hypervisors.system!r}).lookupByName(module_machine.vm.domain_name)
            assert domain.isActive()

        def test_power_cycle_keeps_the_disks(module_machine):
            module_machine.succeed("echo kept | sudo tee /var/lib/railyard-cycle && sync")
            module_machine.power_cycle()
            assert len(module_machine.boot_ids) == 2
            assert module_machine.succeed("cat /var/lib/railyard-cycle") == "kept\\n"
            assert module_machine.console_text().count("BdsDxe: starting") == 2

        def test_fails_on_purpose(module_machine):
            assert module_machine.succeed("echo actual").strip() == "expected"
        """
    )
    with vm_budget(1):
        start = time.monotonic()
        result = run_inner(pytester, "--platform=libvirt", f"--libvirt-uri={hypervisors.system}")
        print(f"inner run: {time.monotonic() - start:.0f} s")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_ignition_applied?libvirt-stable? PASSED*",
            "*test_power_cycle_keeps_the_disks?libvirt-stable? PASSED*",
        ]
    )
    [(uri, name)] = recorded(pytester)
    assert uri == hypervisors.system
    assert_gone(uri, name)
    [machine_dir] = [p.parent for p in (pytester.path / "out").rglob("console.txt")]
    assert "login:" in (machine_dir / "console.txt").read_text(errors="replace"), "no console output was kept"
    domain_xml = ET.parse(machine_dir / "libvirt-domain.xml").getroot()
    assert domain_xml.findtext("name") == name
    assert (
        domain_xml.attrib["type"] == "qemu"
    )  # KVM is not usable on the test hosts (see harness.acceleration)


def test_machines_spread_over_two_hypervisors(pytester, hypervisors, vm_budget):
    """Two machines of one test land on the two URIs (round-robin), each reachable over SSH."""
    add_recorder(pytester)
    pytester.makepyfile(
        test_spread=f"""
        import libvirt
        from railyard_record import record

        def test_two(platform, machine_factory):  # platform first: one instance before the parallel boots
            machines = machine_factory.create(2)
            record(*machines)
            assert sorted(m.vm.uri for m in machines) == sorted({hypervisors.uris!r})
            for m in machines:
                assert m.succeed("hostname").strip()
                assert libvirt.open(m.vm.uri).lookupByName(m.vm.domain_name).isActive()
        """
    )
    args = [f"--libvirt-uri={uri}" for uri in hypervisors.uris]
    with vm_budget(2):
        start = time.monotonic()
        result = run_inner(pytester, "--platform=libvirt", *args)
        print(f"inner run: {time.monotonic() - start:.0f} s")
    result.assert_outcomes(passed=1)
    placed = recorded(pytester)
    assert sorted(uri for uri, _ in placed) == sorted(hypervisors.uris)
    for uri, name in placed:
        assert_gone(uri, name)


def owned_by(pid: int, uris: list[str]) -> list[tuple[str, str]]:
    return [(uri, name) for uri in uris for name, owner in railyard_domains(uri) if owner.owner_pid == pid]


def nvram_path(uri: str, name: str) -> Path | None:
    conn = libvirt.open(uri)
    try:
        text = ET.fromstring(conn.lookupByName(name).XMLDesc(0)).findtext("os/nvram")
        return Path(text) if text else None
    finally:
        conn.close()


def gc(cwd: Path, uris: list[str], *extra: str) -> str:
    argv = [
        sys.executable,
        "-m",
        "harness.cli",
        "gc",
        "--platform=libvirt",
        *[f"--libvirt-uri={u}" for u in uris],
    ]
    done = subprocess.run([*argv, *extra], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def start_booting_run(pytester, uri: str) -> subprocess.Popen[bytes]:
    """A child pytest run whose one test boots a machine on `uri`."""
    pytester.makepyfile(test_boot="def test_boot(machine):\n    pass\n")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--output-dir", str(pytester.path / "out"),
            "--platform=libvirt", f"--libvirt-uri={uri}", "test_boot.py"]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def wait_for_active_domain(proc: subprocess.Popen[bytes], uri: str) -> list[tuple[str, str]]:
    """The run's domains on `uri`, once they all run (it may wait for a machine slot first)."""
    deadline = time.monotonic() + 3600
    while not (found := owned_by(proc.pid, [uri])) or not all(
        libvirt.open(u).lookupByName(n).isActive() for u, n in found
    ):
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, "no domain started"
        time.sleep(0.5)
    return found


def test_gc_removes_what_a_killed_run_left(pytester, hypervisors, vm_budget):
    """SIGKILL a run while its machine boots (on the session hypervisor): its domain stays; `railyard gc`
    over both URIs lists it with --dry-run, then removes domain, NVRAM and volumes, and nothing else."""
    with vm_budget(1):
        proc = start_booting_run(pytester, hypervisors.session)
        try:
            leaked = wait_for_active_domain(proc, hypervisors.session)
        finally:
            proc.kill()
            proc.communicate()
        [(uri, name)] = leaked
        nvram = nvram_path(uri, name)
        assert nvram is not None
        assert nvram.exists()

        listed = gc(pytester.path, hypervisors.uris, "--dry-run")
        assert f"would remove domain {name} on {uri} (owner pid {proc.pid} is gone)" in listed
        assert owned_by(proc.pid, [uri]) == leaked, "--dry-run removed something"

        removed = gc(pytester.path, hypervisors.uris)
        assert f"removed domain {name} on {uri}" in removed
        # Domains of live runs (other tests running now) stay.
        assert [line for line in removed.splitlines() if line.startswith("removed domain")] == [
            f"removed domain {name} on {uri} and its volumes (owner pid {proc.pid} is gone)"
        ]
    assert owned_by(proc.pid, hypervisors.uris) == []
    assert_gone(uri, name)
    assert not nvram.exists(), f"NVRAM {nvram} was left behind"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_run_stopped_mid_boot_removes_its_domain_and_volumes(pytester, hypervisors, vm_budget, sig):
    """What a CI system's cancel (SIGTERM) or a closed terminal (SIGHUP) does: the run ends as on Ctrl-C, and
    within 30 s its domain, NVRAM and volumes are gone."""
    with vm_budget(1):
        proc = start_booting_run(pytester, hypervisors.system)
        try:
            [(uri, name)] = wait_for_active_domain(proc, hypervisors.system)
            nvram = nvram_path(uri, name)
            proc.send_signal(sig)
            output = proc.communicate(timeout=30)[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert owned_by(proc.pid, hypervisors.uris) == []
    assert_gone(uri, name)
    assert nvram is None or not nvram.exists(), f"NVRAM {nvram} was left behind"


def test_domain_xml_is_accepted_by_libvirt(hypervisors):
    """The rendered XML defines on both daemons (no boot): catches schema mistakes in seconds."""
    from harness.acceleration import Acceleration
    from platforms.base import MachineSpec
    from platforms.libvirt import _firmware
    from platforms.libvirt.xml import DomainFiles, OwnerRecord, domain_xml

    spec = MachineSpec(name="xml-check", image=Path("/nonexistent"), ignition=FirstBootConfig("{}", "3.3.0"),
                       ignition_fw_cfg="opt/com.coreos/config", workdir=Path("/nonexistent"))  # fmt: skip
    owner = OwnerRecord("xml-check", "xml-check", os.getpid(), "localhost", 0, time.time())
    files = DomainFiles(
        Path("/nonexistent/d.qcow2"), Path("/nonexistent/d.ign"), Path("/nonexistent/d.console")
    )
    for uri in hypervisors.uris:
        conn = libvirt.open(uri)
        try:
            xml = domain_xml(spec, name=f"railyard-xml-check-{os.getpid()}", accel=Acceleration("tcg", "test"),
                             firmware=_firmware("uefi"), files=files, owner=owner)  # fmt: skip
            domain = conn.defineXML(xml)
            try:
                defined = ET.fromstring(domain.XMLDesc(0))
                assert defined.find("sysinfo/entry").attrib["name"] == "opt/com.coreos/config"
                assert defined.find("os/nvram") is not None
            finally:
                domain.undefineFlags(7)
        finally:
            conn.close()


def test_a_pool_whose_directory_went_missing_is_built_again(hypervisors, tmp_path):
    """A directory pool defined on the hypervisor but with its directory gone starts again (no boot)."""
    from platforms.libvirt.storage import ensure_pool, parse_uri
    from platforms.libvirt.xml import pool_xml

    name = f"railyard-missing-dir-{os.getpid()}"
    directory = tmp_path / "pool"
    conn = libvirt.open(hypervisors.system)
    pool = conn.storagePoolDefineXML(pool_xml(name, directory), 0)
    try:
        assert not directory.exists()
        with pytest.raises(libvirt.libvirtError, match="No such file or directory"):
            pool.create(0)  # what libvirt alone does with it
        started = ensure_pool(conn, parse_uri(hypervisors.system), name)
        assert started.isActive()
        assert directory.is_dir()
    finally:
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        conn.close()
