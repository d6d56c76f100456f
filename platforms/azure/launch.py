"""What the Azure platform creates, as SDK models, and the order it creates and deletes it in.

Design: one resource group per platform instance (one pytest process) of a run, created at the first boot and
deleted by `close()`. It holds the shared network (a network security group that lets only --azure-ssh-cidr
reach port 22, and a virtual network with one subnet, so the machines of a cluster reach each other) and, per
machine, a public IP, a NIC, the VM and its OS disk. `destroy`/`kill` deletes one machine's resources; a launch
that fails half-way deletes what it made before the error goes up. Deleting the group removes everything at
once, and its tags let `railyard gc` find it after a crash.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import PlatformError
from platforms.azure.clients import AzureClients, azure_errors, is_not_found, wait
from platforms.azure.naming import ImageRef, MachineNames, MarketplaceImage

if TYPE_CHECKING:
    from azure.mgmt.compute.models import VirtualMachine
    from azure.mgmt.network.models import (
        NetworkInterface,
        NetworkSecurityGroup,
        PublicIPAddress,
        VirtualNetwork,
    )

log = logging.getLogger(__name__)

NSG_NAME = "railyard-nsg"
VNET_NAME = "railyard-vnet"
SUBNET_NAME = "machines"
VNET_PREFIX = "10.77.0.0/16"
SUBNET_PREFIX = "10.77.0.0/24"
SSH_RULE_NAME = "ssh-from-cidr"
OS_DISK_TYPE = "StandardSSD_LRS"


# -- models ---------------------------------------------------------------------------------------------------


def nsg_model(location: str, tags: dict[str, str], ssh_cidr: str | None) -> NetworkSecurityGroup:
    """Inbound: TCP 22 from `ssh_cidr` only (Azure's default rules deny the rest from the Internet)."""
    from azure.mgmt.network.models import (
        NetworkSecurityGroup,
        NetworkSecurityGroupPropertiesFormat,
        SecurityRule,
        SecurityRulePropertiesFormat,
    )

    rules = []
    if ssh_cidr:
        rules.append(
            SecurityRule(
                name=SSH_RULE_NAME,
                properties=SecurityRulePropertiesFormat(
                    protocol="Tcp",
                    access="Allow",
                    direction="Inbound",
                    priority=100,
                    source_address_prefix=ssh_cidr,
                    source_port_range="*",
                    destination_address_prefix="*",
                    destination_port_range="22",
                    description="SSH from the test runner",
                ),
            )
        )
    return NetworkSecurityGroup(
        location=location, tags=tags, properties=NetworkSecurityGroupPropertiesFormat(security_rules=rules)
    )


def vnet_model(location: str, tags: dict[str, str]) -> VirtualNetwork:
    from azure.mgmt.network.models import (
        AddressSpace,
        Subnet,
        SubnetPropertiesFormat,
        VirtualNetwork,
        VirtualNetworkPropertiesFormat,
    )

    return VirtualNetwork(
        location=location,
        tags=tags,
        properties=VirtualNetworkPropertiesFormat(
            address_space=AddressSpace(address_prefixes=[VNET_PREFIX]),
            subnets=[
                Subnet(name=SUBNET_NAME, properties=SubnetPropertiesFormat(address_prefix=SUBNET_PREFIX))
            ],
        ),
    )


def public_ip_model(location: str, tags: dict[str, str]) -> PublicIPAddress:
    from azure.mgmt.network.models import PublicIPAddress, PublicIPAddressPropertiesFormat, PublicIPAddressSku

    return PublicIPAddress(
        location=location,
        tags=tags,
        sku=PublicIPAddressSku(name="Standard"),
        properties=PublicIPAddressPropertiesFormat(
            public_ip_allocation_method="Static", public_ip_address_version="IPv4"
        ),
    )


def nic_model(
    location: str, tags: dict[str, str], subnet_id: str, nsg_id: str, public_ip_id: str | None
) -> NetworkInterface:
    from azure.mgmt.network.models import (
        NetworkInterface,
        NetworkInterfaceIPConfiguration,
        NetworkInterfaceIPConfigurationPropertiesFormat,
        NetworkInterfacePropertiesFormat,
        NetworkSecurityGroup,
        PublicIPAddress,
        Subnet,
    )

    ip_config = NetworkInterfaceIPConfigurationPropertiesFormat(
        subnet=Subnet(id=subnet_id),
        private_ip_allocation_method="Dynamic",
        primary=True,
        public_ip_address=PublicIPAddress(id=public_ip_id) if public_ip_id else None,
    )
    return NetworkInterface(
        location=location,
        tags=tags,
        properties=NetworkInterfacePropertiesFormat(
            network_security_group=NetworkSecurityGroup(id=nsg_id),
            ip_configurations=[NetworkInterfaceIPConfiguration(name="ipconfig1", properties=ip_config)],
        ),
    )


@dataclass(frozen=True)
class VMRequest:
    """What one VM is made of (everything but the NIC, which exists before the VM)."""

    names: MachineNames
    location: str
    tags: dict[str, str]
    vm_size: str
    image: ImageRef
    admin_user: str
    ssh_keys: list[str]
    custom_data: str


def vm_model(request: VMRequest, nic_id: str) -> VirtualMachine:
    from azure.mgmt.compute.models import (
        BootDiagnostics,
        DiagnosticsProfile,
        HardwareProfile,
        ImageReference,
        LinuxConfiguration,
        ManagedDiskParameters,
        NetworkInterfaceReference,
        NetworkInterfaceReferenceProperties,
        NetworkProfile,
        OSDisk,
        OSProfile,
        Plan,
        SshConfiguration,
        SshPublicKey,
        StorageProfile,
        VirtualMachine,
        VirtualMachineProperties,
    )

    image = request.image
    plan = None
    if isinstance(image, MarketplaceImage):
        reference = ImageReference(
            publisher=image.publisher, offer=image.offer, sku=image.sku, version=image.version
        )
        if image.needs_plan:
            plan = Plan(name=image.sku, product=image.offer, publisher=image.publisher)
    else:
        reference = ImageReference(id=image.id)
    user = request.admin_user
    keys = [SshPublicKey(path=f"/home/{user}/.ssh/authorized_keys", key_data=k) for k in request.ssh_keys]
    properties = VirtualMachineProperties(
        hardware_profile=HardwareProfile(vm_size=request.vm_size),
        storage_profile=StorageProfile(
            image_reference=reference,
            os_disk=OSDisk(
                create_option="FromImage",
                name=request.names.os_disk,
                caching="ReadWrite",
                managed_disk=ManagedDiskParameters(storage_account_type=OS_DISK_TYPE),
                delete_option="Delete",
            ),
        ),
        os_profile=OSProfile(
            computer_name=request.names.vm,
            admin_username=user,
            custom_data=request.custom_data,
            linux_configuration=LinuxConfiguration(
                disable_password_authentication=True, ssh=SshConfiguration(public_keys=keys)
            ),
        ),
        network_profile=NetworkProfile(
            network_interfaces=[
                NetworkInterfaceReference(
                    id=nic_id,
                    properties=NetworkInterfaceReferenceProperties(primary=True, delete_option="Delete"),
                )
            ]
        ),
        # Managed storage: no storage account of ours; the serial log comes as a SAS URL.
        diagnostics_profile=DiagnosticsProfile(boot_diagnostics=BootDiagnostics(enabled=True)),
    )
    return VirtualMachine(location=request.location, tags=request.tags, plan=plan, properties=properties)


# -- the run's group and network ------------------------------------------------------------------------------


@dataclass
class RunGroup:
    """The resource group of this platform instance and its shared network, created once on first use."""

    clients: AzureClients
    name: str
    location: str
    tags: dict[str, str]
    ssh_cidr: str | None
    subnet: str | None = None
    created: bool = False
    nsg_id: str = ""
    subnet_id: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def timeout(self) -> float:
        return self.clients.settings.operation_timeout

    def ensure(self) -> None:
        with self._lock:
            if self.nsg_id:
                return
            from azure.mgmt.resource.resources.models import ResourceGroup

            with azure_errors(f"creating resource group {self.name}"):
                self.clients.resources.resource_groups.create_or_update(
                    self.name, ResourceGroup(location=self.location, tags=self.tags)
                )
            self.created = True
            log.info("azure: created resource group %s in %s", self.name, self.location)
            network = self.clients.network
            with azure_errors(f"creating network security group {NSG_NAME} in {self.name}"):
                nsg = wait(
                    network.network_security_groups.begin_create_or_update(
                        self.name, NSG_NAME, nsg_model(self.location, self.tags, self.ssh_cidr)
                    ),
                    self.timeout,
                    f"creating network security group {NSG_NAME}",
                )
            if self.subnet:
                self.subnet_id = self.subnet
            else:
                with azure_errors(f"creating virtual network {VNET_NAME} in {self.name}"):
                    vnet = wait(
                        network.virtual_networks.begin_create_or_update(
                            self.name, VNET_NAME, vnet_model(self.location, self.tags)
                        ),
                        self.timeout,
                        f"creating virtual network {VNET_NAME}",
                    )
                subnets = vnet.properties.subnets if vnet.properties else None
                if not subnets or not subnets[0].id:
                    raise PlatformError(f"Azure returned virtual network {VNET_NAME} without its subnet")
                self.subnet_id = subnets[0].id
            if not nsg.id:
                raise PlatformError(f"Azure returned network security group {NSG_NAME} without an id")
            self.nsg_id = nsg.id

    def delete(self) -> None:
        """Delete the group and all in it; waits for it (deleting an absent group is not an error)."""
        with self._lock:
            if not self.created:
                return
            try:
                with azure_errors(f"deleting resource group {self.name}"):
                    wait(
                        self.clients.resources.resource_groups.begin_delete(self.name),
                        self.timeout,
                        f"deleting resource group {self.name}",
                    )
            except PlatformError as exc:
                if not is_not_found(exc.__cause__ or exc):
                    raise
            self.created = False
            self.nsg_id = ""
            log.info("azure: deleted resource group %s", self.name)


# -- one machine ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launched:
    vm_id: str
    public_ip: str | None
    private_ip: str | None


def launch(group: RunGroup, request: VMRequest, public_ip: bool) -> Launched:
    """Create a machine's public IP, NIC and VM; on any failure delete what was made, then re-raise."""
    group.ensure()
    try:
        return _create(group, request, public_ip)
    except BaseException:
        log.warning("azure: launching %s failed; deleting what was created for it", request.names.vm)
        try:
            teardown(group, request.names)
        except Exception:
            log.exception("azure: cleanup after the failed launch of %s failed", request.names.vm)
        raise


def _create(group: RunGroup, request: VMRequest, public_ip: bool) -> Launched:
    names, network, timeout = request.names, group.clients.network, group.timeout
    ip_id = None
    if public_ip:
        with azure_errors(f"creating public IP {names.public_ip}"):
            ip = wait(
                network.public_ip_addresses.begin_create_or_update(
                    group.name, names.public_ip, public_ip_model(request.location, request.tags)
                ),
                timeout,
                f"creating public IP {names.public_ip}",
            )
        ip_id = ip.id
    with azure_errors(f"creating network interface {names.nic}"):
        nic = wait(
            network.network_interfaces.begin_create_or_update(
                group.name,
                names.nic,
                nic_model(request.location, request.tags, group.subnet_id, group.nsg_id, ip_id),
            ),
            timeout,
            f"creating network interface {names.nic}",
        )
    if not nic.id:
        raise PlatformError(f"Azure returned network interface {names.nic} without an id")
    log.info("azure: creating VM %s (%s) in %s", names.vm, request.vm_size, group.name)
    with azure_errors(f"creating VM {names.vm}"):
        vm = wait(
            group.clients.compute.virtual_machines.begin_create_or_update(
                group.name, names.vm, vm_model(request, nic.id)
            ),
            timeout,
            f"creating VM {names.vm}",
        )
    _tag_os_disk(group, request)
    return Launched(
        vm_id=vm.id or "",
        public_ip=_public_address(group, names) if public_ip else None,
        private_ip=_private_address(group, names),
    )


def _tag_os_disk(group: RunGroup, request: VMRequest) -> None:
    """Azure does not pass a VM's tags on to the OS disk it creates; tag it like everything else."""
    from azure.mgmt.compute.models import DiskUpdate

    disk = request.names.os_disk
    with azure_errors(f"tagging OS disk {disk}"):
        wait(
            group.clients.compute.disks.begin_update(group.name, disk, DiskUpdate(tags=request.tags)),
            group.timeout,
            f"tagging OS disk {disk}",
        )


def _public_address(group: RunGroup, names: MachineNames) -> str | None:
    with azure_errors(f"reading public IP {names.public_ip}"):
        ip = group.clients.network.public_ip_addresses.get(group.name, names.public_ip)
    return ip.properties.ip_address if ip.properties else None


def _private_address(group: RunGroup, names: MachineNames) -> str | None:
    with azure_errors(f"reading network interface {names.nic}"):
        nic = group.clients.network.network_interfaces.get(group.name, names.nic)
    configs = nic.properties.ip_configurations if nic.properties else None
    for config in configs or []:
        if config.properties and config.properties.private_ip_address:
            return str(config.properties.private_ip_address)
    return None


def teardown(group: RunGroup, names: MachineNames) -> None:
    """Delete a machine's VM, NIC, public IP and OS disk, in an order Azure accepts; absent ones are skipped."""
    clients, timeout = group.clients, group.timeout
    steps: list[tuple[str, Any]] = [
        (
            f"deleting VM {names.vm}",
            lambda: clients.compute.virtual_machines.begin_delete(group.name, names.vm),
        ),
        (
            f"deleting network interface {names.nic}",
            lambda: clients.network.network_interfaces.begin_delete(group.name, names.nic),
        ),
        (
            f"deleting public IP {names.public_ip}",
            lambda: clients.network.public_ip_addresses.begin_delete(group.name, names.public_ip),
        ),
        (
            f"deleting OS disk {names.os_disk}",
            lambda: clients.compute.disks.begin_delete(group.name, names.os_disk),
        ),
    ]
    errors: list[str] = []
    for what, start in steps:
        try:
            with azure_errors(what):
                wait(start(), timeout, what)
        except PlatformError as exc:
            if is_not_found(exc.__cause__ or exc):
                continue
            errors.append(str(exc))
    if errors:
        raise PlatformError("; ".join(errors) + f" (the resources stay in resource group {group.name})")
