"""Removal of libvirt machines: one domain at the end of its test, and what killed runs left (`railyard gc`).

A domain is Railyard's when it carries Railyard's `<metadata>` element. It is garbage when its owner process
(pid and start time, on this host) is gone, or when it is older than `--older-than`; a domain owned from
another host is judged by age only (6 h unless `--older-than` says otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from typing import Any

from harness.errors import PlatformError
from platforms.base import GarbageRequest
from platforms.libvirt.storage import BASE_PREFIX, delete_volume
from platforms.libvirt.xml import DOMAIN_PREFIX, METADATA_NS, OwnerRecord, parse_owner

log = logging.getLogger(__name__)

# virDomainUndefineFlags: also the NVRAM file, managed save images and snapshot metadata.
UNDEFINE_FLAGS = 0x1 | 0x2 | 0x4
VIR_DOMAIN_METADATA_ELEMENT = 2
FOREIGN_OWNER_AGE = 6 * 3600.0


def volume_names(name: str) -> tuple[str, str, str]:
    """The overlay, Ignition and console volumes of domain `name`."""
    return f"{name}.qcow2", f"{name}.ign", f"{name}.console"


def disk_volume_name(name: str, index: int) -> str:
    """The volume of extra disk `index` (1 for the first) of domain `name`."""
    return f"{name}.disk{index}.qcow2"


def disk_volumes(pool: Any, name: str) -> list[str]:
    """The extra disk volumes of domain `name` that the pool holds."""
    import libvirt

    pattern = re.compile(re.escape(name) + r"\.disk\d+\.qcow2")
    try:
        return sorted(v.name() for v in pool.listAllVolumes(0) if pattern.fullmatch(v.name()))
    except libvirt.libvirtError as exc:
        raise PlatformError(f"cannot list the volumes of pool {pool.name()}: {exc}") from exc


def pid_start_time(pid: int) -> int:
    """When process `pid` started (clock ticks after boot), 0 if it does not exist."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one small read
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def owner_alive(owner: OwnerRecord, host: str | None = None) -> bool | None:
    """Whether the process that created a domain still runs; None when it ran on another host."""
    if owner.owner_host != (host or socket.gethostname()):
        return None
    start = pid_start_time(owner.owner_pid)
    return start != 0 and (owner.owner_start == 0 or start == owner.owner_start)


def remove_domain(pool: Any | None, domain: Any, name: str, uri: str) -> None:
    """Stop and undefine a domain (with its NVRAM) and delete its volumes (if its pool still exists).
    Idempotent."""
    import libvirt

    errors: list[str] = []
    with contextlib.suppress(libvirt.libvirtError):
        if domain.isActive():
            domain.destroy()
    volumes: list[str] = []
    if pool is not None:
        volumes = list(volume_names(name))
        try:
            volumes += disk_volumes(pool, name)
        except PlatformError as exc:
            errors.append(str(exc))
    for volume in volumes:
        try:
            delete_volume(pool, volume)
        except PlatformError as exc:
            errors.append(str(exc))
    try:
        domain.undefineFlags(UNDEFINE_FLAGS)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            errors.append(f"cannot undefine {name}: {exc}")
    if errors:
        raise PlatformError(f"cleanup of domain {name} on {uri} was incomplete: {'; '.join(errors)}")


def domain_owner(domain: Any) -> OwnerRecord | None:
    """The Railyard owner record of a domain, None for a domain that is not Railyard's."""
    import libvirt

    try:
        text = domain.metadata(VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    except libvirt.libvirtError:
        return None
    return parse_owner(str(text))


def why_garbage(
    owner: OwnerRecord, older_than: float | None, now: float, host: str | None = None
) -> str | None:
    """Why a domain may be removed, or None when it must stay."""
    age = now - owner.created
    if older_than is not None and age >= older_than:
        return f"created {age / 60:.0f} min ago"
    alive = owner_alive(owner, host)
    if alive is False:
        return f"owner pid {owner.owner_pid} is gone"
    if alive is None and older_than is None and age >= FOREIGN_OWNER_AGE:
        return f"owned from {owner.owner_host} and created {age / 3600:.1f} h ago"
    return None


def collect_on(conn: Any, pool: Any | None, uri: str, request: GarbageRequest) -> list[str]:
    """Remove (or with dry_run, list) the garbage domains on one hypervisor, then volumes left without a
    domain. Volumes are listed before domains: a domain is always defined before its volumes are made, so a
    volume without a domain in the later listing belonged to one that is gone."""
    import libvirt

    lines: list[str] = []
    now = time.time()
    volumes: list[str] = []
    if pool is not None:
        with contextlib.suppress(libvirt.libvirtError):  # busy while a volume is uploaded: list what is known
            pool.refresh(0)
        volumes = [v.name() for v in pool.listAllVolumes(0)]
    domains = conn.listAllDomains(0)
    names = {d.name() for d in domains}
    for domain in domains:
        owner = domain_owner(domain)
        if owner is None:
            continue
        reason = why_garbage(owner, request.older_than, now)
        if reason is None:
            log.debug("%s: %s stays (run %s)", uri, domain.name(), owner.run_id)
            continue
        if request.dry_run:
            lines.append(f"would remove domain {domain.name()} on {uri} ({reason})")
            continue
        remove_domain(pool, domain, domain.name(), uri)
        lines.append(f"removed domain {domain.name()} on {uri} and its volumes ({reason})")
    for volume in volumes:
        if not volume.startswith(DOMAIN_PREFIX) or volume.startswith(BASE_PREFIX):
            continue
        if any(volume.startswith(f"{name}.") for name in names):
            continue
        if request.dry_run:
            lines.append(f"would remove volume {volume} on {uri} (its domain is gone)")
            continue
        if delete_volume(pool, volume):
            lines.append(f"removed volume {volume} on {uri} (its domain is gone)")
    return lines
