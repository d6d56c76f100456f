"""libvirt daemons for the tests: reuse running ones, else start them and stop them again by PID.

The system daemon is started in a private mount namespace where the networks' autostart directory is empty,
so no libvirt network (and no virbr0 bridge) ever comes up. When KVM is not usable here (see
harness.acceleration), /dev/kvm is hidden from it too: libvirt 9.0 otherwise probes QEMU with KVM as root,
finds KVM "unavailable" for its qemu user (/dev/kvm is root's only) and probes again on every domain
definition (~75 s each). A file mounted over /dev/kvm cannot be carried into a per-QEMU /dev namespace, so
that daemon runs with a qemu.conf of its own saying `namespaces = []`.

The session daemon runs as a system user of its own, with its own XDG_RUNTIME_DIR; it starts its own
virtlogd, which is stopped as well.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.acceleration import kvm_usable

SYSTEM_SOCKET = Path("/run/libvirt/libvirt-sock")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")
AUTOSTART_DIR = Path("/etc/libvirt/qemu/networks/autostart")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
SESSION_USER = "railyard-libvirt"
SESSION_HOME = Path("/var/lib/railyard-libvirt")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def connectable(uri: str) -> bool:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here; only its parent can reap it.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, what: str) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not pid_alive(pid), STOP_TIMEOUT, f"{what} (pid {pid}) stopping")
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), STOP_TIMEOUT, f"{what} (pid {pid}) dying")


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def bridges() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("virbr"))


@dataclass
class Daemons:
    """What this test session started (and must stop), and the URIs to use."""

    workdir: Path
    started: list[tuple[int, str]] = field(default_factory=list)
    session_uri: str | None = None

    def stop(self) -> None:
        """Stop what was started, last first. A daemon a daemon started itself is named by its pid file."""
        for pid, what in reversed(self.started):
            if pid == 0:
                with contextlib.suppress(OSError, ValueError):
                    pid = read_pid(Path(what.partition(":")[2]))
            if pid and pid_alive(pid):
                stop_pid(pid, what.partition(":")[0])
        self.started.clear()

    # -- system ------------------------------------------------------------------------------------------

    def start_system(self) -> str:
        uri = "qemu:///system"
        if SYSTEM_SOCKET.exists() and connectable(uri):
            return uri
        if not (VIRTLOGD_SOCKET.exists() and _virtlogd_answers()):
            pidfile = self.workdir / "virtlogd.pid"
            subprocess.run(["virtlogd", "--daemon", "--pid-file", str(pidfile)], check=True)
            wait_for(pidfile.exists, START_TIMEOUT, "virtlogd writing its pid file")
            self.started.append((read_pid(pidfile), "virtlogd"))
            wait_for(VIRTLOGD_SOCKET.exists, START_TIMEOUT, "virtlogd's socket appearing")
        empty = self.workdir / "no-autostart"
        empty.mkdir(exist_ok=True)
        mounts = [f"mount --bind {empty} {AUTOSTART_DIR}"]
        if Path("/dev/kvm").exists() and not kvm_usable()[0]:
            stub = self.workdir / "no-kvm"
            stub.touch(mode=0o600)
            mounts.append(f"mount --bind {stub} /dev/kvm")
            # QEMU then gets no private /dev of its own: libvirt cannot carry a file mount over into one.
            qemu_conf = self.workdir / "qemu.conf"
            qemu_conf.write_text("namespaces = []\n")
            qemu_conf.chmod(0o600)
            mounts.append(f"mount --bind {qemu_conf} {QEMU_CONF}")
        pidfile = self.workdir / "libvirtd.pid"
        config = self.workdir / "libvirtd.conf"
        config.write_text(f'log_outputs = "3:file:{self.workdir / "libvirtd.log"}"\n')
        script = " && ".join([*mounts, f"exec libvirtd --daemon --config {config} --pid-file {pidfile}"])
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], check=True)
        wait_for(pidfile.exists, START_TIMEOUT, "libvirtd writing its pid file")
        self.started.append((read_pid(pidfile), "libvirtd"))
        wait_for(lambda: SYSTEM_SOCKET.exists() and connectable(uri), START_TIMEOUT, "libvirtd answering")
        return uri

    # -- session of another user -------------------------------------------------------------------------

    def start_session(self) -> str:
        user = ensure_session_user()
        runtime = Path(f"/run/railyard-libvirt-{user.pw_uid}")
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.chown(runtime, user.pw_uid, user.pw_gid)
        socket = runtime / "libvirt" / "libvirt-sock"
        uri = f"qemu+unix:///session?socket={socket}"
        if socket.exists() and connectable(uri):
            self.session_uri = uri
            return uri
        env = {
            "HOME": user.pw_dir,
            "USER": user.pw_name,
            "LOGNAME": user.pw_name,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "XDG_RUNTIME_DIR": str(runtime),
        }
        pidfile = runtime / "libvirtd.pid"
        subprocess.run(
            ["libvirtd", "--daemon", "--pid-file", str(pidfile)],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            env=env,
            cwd=user.pw_dir,
            check=True,
        )
        wait_for(pidfile.exists, START_TIMEOUT, "the session libvirtd writing its pid file")
        self.started.append((read_pid(pidfile), "session libvirtd"))
        wait_for(
            lambda: socket.exists() and connectable(uri), START_TIMEOUT, "the session libvirtd answering"
        )
        # It starts its own virtlogd when the first domain starts; that one is stopped with it.
        self.started.insert(0, (0, f"session virtlogd:{runtime / 'libvirt' / 'virtlogd.pid'}"))
        self.session_uri = uri
        return uri


def _virtlogd_answers() -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(VIRTLOGD_SOCKET))
        except OSError:
            return False
    return True


def ensure_session_user() -> pwd.struct_passwd:
    """The system user whose session daemon the two-hypervisor tests use (created on first use)."""
    try:
        return pwd.getpwnam(SESSION_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--create-home", "--home-dir", str(SESSION_HOME), "--shell", "/usr/sbin/nologin",
         SESSION_USER],
        check=True,
    )  # fmt: skip
    return pwd.getpwnam(SESSION_USER)
