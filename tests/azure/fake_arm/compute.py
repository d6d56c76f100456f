"""Microsoft.Compute: virtual machines (with their OS disk, power actions and boot diagnostics), disks and
images."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tests.azure.fake_arm.base import ArmBase
from tests.azure.fake_arm.model import CUSTOM_DATA_MAX, SUBSCRIPTION, ArmError, Recorded
from tests.azure.fake_arm.shapes import copy_json, required


class ComputeProvider(ArmBase):
    """Shape checks of Microsoft.Compute resources, what a VM brings and takes along, and VM actions."""

    def _check_virtualmachines(self, body: dict[str, Any], rid: str, name: str, group: str) -> dict[str, Any]:
        required(body, "properties.hardwareProfile.vmSize", str)
        image = required(body, "properties.storageProfile.imageReference", dict)
        if "id" not in image and not all(k in image for k in ("publisher", "offer", "sku", "version")):
            raise ArmError(
                400, "InvalidParameter", "imageReference needs an id or publisher, offer, sku, version"
            )
        if image.get("publisher") == "kinvolk" and not isinstance(body.get("plan"), dict):
            raise ArmError(
                400, "VMMarketplaceInvalidInput", "Creating a VM from a marketplace image requires plan"
            )
        os_disk = required(body, "properties.storageProfile.osDisk", dict)
        if os_disk.get("createOption") != "FromImage":
            raise ArmError(400, "InvalidParameter", "osDisk.createOption must be FromImage")
        profile = required(body, "properties.osProfile", dict)
        for key in ("computerName", "adminUsername", "customData"):
            required(profile, key, str)
        try:
            decoded = base64.b64decode(profile["customData"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ArmError(400, "InvalidParameter", f"customData is not valid base64: {exc}") from exc
        if len(decoded) > CUSTOM_DATA_MAX:
            raise ArmError(400, "InvalidParameter", f"customData decodes to {len(decoded)} bytes, over 65535")
        try:
            json.loads(decoded)
        except ValueError as exc:
            raise ArmError(400, "InvalidParameter", f"customData does not hold JSON: {exc}") from exc
        linux = required(profile, "linuxConfiguration", dict)
        if linux.get("disablePasswordAuthentication") is True:
            keys = required(linux, "ssh.publicKeys", list)
            if not keys or not all(isinstance(k, dict) and k.get("keyData") for k in keys):
                raise ArmError(400, "InvalidParameter", "an SSH public key is required without passwords")
        nics = required(body, "properties.networkProfile.networkInterfaces", list)
        for nic in nics:
            self._ref(nic, "networkInterface")
        required(body, "properties.diagnosticsProfile.bootDiagnostics.enabled", bool)
        resource = copy_json(body)
        resource["properties"]["vmId"] = f"vm-{next(self._ids)}"
        disk_name = os_disk.get("name") or f"{name}_OsDisk"
        disk_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/disks/{disk_name}"
        resource["properties"]["storageProfile"]["osDisk"].setdefault("managedDisk", {})["id"] = disk_id
        resource["properties"]["osProfile"].pop("customData")  # write-only, as in Azure
        return resource

    def _after_virtualmachines(self, vm: dict[str, Any], group: str) -> None:
        """Azure creates the OS disk with the VM, untagged."""
        disk_id = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
        self.state.resources[disk_id.lower()] = {
            "id": disk_id,
            "name": disk_id.rsplit("/", 1)[1],
            "type": "Microsoft.Compute/disks",
            "location": vm["location"],
            "managedBy": vm["id"],
            "properties": {"provisioningState": "Succeeded"},
        }

    def _check_disks(self, body: dict[str, Any], rid: str, name: str, group: str) -> dict[str, Any]:
        raise ArmError(400, "NotSupported", "disks are created by VMs here")

    def _check_images(self, body: dict[str, Any], rid: str, name: str, group: str) -> dict[str, Any]:
        os_disk = required(body, "properties.storageProfile.osDisk", dict)
        if os_disk.get("osType") not in ("Linux", "Windows") or os_disk.get("osState") not in (
            "Generalized",
            "Specialized",
        ):
            raise ArmError(400, "InvalidParameter", "osDisk needs osType and osState")
        blob = required(os_disk, "blobUri", str)
        blob_key = blob.split("/blob/", 1)[-1]
        if blob_key not in self.state.blobs:
            raise ArmError(400, "InvalidParameter", f"blob {blob} does not exist")
        if body["properties"].get("hyperVGeneration") not in ("V1", "V2"):
            raise ArmError(400, "InvalidParameter", "hyperVGeneration must be V1 or V2")
        return copy_json(body)

    # -- virtual machines' actions and deletion -------------------------------------------------------------

    def _action(
        self, rec: Recorded, rid: str, rtype: str, name: str, action: str
    ) -> tuple[int, dict[str, str], Any]:
        if rtype != "microsoft.compute/virtualmachines":
            raise ArmError(404, "InvalidResourceType", f"no action {action} on {rtype}")
        vm = self.state.resources.get(rid.lower())
        if vm is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{name}' was not found.",
            )
        act = action.lower()
        if act == "retrievebootdiagnosticsdata" and rec.method == "POST":
            if not vm["properties"]["diagnosticsProfile"]["bootDiagnostics"].get("enabled"):
                raise ArmError(409, "BootDiagnosticsNotEnabled", "boot diagnostics are off")
            log_url = f"{self.url}/bootdiag/{name}.serialconsole.log?sv=2022-11-02&se=later&sig=c2VjcmV0"
            return (
                200,
                {},
                {
                    "consoleScreenshotBlobUri": f"{self.url}/bootdiag/{name}.screenshot.bmp?sig=c2VjcmV0",
                    "serialConsoleLogBlobUri": log_url,
                },
            )
        if act == "instanceview" and rec.method == "GET":
            power = self.state.power.get(rid.lower(), "PowerState/running")
            return 200, {}, {"statuses": [{"code": "ProvisioningState/succeeded"}, {"code": power}]}
        if act in ("poweroff", "restart") and rec.method == "POST":
            state = "PowerState/stopped" if act == "poweroff" else "PowerState/running"
            return 202, self._location_headers(lambda: self.state.power.__setitem__(rid.lower(), state)), None
        raise ArmError(404, "InvalidAction", f"no route for {rec.method} {action}")

    def _delete_with_vm(self, vm: dict[str, Any]) -> None:
        props = vm["properties"]
        os_disk = props["storageProfile"]["osDisk"]
        if os_disk.get("deleteOption") == "Delete":
            self.state.resources.pop(os_disk["managedDisk"]["id"].lower(), None)
        for nic in props["networkProfile"]["networkInterfaces"]:
            if nic.get("properties", {}).get("deleteOption") == "Delete":
                self.state.resources.pop(nic["id"].lower(), None)
