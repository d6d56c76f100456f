"""Storage of libvirt machines, through libvirt's storage API only, so that a remote hypervisor works the same.

Each hypervisor has one Railyard pool (a directory pool named `railyard` unless `--libvirt-pool` says
otherwise). The base image is uploaded into it once per image file (a volume named by a hash of the file's path,
size and mtime, completed by a `.ready` marker volume); each machine gets an overlay volume backed by it, a raw
volume with its Ignition config and a volume virtlogd appends the serial console to.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import logging
import os
import pwd
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from filelock import FileLock

from harness.errors import ConfigError, ImageError, PlatformError
from harness.ssh_jump import JumpAddress
from platforms.libvirt.xml import pool_xml, volume_xml

log = logging.getLogger(__name__)

DEFAULT_POOL = "railyard"
SYSTEM_POOL_DIR = Path("/var/lib/libvirt/images/railyard")
SESSION_POOL_SUBDIR = Path(".local/share/libvirt/images/railyard")
BASE_PREFIX = "railyard-base-"
READY_SUFFIX = ".ready"
CHUNK = 1 << 20
MIB = 1 << 20
UPLOAD_LOCK_TIMEOUT = 1800.0


SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
"""libvirt's transports over SSH: Railyard reaches the guests of such a hypervisor through the same host."""


@dataclass(frozen=True)
class HypervisorAddress:
    """What a libvirt URI says about where the hypervisor is, and how libvirt logs in to it over SSH."""

    uri: str
    local: bool
    session: bool
    host: str
    socket: Path | None
    transport: str = ""
    user: str | None = None
    port: int | None = None
    keyfile: Path | None = None
    known_hosts: Path | None = None
    no_verify: bool = False

    @property
    def over_ssh(self) -> bool:
        return not self.local and self.transport in SSH_TRANSPORTS

    def jump_address(self) -> JumpAddress | None:
        """How the harness logs in to this hypervisor's host to reach its guests' forwarded ports: the
        URI's user (else this user), port, `keyfile=`, `known_hosts=` and `no_verify=1`, as libvirt's SSH
        transports read them. None for a hypervisor on this host."""
        if not self.over_ssh:
            return None
        return JumpAddress(
            host=self.host,
            user=self.user or getpass.getuser(),
            port=self.port or 22,
            key_file=self.keyfile,
            known_hosts=self.known_hosts,
            verify_host_key=not self.no_verify,
        )


def parse_uri(uri: str) -> HypervisorAddress:
    """Whether `uri` names a hypervisor on this host (no host part, unix transport), its mode, and for a
    remote one the SSH parameters libvirt reads from it (`user@host:port`, `keyfile=`, `known_hosts=`,
    `no_verify=`)."""
    parts = urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    if not driver:
        raise ConfigError(f"--libvirt-uri {uri!r} is not a libvirt URI (e.g. qemu:///system)")
    if driver != "qemu":
        raise ConfigError(f"--libvirt-uri {uri!r}: only the qemu driver is supported (qemu:///system...)")
    path = parts.path.rstrip("/")
    if path not in ("/system", "/session"):
        raise ConfigError(f"--libvirt-uri {uri!r}: the path must be /system or /session")
    host = parts.hostname or ""
    local = not host and transport in ("", "unix")
    query = parse_qs(parts.query)

    def param(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    socket_value, keyfile, known_hosts = param("socket"), param("keyfile"), param("known_hosts")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--libvirt-uri {uri!r}: {exc}") from None
    return HypervisorAddress(
        uri=uri,
        local=local,
        session=path == "/session",
        host=host,
        socket=Path(socket_value) if socket_value else None,
        transport=transport,
        user=unquote(parts.username) if parts.username else None,
        port=port,
        keyfile=Path(keyfile).expanduser() if keyfile else None,
        known_hosts=Path(known_hosts).expanduser() if known_hosts else None,
        no_verify=param("no_verify") == "1",
    )


def default_pool_dir(address: HypervisorAddress) -> Path | None:
    """Where Railyard creates its pool when the hypervisor has none: libvirt's image dir for a system
    daemon; under the home of the daemon's user for a local session daemon (the owner of its socket).
    None for a remote session daemon, whose user's home is unknown here."""
    if not address.session:
        return SYSTEM_POOL_DIR
    if not address.local:
        return None
    uid = address.socket.stat().st_uid if address.socket is not None else os.getuid()
    return Path(pwd.getpwuid(uid).pw_dir) / SESSION_POOL_SUBDIR


def ensure_pool(conn: Any, address: HypervisorAddress, name: str) -> Any:
    """The named pool, defined (as a directory pool at the default place), built and started if needed."""
    import libvirt

    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        directory = default_pool_dir(address)
        if directory is None:
            raise ConfigError(
                f"{address.uri} has no storage pool {name!r} and Railyard cannot tell where the session "
                f"user's files go: define one there (virsh -c {address.uri} pool-define-as {name} dir "
                f"--target DIR && virsh -c {address.uri} pool-build {name}), or pass --libvirt-pool"
            ) from None
        log.info("%s: defining storage pool %s at %s", address.uri, name, directory)
        try:
            pool = conn.storagePoolDefineXML(pool_xml(name, directory), 0)
            pool.build(0)
            pool.setAutostart(1)
        except libvirt.libvirtError as exc:
            # Another process may have defined it at the same moment.
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                raise PlatformError(f"cannot create storage pool {name} on {address.uri}: {exc}") from exc
    try:
        if not pool.isActive():
            _start_pool(pool)
    except libvirt.libvirtError as exc:
        if not pool.isActive():
            raise PlatformError(f"cannot start storage pool {name} on {address.uri}: {exc}") from exc
    return pool


def _start_pool(pool: Any) -> None:
    """Start an inactive pool. A directory pool whose directory is gone (removed by hand, or a host whose
    /var/lib/libvirt was reset while /etc/libvirt kept the definition) is built again first: for a
    directory pool that only makes the directory. Other pool types are never built here (that formats)."""
    import libvirt

    try:
        pool.create(0)
    except libvirt.libvirtError:
        if ET.fromstring(pool.XMLDesc(0)).get("type") != "dir" or pool.isActive():
            raise
        log.info("storage pool %s: building its directory again", pool.name())
        pool.build(0)
        pool.create(0)


def pool_directory(pool: Any) -> Path | None:
    path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
    return Path(path) if path else None


@dataclass(frozen=True)
class LocalImage:
    path: Path
    fmt: str
    virtual_size: int
    file_size: int
    key: str

    @property
    def volume_name(self) -> str:
        return f"{BASE_PREFIX}{self.key}.{self.fmt}"


def inspect_image(path: Path) -> LocalImage:
    """Format and sizes of a local disk image, and a key that changes when the file does."""
    try:
        done = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        info = json.loads(done.stdout)
        fmt, virtual_size = str(info["format"]), int(info["virtual-size"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        raise ImageError(f"cannot read image {path} with qemu-img: {exc}") from exc
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return LocalImage(path, fmt, virtual_size, stat.st_size, key)


def _lookup(pool: Any, name: str) -> Any | None:
    import libvirt

    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def upload(conn: Any, volume: Any, source: BinaryIO, size: int) -> None:
    """Write `size` bytes from `source` into `volume` through a libvirt stream."""
    import libvirt

    stream = conn.newStream(0)
    try:
        volume.upload(stream, 0, size, 0)
        stream.sendAll(lambda _stream, nbytes, src: src.read(min(nbytes, CHUNK)), source)
        stream.finish()
    except libvirt.libvirtError as exc:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise PlatformError(f"upload to volume {volume.name()} failed: {exc}") from exc


def base_volume(conn: Any, pool: Any, uri: str, image: LocalImage) -> Any:
    """The pool's copy of `image`, uploaded the first time any process of this host needs it there."""
    import libvirt

    ready = image.volume_name + READY_SUFFIX
    digest = hashlib.sha256(f"{uri}\0{pool.name()}\0{image.volume_name}".encode()).hexdigest()[:16]
    lock = FileLock(str(Path(tempfile.gettempdir()) / f"railyard-libvirt-upload-{digest}.lock"))
    with lock.acquire(timeout=UPLOAD_LOCK_TIMEOUT):
        volume = _lookup(pool, image.volume_name)
        if volume is not None and _lookup(pool, ready) is not None:
            return volume
        if volume is not None:  # an upload that did not finish
            volume.delete(0)
        log.info("%s: uploading %s to pool %s (%d MiB)", uri, image.path.name, pool.name(),
                 image.file_size >> 20)  # fmt: skip
        try:
            volume = pool.createXML(volume_xml(image.volume_name, capacity=image.file_size), 0)
            with image.path.open("rb") as source:
                upload(conn, volume, source, image.file_size)
            pool.createXML(volume_xml(ready, capacity=0), 0)
        except (libvirt.libvirtError, OSError) as exc:
            leftover = _lookup(pool, image.volume_name)
            if leftover is not None:
                leftover.delete(0)
            raise PlatformError(
                f"cannot copy image {image.path} into pool {pool.name()} on {uri}: {exc}"
            ) from exc
        return volume


def create_raw(conn: Any, pool: Any, name: str, data: bytes, mode: str = "0644") -> Any:
    """A raw volume holding `data` (empty when `data` is)."""
    import libvirt

    try:
        volume = pool.createXML(volume_xml(name, capacity=len(data), mode=mode), 0)
    except libvirt.libvirtError as exc:
        raise PlatformError(f"cannot create volume {name} in pool {pool.name()}: {exc}") from exc
    if data:
        upload(conn, volume, io.BytesIO(data), len(data))
    return volume


def create_blank(pool: Any, name: str, size_mib: int) -> Any:
    """An empty qcow2 volume of `size_mib` MiB (an extra disk of a machine)."""
    import libvirt

    xml = volume_xml(name, capacity=size_mib * MIB, fmt="qcow2", mode="0600")
    try:
        return pool.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise PlatformError(f"cannot create disk {name} in pool {pool.name()}: {exc}") from exc


def create_overlay(pool: Any, name: str, base: Any, image: LocalImage) -> Any:
    """A qcow2 volume backed by `base` (which is never written)."""
    import libvirt

    xml = volume_xml(
        name,
        capacity=image.virtual_size,
        fmt="qcow2",
        backing=Path(base.path()),
        backing_format=image.fmt,
        mode="0600",
    )
    try:
        return pool.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise PlatformError(f"cannot create overlay {name} in pool {pool.name()}: {exc}") from exc


def delete_volume(pool: Any, name: str) -> bool:
    """Delete a volume if it exists; True when one was deleted."""
    import libvirt

    volume = _lookup(pool, name)
    if volume is None:
        return False
    try:
        volume.delete(0)
    except libvirt.libvirtError as exc:
        if _lookup(pool, name) is not None:
            raise PlatformError(f"cannot delete volume {name} in pool {pool.name()}: {exc}") from exc
    return True


def read_volume(conn: Any, volume: Any, offset: int, local: bool) -> bytes:
    """The bytes of `volume` from `offset` to its end: read in place when the hypervisor is this host and
    the file is readable, else downloaded through a libvirt stream."""
    import libvirt

    if local:
        try:
            with open(volume.path(), "rb") as f:
                f.seek(offset)
                return f.read()
        except PermissionError:
            pass
    chunks: list[bytes] = []
    stream = conn.newStream(0)
    try:
        volume.download(stream, offset, 0, 0)
        stream.recvAll(lambda _stream, data, out: out.append(data), chunks)
        stream.finish()
    except libvirt.libvirtError as exc:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise PlatformError(f"cannot read volume {volume.name()}: {exc}") from exc
    return b"".join(chunks)
