"""The Azure platform: machines are Azure VMs that get the Ignition config as custom data.

Resources live in one resource group per platform instance (see platforms.azure.launch for the layout); every
resource is tagged with the run id, its creation time and the test it serves, so `railyard gc --platform=azure`
deletes what a crashed run leaked. The SDK (azure-mgmt-*, azure-identity) is imported only when used.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import ConfigError, PlatformError
from images.metadata import read_metadata
from platforms.azure.clients import AzureClients, azure_errors, wait
from platforms.azure.launch import Launched, RunGroup, VMRequest, launch, teardown
from platforms.azure.naming import (
    TAG_CREATED,
    TAG_RUN,
    MachineNames,
    custom_data,
    machine_tags,
    parse_image,
    resource_group_name,
    run_tags,
    vm_name,
)
from platforms.azure.settings import AzureSettings, add_options, check_ssh_cidr, settings_from
from platforms.azure.vhd import BlobUploader, RestPageBlobUploader, convert_to_vhd, fetch_text
from platforms.base import (
    CAP_HOST_SERVICES,
    CAP_PRIVATE_NETWORK,
    GarbageRequest,
    Machine,
    MachineSpec,
    PlatformContext,
    SSHEndpoint,
    UploadRequest,
)
from platforms.cloud import CloudPlatform, iso_utc, parse_created, utc_now

__all__ = ["AzureMachine", "AzurePlatform"]

log = logging.getLogger(__name__)

DEFAULT_GC_AGE = 6 * 3600.0
CONSOLE_REFRESH = 10.0
STATE_REFRESH = 10.0
SAS_MINUTES = 60


def throwaway_ssh_key() -> str:
    """A public key nobody holds the private half of (Azure wants a key for the admin user)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class AzureMachine(Machine):
    def __init__(
        self, spec: MachineSpec, *, group: RunGroup, names: MachineNames, launched: Launched, host: str
    ) -> None:
        super().__init__(spec)
        self.group = group
        self.names = names
        self.launched = launched
        self.host = host
        self.gone = False
        self._lock = threading.Lock()
        self._console_at = float("-inf")
        self._state_at = float("-inf")
        self._running = True

    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        return SSHEndpoint(self.host, 22, self.spec.ssh_user)

    @property
    def private_address(self) -> str | None:
        """The NIC's address in the run's subnet (one virtual network per run: the machines reach each other
        on it, which Azure's default security rules allow)."""
        return self.launched.private_ip

    @property
    def console_path(self) -> Path:
        """The serial log from boot diagnostics, downloaded again when older than a few seconds."""
        if not self.gone and time.monotonic() - self._console_at >= CONSOLE_REFRESH:
            self.refresh_console()
        return self.spec.workdir / "console.txt"

    def refresh_console(self) -> bool:
        """Download the serial log into console.txt; False (and a log line) when Azure has none yet."""
        with self._lock:
            self._console_at = time.monotonic()
            compute = self.group.clients.compute
            try:
                with azure_errors(f"reading boot diagnostics of {self.names.vm}"):
                    data = compute.virtual_machines.retrieve_boot_diagnostics_data(
                        self.group.name, self.names.vm, sas_uri_expiration_time_in_minutes=SAS_MINUTES
                    )
                url = data.serial_console_log_blob_uri
                if not url:
                    return False
                text = fetch_text(self.group.clients.settings, url)
            except PlatformError as exc:
                log.debug("%s: no serial log yet: %s", self.name, exc)
                return False
            path = self.spec.workdir / "console.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return True

    def is_running(self) -> bool:
        if self.gone:
            return False
        if time.monotonic() - self._state_at < STATE_REFRESH:
            return self._running
        self._state_at = time.monotonic()
        try:
            with azure_errors(f"reading the state of {self.names.vm}"):
                view = self.group.clients.compute.virtual_machines.instance_view(
                    self.group.name, self.names.vm
                )
        except PlatformError as exc:
            log.debug("%s: state unknown: %s", self.name, exc)
            return self._running
        codes = [s.code or "" for s in view.statuses or []]
        power = [c for c in codes if c.startswith("PowerState/")]
        self._running = not power or power[-1] in ("PowerState/running", "PowerState/starting")
        return self._running

    def _require(self, action: str) -> None:
        if self.gone:
            raise PlatformError(f"cannot {action} {self.name}: its VM was deleted")

    def reset(self) -> None:
        """Restart the VM from the host (Azure offers no power cut; the guest gets no shutdown)."""
        self._require("reset")
        log.info("%s: restarting the VM", self.name)
        with azure_errors(f"restarting VM {self.names.vm}"):
            wait(
                self.group.clients.compute.virtual_machines.begin_restart(self.group.name, self.names.vm),
                self.group.timeout,
                f"restarting VM {self.names.vm}",
            )

    def poweroff(self, timeout: float) -> None:
        if self.gone:
            return
        vms = self.group.clients.compute.virtual_machines
        log.info("%s: powering off (up to %.0f s)", self.name, timeout)
        try:
            with azure_errors(f"powering off VM {self.names.vm}"):
                wait(
                    vms.begin_power_off(self.group.name, self.names.vm), timeout, f"powering off {self.name}"
                )
        except PlatformError as exc:
            log.warning("%s: %s; stopping it without a shutdown", self.name, exc)
            with azure_errors(f"stopping VM {self.names.vm}"):
                wait(
                    vms.begin_power_off(self.group.name, self.names.vm, skip_shutdown=True),
                    self.group.timeout,
                    f"stopping {self.name}",
                )
        self._running = False
        self._state_at = time.monotonic()

    def kill(self) -> None:
        """Keep the last serial log, then delete the VM, its NIC, public IP and disk. Idempotent."""
        if self.gone:
            return
        self.refresh_console()
        teardown(self.group, self.names)
        self.gone = True

    def access_hint(self) -> str:
        return f"ssh {self.spec.ssh_user}@{self.host}  (resource group {self.group.name}, VM {self.names.vm})"

    def artifacts(self) -> dict[str, str]:
        return {
            "azure.txt": f"resource group: {self.group.name}\nvm: {self.launched.vm_id}\n"
            f"public ip: {self.launched.public_ip or '-'}\nprivate ip: {self.launched.private_ip or '-'}\n"
        }

    def __repr__(self) -> str:
        return f"<AzureMachine {self.name} vm={self.names.vm} ssh={self.host}>"


class AzurePlatform(CloudPlatform):
    name: ClassVar[str] = "azure"
    size_option: ClassVar[str] = "--azure-vm-size"
    # Host services reach the guest through the harness's SSH connection, as everywhere.
    machine_capabilities: ClassVar[frozenset[str]] = frozenset({CAP_HOST_SERVICES, CAP_PRIVATE_NETWORK})

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self._settings: AzureSettings | None = None
        self._clients: AzureClients | None = None
        self._group: RunGroup | None = None
        self._setup_lock = threading.Lock()
        self._released = False
        self.created = utc_now()
        self.tags = run_tags(ctx.run_id, self.created)
        # One group per platform instance: xdist workers of a run never delete each other's machines.
        self.group_name = resource_group_name(ctx.run_id, secrets.token_hex(3))

    @classmethod
    def add_options(cls, group: argparse._ArgumentGroup | Any) -> None:
        add_options(group)

    @property
    def settings(self) -> AzureSettings:
        if self._settings is None:
            self._settings = settings_from(self.ctx.options)
        return self._settings

    def validate(self) -> None:
        settings = self.settings
        if not settings.private_ip:
            check_ssh_cidr(settings)
        parse_image(settings.image, "stable")

    def _run_group(self) -> RunGroup:
        with self._setup_lock:
            if self._group is None:
                settings = self.settings
                self._clients = AzureClients.connect(settings)
                cidr = None if settings.private_ip else check_ssh_cidr(settings)
                self._group = RunGroup(
                    self._clients,
                    self.group_name,
                    settings.location,
                    dict(self.tags),
                    ssh_cidr=cidr,
                    subnet=settings.subnet,
                )
            return self._group

    # -- machines -----------------------------------------------------------------------------------------

    def _boot(self, spec: MachineSpec) -> AzureMachine:
        settings = self.settings
        # Everything that can be wrong with the input fails here, before any request.
        data = custom_data(spec.ignition.text)
        keys = spec.ignition.ssh_keys(spec.ssh_user) or [throwaway_ssh_key()]
        image = parse_image(settings.image, spec.channel)
        names = MachineNames(vm_name(spec.name, secrets.token_hex(2)))
        tags = machine_tags(self.tags, spec.name, spec.test_id)
        spec.workdir.mkdir(parents=True, exist_ok=True)
        group = self._run_group()
        request = VMRequest(
            names=names,
            location=settings.location,
            tags=tags,
            vm_size=settings.vm_size,
            image=image,
            admin_user=spec.ssh_user,
            ssh_keys=keys,
            custom_data=data,
        )
        launched = launch(group, request, public_ip=not settings.private_ip)
        host = launched.private_ip if settings.private_ip else launched.public_ip
        machine = AzureMachine(spec, group=group, names=names, launched=launched, host=host or "")
        if not host:
            machine.kill()
            raise PlatformError(
                f"Azure gave VM {names.vm} no {'private' if settings.private_ip else 'public'} "
                "address; see the resource group in the Azure portal"
            )
        log.info("%s: VM %s up at %s", spec.name, names.vm, host)
        return machine

    def _destroy(self, machine: Machine) -> None:
        if not isinstance(machine, AzureMachine):
            raise PlatformError(f"{machine!r} was not booted by the azure platform")
        machine.kill()

    def release(self, machine: Machine) -> None:
        super().release(machine)
        self._released = True

    def close(self) -> None:
        """Delete the resource group (and so every machine in it), unless a machine was kept for a person.
        When that fails the error names the group and the clients stay open, so that close can be tried
        again."""
        if self._released or self._group is None:
            super().close()
            if self._group is not None and self._group.created:
                log.warning(
                    "azure: resource group %s is left for the machines kept running; delete it with "
                    "`az group delete -n %s` or `railyard gc --platform=azure`",
                    self.group_name,
                    self.group_name,
                )
        else:
            for machine in self.machines:
                if isinstance(machine, AzureMachine) and not machine.gone:
                    machine.refresh_console()
                    machine.gone = True
                with self._lock:
                    self._machines.remove(machine)
            self._group.delete()
        if self._clients is not None:
            self._clients.close()

    # -- garbage --------------------------------------------------------------------------------------------

    @classmethod
    def collect_garbage(cls, request: GarbageRequest) -> list[str]:
        """Delete resource groups tagged `railyard-run` whose `railyard-created` is older than the limit."""
        settings = settings_from(request.options, need_location=False)
        limit = DEFAULT_GC_AGE if request.older_than is None else request.older_than
        cutoff = utc_now() - datetime.timedelta(seconds=limit)
        clients = AzureClients.connect(settings)
        try:
            with azure_errors("listing resource groups"):
                groups = list(clients.resources.resource_groups.list(filter=f"tagName eq '{TAG_RUN}'"))
            doomed: list[tuple[str, str]] = []
            for group in groups:
                tags = group.tags or {}
                created = parse_created(tags.get(TAG_CREATED))
                if TAG_RUN not in tags or created is None or not group.name:
                    log.info("azure: skipping %s: no readable %s tag", group.name, TAG_CREATED)
                    continue
                if created <= cutoff:
                    doomed.append((group.name, f"run {tags[TAG_RUN]}, created {iso_utc(created)}"))
            if request.dry_run:
                return [f"would delete resource group {name} ({why})" for name, why in doomed]
            pollers = []
            for name, why in doomed:
                with azure_errors(f"deleting resource group {name}"):
                    pollers.append((name, why, clients.resources.resource_groups.begin_delete(name)))
            lines = []
            for name, why, poller in pollers:
                with azure_errors(f"deleting resource group {name}"):
                    wait(poller, settings.operation_timeout, f"deleting resource group {name}")
                lines.append(f"deleted resource group {name} ({why})")
            return lines
        finally:
            clients.close()

    # -- images ---------------------------------------------------------------------------------------------

    @classmethod
    def blob_uploader(cls, settings: AzureSettings, clients: AzureClients) -> BlobUploader:
        """How VHDs reach blob storage (a seam: the REST uploader needs no storage SDK)."""
        return RestPageBlobUploader(settings, clients.credential)

    @classmethod
    def upload_image(cls, request: UploadRequest) -> str:
        """Convert to a fixed VHD, upload it as a page blob, make a managed image of it; returns the image id."""
        from azure.mgmt.compute.models import Image, ImageOSDisk, ImageProperties, ImageStorageProfile
        from azure.mgmt.resource.resources.models import ResourceGroup

        settings = settings_from(request.options)
        settings.blob_base  # noqa: B018 - fails early without a storage account
        if not request.image.is_file():
            raise ConfigError(f"image {request.image}: no such file")
        meta = read_metadata(request.image)
        generation = "V2" if (meta.firmware if meta else "uefi") == "uefi" else "V1"
        tags = {k: v for k, v in request.metadata.items() if v}
        tags[TAG_CREATED] = iso_utc(utc_now())
        clients = AzureClients.connect(settings)
        workdir = Path(tempfile.mkdtemp(prefix=".railyard-vhd-", dir=request.image.parent))
        try:
            vhd = convert_to_vhd(request.image, workdir / f"{request.name}.vhd")
            url = cls.blob_uploader(settings, clients).upload_page_blob(
                vhd, settings.storage_container, f"{request.name}.vhd"
            )
            with azure_errors(f"creating resource group {settings.image_group}"):
                clients.resources.resource_groups.create_or_update(
                    settings.image_group,
                    ResourceGroup(location=settings.location, tags={"railyard-purpose": "images"}),
                )
            image = Image(
                location=settings.location,
                tags=tags,
                properties=ImageProperties(
                    hyper_v_generation=generation,
                    storage_profile=ImageStorageProfile(
                        os_disk=ImageOSDisk(
                            os_type="Linux", os_state="Generalized", blob_uri=url, caching="ReadWrite"
                        )
                    ),
                ),
            )
            with azure_errors(f"creating image {request.name}"):
                created = wait(
                    clients.compute.images.begin_create_or_update(settings.image_group, request.name, image),
                    settings.operation_timeout,
                    f"creating image {request.name}",
                )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            clients.close()
        log.info("azure: image %s (%s) made from %s", request.name, generation, url)
        return created.id or request.name
