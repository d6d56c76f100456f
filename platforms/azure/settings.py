"""The options of the Azure platform and the settings they make (checked before any request)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harness.errors import ConfigError
from platforms.azure.naming import DEFAULT_IMAGE

DEFAULT_VM_SIZE = "Standard_D2s_v5"
DEFAULT_OPERATION_TIMEOUT = 900.0
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_CONTAINER = "railyard-vhds"
DEFAULT_IMAGE_GROUP = "railyard-images"


def add_options(group: argparse._ArgumentGroup | Any) -> None:
    # A pytest OptionGroup has `addoption`; a plain argparse group has `add_argument`.
    add = getattr(group, "addoption", None) or group.add_argument
    add(
        "--azure-subscription", dest="azure_subscription", default=None, metavar="ID",
        help="Azure subscription id (default: $AZURE_SUBSCRIPTION_ID)",
    )  # fmt: skip
    add(
        "--azure-location", dest="azure_location", default=None, metavar="REGION",
        help="Azure region of the machines, e.g. westeurope (default: $AZURE_LOCATION)",
    )  # fmt: skip
    add(
        "--azure-vm-size", dest="azure_vm_size", default=DEFAULT_VM_SIZE, metavar="SIZE",
        help=f"Azure VM size (default: {DEFAULT_VM_SIZE})",
    )  # fmt: skip
    add(
        "--azure-image", dest="azure_image", default=DEFAULT_IMAGE, metavar="URN|ID",
        help="marketplace URN publisher:offer:sku:version ({channel} is replaced) or a managed/gallery "
        f"image id (default: {DEFAULT_IMAGE})",
    )  # fmt: skip
    add(
        "--azure-ssh-cidr", dest="azure_ssh_cidr", default=None, metavar="CIDR",
        help="the only addresses allowed to reach SSH of the machines, e.g. 203.0.113.7/32",
    )  # fmt: skip
    add(
        "--azure-private-ip", dest="azure_private_ip", action="store_true", default=False,
        help="give machines no public IP and connect to their private address (the runner must reach "
        "the subnet, see --azure-subnet)",
    )  # fmt: skip
    add(
        "--azure-subnet", dest="azure_subnet", default=None, metavar="ID",
        help="resource id of an existing subnet for the machines (default: a virtual network per run)",
    )  # fmt: skip
    add(
        "--azure-arm-endpoint", dest="azure_arm_endpoint", default=None, metavar="URL",
        help="Azure Resource Manager endpoint (default: the public cloud's)",
    )  # fmt: skip
    add(
        "--azure-ca-bundle", dest="azure_ca_bundle", default=None, metavar="PEM",
        help="CA certificates to trust for Azure endpoints (default: $REQUESTS_CA_BUNDLE, else the system's)",
    )  # fmt: skip
    add(
        "--azure-operation-timeout", dest="azure_operation_timeout", type=float,
        default=DEFAULT_OPERATION_TIMEOUT, metavar="SECONDS",
        help=f"how long one Azure operation may take (default: {DEFAULT_OPERATION_TIMEOUT:.0f})",
    )  # fmt: skip
    add(
        "--azure-poll-interval", dest="azure_poll_interval", type=float, default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help="seconds between polls of a long-running operation when Azure suggests none "
        f"(default: {DEFAULT_POLL_INTERVAL:.0f})",
    )  # fmt: skip
    add(
        "--azure-storage-account", dest="azure_storage_account", default=None, metavar="NAME",
        help="storage account that receives uploaded VHDs (image upload)",
    )  # fmt: skip
    add(
        "--azure-storage-container", dest="azure_storage_container", default=DEFAULT_CONTAINER,
        metavar="NAME", help=f"blob container of uploaded VHDs (default: {DEFAULT_CONTAINER})",
    )  # fmt: skip
    add(
        "--azure-blob-endpoint", dest="azure_blob_endpoint", default=None, metavar="URL",
        help="blob service endpoint (default: https://<storage account>.blob.core.windows.net)",
    )  # fmt: skip
    add(
        "--azure-image-group", dest="azure_image_group", default=DEFAULT_IMAGE_GROUP, metavar="NAME",
        help=f"resource group of uploaded images (default: {DEFAULT_IMAGE_GROUP}; never collected by gc)",
    )  # fmt: skip


@dataclass(frozen=True)
class AzureSettings:
    subscription: str
    location: str
    vm_size: str = DEFAULT_VM_SIZE
    image: str = DEFAULT_IMAGE
    ssh_cidr: str | None = None
    private_ip: bool = False
    subnet: str | None = None
    arm_endpoint: str | None = None
    ca_bundle: str | None = None
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    storage_account: str | None = None
    storage_container: str = DEFAULT_CONTAINER
    blob_endpoint: str | None = None
    image_group: str = DEFAULT_IMAGE_GROUP

    @property
    def blob_base(self) -> str:
        """The blob service URL of the storage account (for image upload)."""
        if self.blob_endpoint:
            return self.blob_endpoint.rstrip("/")
        if not self.storage_account:
            raise ConfigError("image upload needs --azure-storage-account (an account that takes page blobs)")
        return f"https://{self.storage_account}.blob.core.windows.net"


def _get(options: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = options.get(name)
    return default if value is None else value


def settings_from(options: Mapping[str, Any], *, need_location: bool = True) -> AzureSettings:
    """Settings from command-line options (and AZURE_* environment variables); ConfigError if unusable."""
    subscription = _get(options, "azure_subscription") or os.environ.get("AZURE_SUBSCRIPTION_ID", "")
    if not subscription:
        raise ConfigError("no Azure subscription: give --azure-subscription=ID or set AZURE_SUBSCRIPTION_ID")
    location = _get(options, "azure_location") or os.environ.get("AZURE_LOCATION", "")
    if need_location and not location:
        raise ConfigError("no Azure region: give --azure-location (e.g. westeurope) or set AZURE_LOCATION")
    settings = AzureSettings(
        subscription=str(subscription),
        location=str(location),
        vm_size=str(_get(options, "azure_vm_size", DEFAULT_VM_SIZE)),
        image=str(_get(options, "azure_image", DEFAULT_IMAGE)),
        ssh_cidr=_get(options, "azure_ssh_cidr"),
        private_ip=bool(_get(options, "azure_private_ip", False)),
        subnet=_get(options, "azure_subnet"),
        arm_endpoint=_get(options, "azure_arm_endpoint"),
        ca_bundle=_get(options, "azure_ca_bundle"),
        operation_timeout=float(_get(options, "azure_operation_timeout", DEFAULT_OPERATION_TIMEOUT)),
        poll_interval=float(_get(options, "azure_poll_interval", DEFAULT_POLL_INTERVAL)),
        storage_account=_get(options, "azure_storage_account"),
        storage_container=str(_get(options, "azure_storage_container", DEFAULT_CONTAINER)),
        blob_endpoint=_get(options, "azure_blob_endpoint"),
        image_group=str(_get(options, "azure_image_group", DEFAULT_IMAGE_GROUP)),
    )
    _check(settings)
    return settings


def _check(settings: AzureSettings) -> None:
    for name, url in (
        ("--azure-arm-endpoint", settings.arm_endpoint),
        ("--azure-blob-endpoint", settings.blob_endpoint),
    ):
        if url and urlparse(url).scheme != "https":
            raise ConfigError(f"{name}={url}: Azure endpoints must be https:// URLs (tokens go over them)")
    if settings.ca_bundle and not Path(settings.ca_bundle).is_file():
        raise ConfigError(f"--azure-ca-bundle={settings.ca_bundle}: no such file")
    if settings.operation_timeout <= 0:
        raise ConfigError("--azure-operation-timeout must be positive")
    if settings.poll_interval < 0:
        raise ConfigError("--azure-poll-interval must not be negative")


def check_ssh_cidr(settings: AzureSettings) -> str:
    """The CIDR SSH is allowed from, normalized; ConfigError when missing or malformed."""
    if not settings.ssh_cidr:
        raise ConfigError(
            "give --azure-ssh-cidr: the addresses allowed to reach SSH of the machines (e.g. your public "
            "address as 203.0.113.7/32); Railyard never opens SSH to the whole Internet"
        )
    try:
        network = ipaddress.ip_network(settings.ssh_cidr, strict=False)
    except ValueError as exc:
        raise ConfigError(f"--azure-ssh-cidr={settings.ssh_cidr}: {exc}") from exc
    if network.prefixlen == 0:
        raise ConfigError(
            f"--azure-ssh-cidr={settings.ssh_cidr} opens SSH to everyone: give a narrower range"
        )
    return str(network)
