"""A remote hypervisor, `--libvirt-uri qemu+ssh://root@10.213.0.2/system?keyfile=...&known_hosts=...`: domains are
defined and started on a second host (tests.libvirt.remote_host: a network namespace with its own sshd and
libvirtd), and the harness reaches each guest through that host's sshd (an SSH jump to the forwarded port on
its loopback).

Run as root: `.venv/bin/pytest tests/libvirt/test_remote_libvirt.py`. libvirt's `qemu+ssh://` transport runs
OpenSSH's `ssh`, which reads host keys from the user's ~/.ssh/known_hosts only (libvirt passes `known_hosts=`
to its libssh transports, not to `ssh`): the child pytest runs in a private mount namespace where ~/.ssh is the
test's own directory holding the namespace host's key, so nothing is written to the real one.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import INNER_TIMEOUT, failure_report
from tests.libvirt.daemons import bridges, pid_alive
from tests.libvirt.remote_host import NETNS, RemoteHost, netns_exists
from tests.libvirt.test_plugin_libvirt import add_recorder, recorded

TOOLS = ("ip", "nsenter", "unshare", "ssh", "ssh-keygen", "virsh", "virt-ssh-helper", "libvirtd", "virtlogd")


@pytest.fixture
def remote_host() -> Iterator[RemoteHost]:
    """The second host, up for one test; afterwards its daemons, its namespace and its files are gone."""
    if os.geteuid() != 0:
        pytest.skip(
            "the remote-hypervisor test makes a network namespace and starts sshd and libvirtd: run it as root"
        )
    missing = [tool for tool in TOOLS if shutil.which(tool) is None] + [
        path for path in ("/usr/sbin/sshd",) if not Path(path).exists()
    ]
    if missing:
        pytest.skip(f"the remote-hypervisor test needs {', '.join(missing)}")
    bridges_before = bridges()
    host = RemoteHost()
    try:
        host.start()
        yield host
    finally:
        started = list(host.started)
        host.stop()
    assert not netns_exists(NETNS), f"netns {NETNS} is still there"
    assert [what for pid, what in started if pid_alive(pid)] == []
    assert not host.workdir.exists()
    assert bridges() == bridges_before, "a libvirt network bridge came up"


def run_with_known_hosts(pytester: pytest.Pytester, keys: Path, *args: str) -> pytest.RunResult:
    """A child pytest (as `run_inner` runs it) whose `ssh` reads `keys` as ~/.ssh (see the module's note)."""
    home_ssh = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    made = not home_ssh.exists()
    home_ssh.mkdir(mode=0o700, exist_ok=True)
    pytest_argv = [sys.executable, "-m", "pytest", f"--basetemp={pytester.path / 'basetemp'}", "-p", "no:cacheprovider",
                   "--output-dir", str(pytester.path / "out"), "-v", "-rA", *args]  # fmt: skip
    script = f"mount --bind {shlex.quote(str(keys))} {shlex.quote(str(home_ssh))} && exec {shlex.join(pytest_argv)}"
    try:
        return pytester.run(
            "unshare", "--mount", "--propagation", "private", "sh", "-c", script, timeout=INNER_TIMEOUT
        )
    finally:
        if made:
            home_ssh.rmdir()


def test_a_remote_qemu_ssh_hypervisor_boots_the_libvirt_tests(pytester, remote_host, vm_budget):
    """The libvirt tests' machine on the remote host: Ignition applied, commands, a file copy, a host service
    forwarded into the guest, a reboot and a power cycle, all through the jump; the console is copied back;
    a failing test keeps its artifacts; a test needing a private network is skipped with the reason; nothing
    is left on the remote hypervisor but the cached base image."""
    uri = remote_host.uri
    marker = {
        "ignition": {"version": "3.3.0"},
        "storage": {
            "files": [
                {
                    "path": "/etc/railyard-remote-marker",
                    "mode": 420,
                    "contents": {"source": "data:,from-ignition"},
                }
            ]
        },
    }
    add_recorder(pytester)
    pytester.makepyfile(
        test_on_remote=f"""
        import http.server
        import threading

        import libvirt
        import pytest

        pytestmark = pytest.mark.ignition({marker!r})
        from railyard_record import record

        URI = {uri!r}


        @pytest.fixture(scope="module")
        def host_service(tmp_path_factory):
            root = tmp_path_factory.mktemp("served")
            (root / "greeting").write_text("served-by-the-test-host")
            handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            yield server.server_address[1]
            server.shutdown()


        def test_ignition_applied_through_the_jump(module_machine):
            record(module_machine)
            ep = module_machine.vm.ssh_endpoint
            assert (ep.host, str(ep.via)) == ("127.0.0.1", "root@10.213.0.2:22")
            assert module_machine.succeed("id -un").strip() == "core"
            assert module_machine.succeed("cat /etc/railyard-remote-marker") == "from-ignition"
            domain = libvirt.open(URI).lookupByName(module_machine.vm.domain_name)
            assert domain.isActive()


        def test_copy_and_a_host_service(module_machine, host_service, tmp_path):
            (tmp_path / "sent").write_bytes(bytes(range(256)) * 64)
            module_machine.copy_to(tmp_path / "sent", "/tmp/sent")
            assert module_machine.succeed("sha256sum < /tmp/sent").split()[0] == __import__("hashlib").sha256(
                (tmp_path / "sent").read_bytes()).hexdigest()
            back = module_machine.copy_from("/etc/railyard-remote-marker", tmp_path / "back")
            assert back.read_text() == "from-ignition"
            port = module_machine.forward_host_service(host_service)
            assert module_machine.succeed(f"curl -sf http://127.0.0.1:{{port}}/greeting") == "served-by-the-test-host"


        def test_reboot_keeps_the_forward(module_machine, host_service):
            before = len(module_machine.boot_ids)
            module_machine.reboot()
            assert len(module_machine.boot_ids) == before + 1
            assert len(set(module_machine.boot_ids)) == len(module_machine.boot_ids)
            # Asked for again by the new login, through the jump (the guest's port is the host's number).
            greeting = module_machine.succeed(f"curl -sf http://127.0.0.1:{{host_service}}/greeting")
            assert greeting == "served-by-the-test-host"
            assert module_machine.forward_host_service(host_service) == host_service  # a no-op now


        def test_power_cycle_keeps_the_disks(module_machine):
            module_machine.succeed("echo kept | sudo tee /var/lib/railyard-cycle && sync")
            module_machine.power_cycle()
            assert module_machine.succeed("cat /var/lib/railyard-cycle") == "kept\\n"
            assert module_machine.console_text().count("BdsDxe: starting") == 3


        @pytest.mark.cluster(2)
        def test_needs_a_private_network(cluster):
            pass


        def test_fails_on_purpose(module_machine):
            assert module_machine.succeed("echo actual").strip() == "expected"
        """
    )
    with vm_budget(1):
        start = time.monotonic()
        result = run_with_known_hosts(
            pytester, remote_host.keys, "--platform=libvirt", f"--libvirt-uri={uri}", "--durations=10"
        )
        print(f"inner run: {time.monotonic() - start:.0f} s")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed"), outcomes.get("skipped")) == (4, 1, 1), (
        failure_report(result)
    )
    result.stdout.fnmatch_lines(["*SKIPPED*needs machine capabilities private-network, which libvirt lacks*"])
    [(recorded_uri, name)] = recorded(pytester)
    assert recorded_uri == uri
    assert remote_host.domains() == [], "a domain was left on the remote hypervisor"
    left = [v for v in remote_host.volumes() if not v.startswith("railyard-base-")]
    assert left == [], f"volumes left on the remote hypervisor: {left}"
    assert remote_host.inside("virsh", "-c", "qemu:///system", "net-list", "--all", "--name").strip() == ""
    [machine_dir] = [p.parent for p in (pytester.path / "out").rglob("console.txt")]
    console = (machine_dir / "console.txt").read_text(errors="replace")
    assert "login:" in console, "the remote console was not copied back"
    assert console.count("BdsDxe: starting") >= 3
    domain_xml = ET.parse(machine_dir / "libvirt-domain.xml").getroot()
    assert domain_xml.findtext("name") == name
