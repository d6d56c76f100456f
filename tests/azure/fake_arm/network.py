"""Microsoft.Network: network security groups, virtual networks, public IPs and NICs."""

from __future__ import annotations

from typing import Any

from tests.azure.fake_arm.base import ArmBase
from tests.azure.fake_arm.model import ArmError
from tests.azure.fake_arm.shapes import copy_json, required


class NetworkProvider(ArmBase):
    """Shape checks of Microsoft.Network resources (`_check_<type>`, called by FakeArm's PUT)."""

    def _check_networksecuritygroups(
        self, body: dict[str, Any], rid: str, name: str, group: str
    ) -> dict[str, Any]:
        rules = required(body, "properties.securityRules", list)
        for rule in rules:
            props = required(rule, "properties", dict)
            for key in ("protocol", "access", "direction", "priority"):
                if key not in props:
                    raise ArmError(400, "InvalidRequestFormat", f"security rule lacks properties.{key}")
            rule["id"] = f"{rid}/securityRules/{rule.get('name')}"
        return copy_json(body)

    def _check_virtualnetworks(self, body: dict[str, Any], rid: str, name: str, group: str) -> dict[str, Any]:
        required(body, "properties.addressSpace.addressPrefixes", list)
        resource = copy_json(body)
        for subnet in required(resource, "properties.subnets", list):
            required(subnet, "properties.addressPrefix", str)
            subnet["id"] = f"{rid}/subnets/{subnet['name']}"
        return resource

    def _check_publicipaddresses(
        self, body: dict[str, Any], rid: str, name: str, group: str
    ) -> dict[str, Any]:
        required(body, "sku.name", str)
        required(body, "properties.publicIPAllocationMethod", str)
        resource = copy_json(body)
        resource["properties"]["ipAddress"] = f"203.0.113.{len(self.state.resources) % 250 + 1}"
        return resource

    def _check_networkinterfaces(
        self, body: dict[str, Any], rid: str, name: str, group: str
    ) -> dict[str, Any]:
        self._ref(required(body, "properties.networkSecurityGroup", dict), "networkSecurityGroup")
        resource = copy_json(body)
        for index, config in enumerate(required(resource, "properties.ipConfigurations", list)):
            props = required(config, "properties", dict)
            self._ref(props.get("subnet"), "subnet")
            if props.get("publicIPAddress") is not None:
                self._ref(props["publicIPAddress"], "publicIPAddress")
            props["privateIPAddress"] = f"10.77.0.{index + 4 + len(self.state.resources) % 200}"
            config["id"] = f"{rid}/ipConfigurations/{config.get('name')}"
        return resource
