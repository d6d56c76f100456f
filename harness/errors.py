"""The one error hierarchy of Railyard. Messages say what was wrong and what to do."""

from __future__ import annotations


class RailyardError(Exception):
    """Base of every error Railyard raises on purpose."""


class ConfigError(RailyardError):
    """Bad input from the user: options, markers, Ignition, images. Raised before any boot."""


class ImageError(RailyardError):
    """An image could not be built, found or read."""


class FetchError(ImageError):
    """A released image could not be downloaded or verified (signature, digests, a cut-off download)."""


class BootError(RailyardError):
    """A machine did not boot, or did not become reachable in time."""


class SSHError(RailyardError):
    """The SSH transport failed (not a command that exited non-zero)."""


class SessionLost(SSHError):
    """The SSH connection ended while a command the guest had been sent ran, before its exit status came
    (the command may have run: a reboot ends the session that asked for it)."""


class WaitTimeout(RailyardError):
    """A condition polled for did not become true in time."""


class CommandError(RailyardError):
    """A command run in the guest exited with an unexpected status."""

    def __init__(self, command: str, status: int, stdout: str, stderr: str, machine: str = "") -> None:
        self.command = command
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.machine = machine
        where = f" on {machine}" if machine else ""
        super().__init__(
            f"command failed{where} with exit status {status}: {command}\n"
            f"--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


class UpdateError(RailyardError):
    """An OS update did not go as the test expected."""


class PlatformError(RailyardError):
    """A platform (QEMU, libvirt, a cloud) failed to create, control or delete a resource."""


class CheckpointError(PlatformError):
    """A saved checkpoint cannot be restored (damaged, truncated, made by another QEMU): the harness drops it
    and boots the machine cold instead."""


class ConsoleCheckError(RailyardError):
    """The console or journal of a machine showed a known failure pattern."""
