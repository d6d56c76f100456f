"""Reverse port forwards over the harness's SSH connection: a host service, reachable from the guest.

A service a test starts on the host (the Omaha update server) listens on the host's 127.0.0.1. The guest
reaches it at its own 127.0.0.1:<port>, where the guest's sshd listens on the harness's behalf and hands each
connection back over the SSH connection (`ssh -R`); the harness connects it to the host service. That works
the same on every platform whose machines the harness reaches by SSH: QEMU's user network, libvirt, clouds.

The forward lives as long as the SSH connection: `SSHConnection` asks for it again after every new login
(e.g. after a reboot). A guest that calls the service before the harness is back gets "connection refused"
and retries (the update agent does).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from dataclasses import dataclass

import paramiko

from harness.errors import SSHError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
_CHUNK = 65536


@dataclass(frozen=True)
class RemoteForward:
    """Guest `127.0.0.1:guest_port` -> host `host:host_port`."""

    guest_port: int
    host_port: int
    host: str = "127.0.0.1"

    def __str__(self) -> str:
        return f"guest 127.0.0.1:{self.guest_port} -> host {self.host}:{self.host_port}"


def request(transport: paramiko.Transport, forward: RemoteForward) -> None:
    """Ask the guest's sshd to listen on its 127.0.0.1:guest_port for us. Raises SSHError if it refuses
    (the port is taken in the guest, or the guest's sshd forbids forwarding)."""

    def accept(channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
        # Called on paramiko's transport thread, which must not block: pump from a thread of its own.
        threading.Thread(
            target=_pump, args=(channel, forward), name=f"forward-{forward.guest_port}", daemon=True
        ).start()

    try:
        port = transport.request_port_forward("127.0.0.1", forward.guest_port, handler=accept)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SSHError(f"the guest refused the port forward {forward}: {exc!r}") from exc
    if port != forward.guest_port:
        raise SSHError(f"the guest forwarded port {port}, not {forward.guest_port} ({forward})")
    log.debug("forwarding %s", forward)


def _pump(channel: paramiko.Channel, forward: RemoteForward) -> None:
    """Copy bytes both ways between a forwarded channel and a new connection to the host service."""
    try:
        upstream = socket.create_connection((forward.host, forward.host_port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        log.warning("forward %s: cannot reach the host service: %s", forward, exc)
        channel.close()
        return
    upstream.settimeout(None)
    peer: dict[object, socket.socket | paramiko.Channel] = {channel: upstream, upstream: channel}
    sources: list[socket.socket | paramiko.Channel] = [channel, upstream]
    try:
        while sources:
            readable, _, _ = select.select(sources, [], [], 60.0)
            for source in readable:
                data = source.recv(_CHUNK)
                target = peer[source]
                if data:
                    target.sendall(data)
                    continue
                sources.remove(source)  # this side is done sending: pass the end on, keep the other way
                if isinstance(target, socket.socket):
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                else:
                    target.shutdown_write()
    except (OSError, paramiko.SSHException, EOFError) as exc:
        log.debug("forward %s: connection ended: %r", forward, exc)
    finally:
        channel.close()
        upstream.close()
