"""Reverse port forwards over the harness's SSH connection: a host service, reachable from the guest.

A service a test starts on the host (the Omaha update server) listens on the host's 127.0.0.1. The guest
reaches it at its own 127.0.0.1:<port>, where the guest's sshd listens on the harness's behalf and hands each
connection back over the SSH connection (`ssh -R`); the harness connects it to the host service. That works
the same on every platform whose machines the harness reaches by SSH: QEMU's user network, libvirt, clouds.

The forward lives as long as the SSH connection: `SSHConnection` asks for it again after every new login
(e.g. after a reboot). A guest that calls the service before the harness is back gets "connection refused"
and retries (the update agent does).

A guest restored from a snapshot taken while the harness was logged in still runs that old session, and its
listener holds the port, for as long as TCP keeps the dead connection (many minutes). So when the guest
refuses a forward, the harness ends the process of its own user that listens on the port (never the session
asking) and asks again, for up to `DENIED_PATIENCE` seconds, before the refusal is an error.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass

import paramiko

from harness.errors import SSHError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
DENIED_PATIENCE = 60.0
DENIED_INTERVAL = 1.0
_CHUNK = 65536


@dataclass(frozen=True)
class RemoteForward:
    """Guest `127.0.0.1:guest_port` -> host `host:host_port`."""

    guest_port: int
    host_port: int
    host: str = "127.0.0.1"

    def __str__(self) -> str:
        return f"guest 127.0.0.1:{self.guest_port} -> host {self.host}:{self.host_port}"


def request(transport: paramiko.Transport, forward: RemoteForward, patience: float = DENIED_PATIENCE) -> None:
    """Ask the guest's sshd to listen on its 127.0.0.1:guest_port for us. A refusal is asked again every
    second for `patience` seconds (a stale session of the harness's may still hold the port); raises
    SSHError if the guest still refuses (the port is taken for good, or its sshd forbids forwarding)."""

    def accept(channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
        # Called on paramiko's transport thread, which must not block: pump from a thread of its own.
        threading.Thread(
            target=_pump, args=(channel, forward), name=f"forward-{forward.guest_port}", daemon=True
        ).start()

    deadline = time.monotonic() + patience
    while True:
        try:
            port = transport.request_port_forward("127.0.0.1", forward.guest_port, handler=accept)
            break
        except paramiko.SSHException as exc:
            if not transport.is_active() or time.monotonic() + DENIED_INTERVAL > deadline:
                raise SSHError(
                    f"the guest refused the port forward {forward} (for {patience:.0f} s): {exc!r}"
                ) from exc
            log.info("forward %s refused (%s); ending a stale listener, asking again", forward, exc)
            end_stale_listener(transport, forward.guest_port)
            time.sleep(DENIED_INTERVAL)
        except (OSError, EOFError) as exc:
            raise SSHError(f"the guest refused the port forward {forward}: {exc!r}") from exc
    if port != forward.guest_port:
        raise SSHError(f"the guest forwarded port {port}, not {forward.guest_port} ({forward})")
    log.debug("forwarding %s", forward)


# Run in the guest as the harness's user (passwordless sudo, as on Flatcar: sshd's processes hide their
# sockets from their own user): the pid listening on the port, stopped unless it is this very session (the
# shell's parent is the session's sshd process).
_END_STALE_LISTENER = (
    "pid=$(sudo -n ss -Hltnp 'sport = :{port}' | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p' | head -n 1); "
    'if [ -n "$pid" ] && [ "$pid" != "$PPID" ]; then sudo -n kill "$pid" && echo "ended $pid"; fi'
)


def end_stale_listener(transport: paramiko.Transport, port: int, timeout: float = 30.0) -> str:
    """End the guest process of the harness's user that listens on 127.0.0.1:`port` (a session left over
    from before a snapshot was restored); returns what the guest said. Never raises."""
    try:
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.exec_command(_END_STALE_LISTENER.format(port=int(port)))
        output = b""
        while chunk := channel.recv(4096):
            output += chunk
        channel.close()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        log.debug("could not end a stale listener on port %d: %s", port, exc)
        return ""
    said = output.decode(errors="replace").strip()
    if said:
        log.info("guest port %d: %s (a stale session of the harness's)", port, said)
    return said


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
