"""The guest a cloud contract test reaches over SSH: a real OpenSSH sshd in a network namespace of the test's.

The cloud fakes (moto_server, the fake ARM server) start no machines, so the addresses they give instances
lead nowhere. The contract test points a cloud machine's SSH at this sshd instead, which runs in a network
namespace joined to the host by a veth pair: commands run inside the namespace, and the namespace's own
127.0.0.1 is not the host's, as a real guest's is not, so a reverse forward is shown for what it is.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.retry import poll
from harness.ssh import read_banner

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
START_TIMEOUT = 30.0
SUBNET = "10.213"
"""Addresses of the veth pairs: 10.213.<n>.1 (host side) and 10.213.<n>.2 (the fake guest)."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _used_subnets() -> set[int]:
    shown = subprocess.run(["ip", "-4", "-o", "address"], check=True, capture_output=True, text=True).stdout
    used = set()
    for word in shown.split():
        if word.startswith(SUBNET + "."):
            used.add(int(word.split(".")[2]))
    return used


@dataclass(frozen=True)
class FakeGuest:
    address: str
    """Where the host reaches the fake guest's sshd (port 22)."""
    namespace: str
    user: str = "root"


def sshd_config(directory: Path, address: str) -> str:
    return (
        f"ListenAddress {address}\nPort 22\nHostKey {directory / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPidFile {directory / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nAllowTcpForwarding yes\nPrintMotd no\n"
    )


@contextlib.contextmanager
def fake_guest(directory: Path, authorized_key: str) -> Iterator[FakeGuest]:
    """Start a namespace with a veth pair and an sshd that lets root in with `authorized_key`; on exit the
    sshd is stopped and the namespace (with its end of the pair, which takes the other) deleted."""
    if os.geteuid() != 0 or not SSHD.exists():
        raise RuntimeError(f"the fake guest needs root and {SSHD} (openssh-server; bootstrap.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(3)
    namespace, host_end, guest_end = f"railyard-{token}", f"ry{token}h", f"ry{token}g"
    free = sorted(set(range(1, 255)) - _used_subnets())
    subnet = f"{SUBNET}.{free[secrets.randbelow(len(free))]}"
    host_address, guest_address = f"{subnet}.1", f"{subnet}.2"
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "host_ed25519")], check=True
    )
    (directory / "authorized_keys").write_text(authorized_key.strip() + "\n")
    (directory / "sshd_config").write_text(sshd_config(directory, guest_address))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    process: subprocess.Popen[bytes] | None = None
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", guest_end)
        _ip("link", "set", guest_end, "netns", namespace)
        _ip("address", "add", f"{host_address}/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("-n", namespace, "address", "add", f"{guest_address}/30", "dev", guest_end)
        _ip("-n", namespace, "link", "set", guest_end, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        log = (directory / "sshd.log").open("wb")
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, str(SSHD), "-D", "-e", "-f", str(directory / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def answers() -> bool | None:
            assert process is not None
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(directory / 'sshd.log').read_text()}")
            with contextlib.suppress(OSError):
                return read_banner(guest_address, 22, timeout=1.0).startswith("SSH-") or None
            return None

        poll(answers, timeout=START_TIMEOUT, interval=0.1, what="the fake guest's sshd")
        yield FakeGuest(guest_address, namespace)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)
        subprocess.run(["ip", "link", "delete", host_end], check=False, capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
