"""A second host on this machine for the remote-hypervisor tests: a network namespace with its own sshd, libvirtd
and virtlogd, reached at 10.213.0.2 over a veth pair (this host's end is 10.213.0.1).

The daemons run in a private mount namespace inside it, over files of their own: a tmpfs on /run (their
sockets and pid files do not meet the host's libvirtd), and bind mounts of a temporary directory over
/etc/libvirt (a copy of the host's, with no domain, pool or network defined: libvirt's default network is never
started), /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt. The QEMU processes libvirtd starts live in
the namespace too: their user-mode networks forward SSH from the namespace's 127.0.0.1, which only its sshd
reaches, and a guest reaches nothing but 10.213.0.1.

sshd listens on 10.213.0.2:22 with a host key and an authorized key generated for the test; libvirt's
`qemu+ssh://` runs `virt-ssh-helper` there. `stop()` destroys what is still defined, stops the daemons by PID,
ends any process left in the namespace by PID, deletes the namespace and the veth pair, and removes the files.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.acceleration import kvm_usable
from tests.libvirt.daemons import START_TIMEOUT, pid_alive, read_pid, stop_pid, wait_for

NETNS = "railyard-remote"
HOST_IF = "ryremote-h"
NS_IF = "ryremote-n"
HOST_ADDRESS = "10.213.0.1"
NS_ADDRESS = "10.213.0.2"
PREFIX = 30
HOST_KEY_TYPE = "ed25519"


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def netns_exists(name: str = NETNS) -> bool:
    return name in _run("ip", "netns", "list").split()


def netns_pids(name: str = NETNS) -> list[int]:
    if not netns_exists(name):
        return []
    return [int(p) for p in _run("ip", "netns", "pids", name).split()]


def remove_netns(name: str = NETNS) -> None:
    """End every process in the namespace (by PID), then delete it and the veth pair."""
    for pid in netns_pids(name):
        if pid_alive(pid):
            stop_pid(pid, f"process {pid} in netns {name}")
    if netns_exists(name):
        _run("ip", "netns", "delete", name)  # its end of the veth pair goes, and this host's end with it
    try:
        _run("ip", "link", "delete", HOST_IF)
    except RuntimeError:
        if Path(f"/sys/class/net/{HOST_IF}").exists():
            raise


@dataclass
class RemoteHost:
    """The namespace host: where to log in to it, and what to stop."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="railyard-remote-host-")))
    started: list[tuple[int, str]] = field(default_factory=list)

    @property
    def keys(self) -> Path:
        return self.workdir / "client"

    @property
    def client_key(self) -> Path:
        return self.keys / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.keys / "known_hosts"

    @property
    def uri(self) -> str:
        return f"qemu+ssh://root@{NS_ADDRESS}/system?keyfile={self.client_key}&known_hosts={self.known_hosts}"

    @property
    def libvirtd_pid(self) -> int:
        return read_pid(self.workdir / "libvirtd.pid")

    # -- start ------------------------------------------------------------------------------------------

    def start(self) -> None:
        remove_netns()  # what a crashed earlier run left
        self._network()
        self._keys()
        self._files()
        self._daemons()

    def _network(self) -> None:
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        _run("ip", "link", "set", NS_IF, "netns", NETNS)
        _run("ip", "address", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", HOST_IF)
        _run("ip", "link", "set", HOST_IF, "up")
        inside = ("ip", "netns", "exec", NETNS)
        _run(*inside, "ip", "address", "add", f"{NS_ADDRESS}/{PREFIX}", "dev", NS_IF)
        _run(*inside, "ip", "link", "set", NS_IF, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")  # QEMU's SSH forwards listen on its 127.0.0.1

    def _keys(self) -> None:
        self.keys.mkdir(mode=0o700)
        sshd = self.workdir / "sshd"
        sshd.mkdir(mode=0o700)
        host_key = sshd / f"ssh_host_{HOST_KEY_TYPE}_key"
        _run(
            "ssh-keygen",
            "-q",
            "-t",
            HOST_KEY_TYPE,
            "-N",
            "",
            "-C",
            "railyard-remote-host",
            "-f",
            str(host_key),
        )
        _run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "railyard-remote-client",
            "-f",
            str(self.client_key),
        )
        public = Path(f"{host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"{NS_ADDRESS} {public[0]} {public[1]}\n")
        shutil.copy(f"{self.client_key}.pub", sshd / "authorized_keys")
        (sshd / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {NS_ADDRESS}",
                    "Port 22",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {sshd / 'authorized_keys'}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # its files are in a temporary directory under /tmp
                    "AllowTcpForwarding yes",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "",
                ]
            )
        )

    def _files(self) -> None:
        """The namespace's own libvirt configuration and state directories."""
        etc = self.workdir / "etc-libvirt"
        # No domain, no network (libvirt's default network is never defined here) and no storage pool: the
        # host's pools name directories under its own /var/lib/libvirt, which this host does not share.
        shutil.copytree("/etc/libvirt", etc, ignore=shutil.ignore_patterns("qemu", "storage"), symlinks=True)
        (etc / "qemu").mkdir()
        (etc / "storage").mkdir()
        config = [f'log_outputs = "3:file:{self.workdir / "libvirtd.log"}"']
        (etc / "libvirtd.conf").write_text("\n".join(config) + "\n")
        qemu = (etc / "qemu.conf").read_text()
        if Path("/dev/kvm").exists() and not kvm_usable()[0]:
            # As in tests.libvirt.daemons: /dev/kvm is hidden, so QEMU gets no private /dev.
            qemu += "\nnamespaces = []\n"
        (etc / "qemu.conf").write_text(qemu)
        for name in ("var-lib", "var-log", "var-cache"):
            (self.workdir / name).mkdir(mode=0o755)
        (self.workdir / "var-lib" / "images").mkdir(mode=0o711)
        (self.workdir / "var-log" / "qemu").mkdir(mode=0o700)
        (self.workdir / "var-cache" / "qemu").mkdir(mode=0o755)
        self.workdir.chmod(0o755)

    def _daemons(self) -> None:
        w = self.workdir
        mounts = [
            "mount -t tmpfs -o mode=0755 railyard-remote-run /run",
            "mkdir -p /run/sshd",
            f"mount --bind {w / 'etc-libvirt'} /etc/libvirt",
            f"mount --bind {w / 'var-lib'} /var/lib/libvirt",
            f"mount --bind {w / 'var-log'} /var/log/libvirt",
            f"mount --bind {w / 'var-cache'} /var/cache/libvirt",
        ]
        if Path("/dev/kvm").exists() and not kvm_usable()[0]:
            stub = w / "no-kvm"
            stub.touch(mode=0o600)
            mounts.append(f"mount --bind {stub} /dev/kvm")
        starts = [
            f"virtlogd --daemon --pid-file {w / 'virtlogd.pid'}",
            f"libvirtd --daemon --config {w / 'etc-libvirt' / 'libvirtd.conf'} --pid-file {w / 'libvirtd.pid'}",
            f"/usr/sbin/sshd -f {w / 'sshd' / 'sshd_config'}",
        ]
        script = " && ".join([*mounts, *starts])
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                NETNS,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            check=True,
            timeout=START_TIMEOUT,
        )
        for name in ("virtlogd", "libvirtd", "sshd"):
            pidfile = w / f"{name}.pid"
            wait_for(pidfile.exists, START_TIMEOUT, f"the namespace's {name} writing its pid file")
            self.started.append((read_pid(pidfile), name))
        wait_for(self._libvirtd_answers, START_TIMEOUT, "the namespace's libvirtd answering")

    # -- inside ---------------------------------------------------------------------------------------

    def inside(self, *argv: str) -> str:
        """Run a command in the daemons' namespaces (network and mount), e.g. `virsh` on their socket."""
        return _run("nsenter", f"--target={self.libvirtd_pid}", "--mount", "--net", *argv)

    def _libvirtd_answers(self) -> bool:
        try:
            self.inside("virsh", "-c", "qemu:///system", "uri")
        except RuntimeError:
            return False
        return True

    def domains(self) -> list[str]:
        out = self.inside("virsh", "-c", "qemu:///system", "list", "--all", "--name")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def volumes(self, pool: str = "railyard") -> list[str]:
        pools = self.inside("virsh", "-c", "qemu:///system", "pool-list", "--all", "--name").split()
        if pool not in pools:
            return []
        self.inside("virsh", "-c", "qemu:///system", "pool-refresh", pool)
        out = self.inside("virsh", "-c", "qemu:///system", "vol-list", pool)
        return [line.split()[0] for line in out.splitlines()[2:] if line.strip()]

    # -- stop -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Destroy and undefine what is left, stop the daemons (last started first), remove everything."""
        with contextlib.suppress(RuntimeError, OSError, ValueError):
            for name in self.domains():
                with contextlib.suppress(RuntimeError):
                    self.inside("virsh", "-c", "qemu:///system", "destroy", name)
                self.inside("virsh", "-c", "qemu:///system", "undefine", "--nvram", name)
        try:
            for pid, what in reversed(self.started):
                if pid_alive(pid):
                    stop_pid(pid, f"the namespace's {what}")
            self.started.clear()
            remove_netns()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
