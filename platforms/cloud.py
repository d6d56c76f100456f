"""What the cloud platforms (AWS, Azure) share: how they are accelerated and timed, and the time tags of the
resources they create."""

from __future__ import annotations

import datetime
from typing import ClassVar

from harness.acceleration import CLOUD, Acceleration, Timeouts
from harness.errors import ConfigError
from platforms.base import OPTION_DISKS, OPTION_FIRMWARE, OPTION_KARGS, OPTION_MEMORY, OPTION_NICS, Platform

# A cloud machine boots on a hypervisor with hardware virtualization, whatever the runner has: its waits do
# not scale with this host's acceleration. Instance start, firmware and the first boot's provisioning take
# minutes on the slower instance types; a reboot skips provisioning.
CLOUD_BOOT_TIMEOUT = 600.0
CLOUD_REBOOT_TIMEOUT = 420.0
CLOUD_COMMAND_TIMEOUT = 120.0
CLOUD_SETTLE_TIMEOUT = 180.0
CLOUD_RESTART_TIMEOUT = 120.0


class CloudPlatform(Platform):
    """A platform whose machines run in a cloud: not on this host's cores, from an image the cloud holds."""

    local: ClassVar[bool] = False
    uses_local_image: ClassVar[bool] = False

    # The option that sets a machine's size on this cloud, named when shape options are refused.
    size_option: ClassVar[str] = ""

    @classmethod
    def check_shape(cls, given: list[str]) -> None:
        if given:
            raise ConfigError(
                f"{', '.join(given)}: not for --platform={cls.name}, where the instance type sets a machine's "
                f"size ({cls.size_option}) and the image its firmware"
            )

    @classmethod
    def machine_option_refusal(cls, option: str) -> str | None:
        """Machine options as the shape options: the instance type sets the size and the image its firmware
        and kernel command line; a machine has its OS disk and one NIC in the run's network."""
        if option in cls.machine_options:
            return None
        why = {
            OPTION_MEMORY: f"the instance type sets a machine's memory ({cls.size_option})",
            OPTION_FIRMWARE: "the image sets a machine's firmware",
            OPTION_DISKS: "machines get no extra disks",
            OPTION_NICS: "machines get no extra NICs (each has one, in the run's network)",
            OPTION_KARGS: "the registered image sets the kernel command line",
        }.get(option, "machines cannot have it")
        return f"@pytest.mark.{option}: on {cls.name}, {why}"

    @classmethod
    def acceleration(cls, requested: str) -> Acceleration:
        return CLOUD

    @classmethod
    def default_timeouts(cls, accel: Acceleration, boot: float | None) -> Timeouts:
        return Timeouts.fixed(
            boot=CLOUD_BOOT_TIMEOUT,
            reboot=CLOUD_REBOOT_TIMEOUT,
            command=CLOUD_COMMAND_TIMEOUT,
            settle=CLOUD_SETTLE_TIMEOUT,
            restart=CLOUD_RESTART_TIMEOUT,
            given=boot,
        )


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso_utc(moment: datetime.datetime) -> str:
    """`2024-05-01T12:00:00Z`: ISO-8601, UTC, whole seconds (the form of the `railyard-created` tag)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_created(value: str | None) -> datetime.datetime | None:
    """The time in a `railyard-created` tag, or None when it is missing, not a time, or has no zone.

    Railyard always writes the zone; a time without one was written by someone else and cannot be compared
    safely, so garbage collection leaves what carries it alone.
    """
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
