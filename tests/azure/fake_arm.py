"""A small Azure Resource Manager over HTTPS, for contract tests with the real SDK and azure-identity.

It serves the routes the Azure platform uses (resource groups, network security groups, virtual networks,
public IPs, NICs, VMs, disks, images, boot diagnostics, Blob service page uploads), an OpenID/token endpoint
for azure-identity, and drives the long-running-operation protocol: creates answer 201 with
`Azure-AsyncOperation`, deletes and actions 202 with `Location`; each operation answers `InProgress` at least
once before it succeeds. Request bodies are checked for ARM's REST shape (camelCase keys, `properties`
nesting, `location`, `tags`, references to existing resources, base64 custom data holding JSON); a wrong
shape gets 400 with an ARM error body. Every request is recorded for the tests to assert on.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

TENANT = "railyard-tenant"
CLIENT_ID = "railyard-client"
CLIENT_SECRET = "fake-client-secret-value"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
CUSTOM_DATA_MAX = 65535

TRACKED_KEYS = {
    "location",
    "tags",
    "properties",
    "sku",
    "plan",
    "zones",
    "identity",
    "extendedLocation",
    "etag",
}
TYPES = {
    "microsoft.network/networksecuritygroups": "Microsoft.Network/networkSecurityGroups",
    "microsoft.network/virtualnetworks": "Microsoft.Network/virtualNetworks",
    "microsoft.network/publicipaddresses": "Microsoft.Network/publicIPAddresses",
    "microsoft.network/networkinterfaces": "Microsoft.Network/networkInterfaces",
    "microsoft.compute/virtualmachines": "Microsoft.Compute/virtualMachines",
    "microsoft.compute/disks": "Microsoft.Compute/disks",
    "microsoft.compute/images": "Microsoft.Compute/images",
}


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float
    status: int = 0
    answer: Any = None
    answer_headers: dict[str, str] = field(default_factory=dict)

    @property
    def lower_path(self) -> str:
        return self.path.lower()


@dataclass
class Operation:
    polls_left: int
    finish: Any  # callable run once when the operation completes; returns an error dict or None
    status: str = "InProgress"
    error: dict[str, str] | None = None


@dataclass
class FakeState:
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case id -> resource
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case name -> group
    bodies: dict[str, Any] = field(default_factory=dict)  # lower-case id -> last PUT body as received
    operations: dict[str, Operation] = field(default_factory=dict)
    blobs: dict[str, bytearray] = field(default_factory=dict)  # "container/blob" -> content
    containers: set[str] = field(default_factory=set)
    serial_logs: dict[str, str] = field(default_factory=dict)  # VM name -> text
    power: dict[str, str] = field(default_factory=dict)  # lower-case VM id -> PowerState/...
    faults: dict[str, Any] = field(default_factory=dict)
    throttles: list[tuple[str, str, int]] = field(default_factory=list)  # method, path part, times
    never_finish: set[str] = field(default_factory=set)  # resource types whose creation stays InProgress
    in_progress_polls: int = 1
    secret: str = CLIENT_SECRET


class FakeArm:
    """Start with `start()`; `url` is the ARM endpoint, `ca_path` the CA bundle to trust."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = directory / "fake-arm-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.context)
        self.lock = threading.RLock()
        self.state = FakeState()
        self.requests: list[Recorded] = []
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> FakeArm:
        fake = self

        class Handler(_Handler):
            arm = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = self.context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, name="fake-arm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        with self.lock:
            self.state = FakeState()
            self.requests.clear()

    @property
    def blob_endpoint(self) -> str:
        return f"{self.url}/blob"

    # -- helpers for tests ----------------------------------------------------------------------------------

    def group_prefix(self, group: str) -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourcegroups/{group}/".lower()

    def resources_in(self, group: str) -> list[dict[str, Any]]:
        with self.lock:
            prefix = self.group_prefix(group)
            return [r for key, r in self.state.resources.items() if key.startswith(prefix)]

    def all_resources(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.state.resources.values())

    def add_group(self, name: str, tags: dict[str, str], location: str = "westeurope") -> None:
        with self.lock:
            self.state.groups[name.lower()] = _group_json(name, location, tags)

    def body_of(self, resource_type: str, name: str) -> Any:
        """The last PUT body received for a resource of `resource_type` (e.g. virtualMachines) named `name`."""
        with self.lock:
            for key, body in self.state.bodies.items():
                if key.endswith(f"/{resource_type.lower()}/{name.lower()}"):
                    return body
        raise KeyError(f"no {resource_type} {name} was created")

    def find(self, method: str, pattern: str) -> list[Recorded]:
        regex = re.compile(pattern, re.IGNORECASE)
        with self.lock:
            return [r for r in self.requests if r.method == method and regex.search(r.path)]

    def throttle(self, method: str, path_part: str, times: int = 1) -> None:
        with self.lock:
            self.state.throttles.append((method, path_part.lower(), times))

    # -- dispatch -------------------------------------------------------------------------------------------

    def handle(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        path = rec.path.rstrip("/")
        low = path.lower()
        for index, (method, part, times) in enumerate(self.state.throttles):
            if method == rec.method and part in low and times > 0:
                self.state.throttles[index] = (method, part, times - 1)
                return 429, {"Retry-After": "1"}, _error("TooManyRequests", "throttled, retry after 1 s")
        if low.endswith("/.well-known/openid-configuration"):
            return self._openid(path)
        if low.endswith("/oauth2/v2.0/token"):
            return self._token(rec)
        if low.startswith("/bootdiag/"):
            return self._serial_log(rec, path)
        if low.startswith("/blob/"):
            self._require_token(rec)
            return self._blob(rec, path)
        self._require_token(rec)
        if "api-version" not in rec.query:
            raise ArmError(400, "MissingApiVersionParameter", "The api-version query parameter is required")
        if low.startswith("/operations/"):
            return self._poll_async(path.rsplit("/", 1)[1])
        if low.startswith("/locations/"):
            return self._poll_location(path.rsplit("/", 1)[1])
        match = re.fullmatch(r"/subscriptions/([^/]+)(/.*)?", path, re.IGNORECASE)
        if not match or match.group(1) != SUBSCRIPTION:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription of {path} could not be found")
        rest = match.group(2) or ""
        if rest.lower() == "/resourcegroups" and rec.method == "GET":
            return self._list_groups(rec)
        if rest.lower() == "/resources" and rec.method == "GET":
            return self._list_resources(rec)
        group_match = re.fullmatch(r"/resourcegroups/([^/]+)", rest, re.IGNORECASE)
        if group_match:
            return self._group(rec, group_match.group(1))
        res = re.fullmatch(
            r"/resourcegroups/([^/]+)/providers/([^/]+/[^/]+)/([^/]+)(?:/([^/]+))?", rest, re.IGNORECASE
        )
        if not res:
            raise ArmError(404, "InvalidResourceType", f"no route for {rec.method} {path}")
        group, rtype, name, action = res.groups()
        if group.lower() not in self.state.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        rtype_low = rtype.lower()
        if rtype_low not in TYPES:
            raise ArmError(404, "InvalidResourceType", f"resource type {rtype} is not served here")
        rid = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{TYPES[rtype_low]}/{name}"
        if action:
            return self._action(rec, rid, rtype_low, name, action)
        if rec.method == "PUT":
            return self._put(rec, rid, rtype_low, name, group)
        if rec.method == "PATCH":
            return self._patch(rec, rid)
        if rec.method == "GET":
            found = self.state.resources.get(rid.lower())
            if found is None:
                raise ArmError(
                    404, "ResourceNotFound", f"The Resource '{TYPES[rtype_low]}/{name}' was not found."
                )
            return 200, {}, found
        if rec.method == "DELETE":
            return self._delete(rid)
        raise ArmError(405, "MethodNotAllowed", f"{rec.method} is not allowed on {path}")

    def _require_token(self, rec: Recorded) -> None:
        auth = rec.headers.get("authorization", "")
        if not auth.startswith("Bearer fake-token-"):
            raise ArmError(401, "AuthenticationFailed", "Authentication failed: no valid bearer token.")

    # -- identity -------------------------------------------------------------------------------------------

    def _openid(self, path: str) -> tuple[int, dict[str, str], Any]:
        tenant = path.strip("/").split("/")[0]
        base = f"{self.url}/{tenant}"
        return (
            200,
            {},
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "tenant_region_scope": None,
            },
        )

    def _token(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        form = rec.body if isinstance(rec.body, dict) else {}
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != self.state.secret:
            return (
                401,
                {},
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
            )
        return (
            200,
            {},
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": f"fake-token-{next(self._ids)}",
            },
        )

    # -- long-running operations ----------------------------------------------------------------------------

    def _operation(self, finish: Any, never: bool = False) -> str:
        op_id = f"op{next(self._ids)}"
        self.state.operations[op_id] = Operation(10**9 if never else self.state.in_progress_polls, finish)
        return op_id

    def _advance(self, op_id: str) -> Operation:
        op = self.state.operations.get(op_id)
        if op is None:
            raise ArmError(404, "OperationNotFound", f"operation {op_id} is unknown")
        if op.status == "InProgress":
            if op.polls_left > 0:
                op.polls_left -= 1
            else:
                op.error = op.finish()
                op.status = "Failed" if op.error else "Succeeded"
        return op

    def _async_headers(self, finish: Any, never: bool = False) -> dict[str, str]:
        op_id = self._operation(finish, never)
        return {"Azure-AsyncOperation": f"{self.url}/operations/{op_id}?api-version=2024-01-01"}

    def _location_headers(self, finish: Any) -> dict[str, str]:
        op_id = self._operation(finish)
        return {"Location": f"{self.url}/locations/{op_id}?api-version=2024-01-01"}

    def _poll_async(self, op_id: str) -> tuple[int, dict[str, str], Any]:
        op = self._advance(op_id)
        body: dict[str, Any] = {"status": op.status}
        if op.error:
            body["error"] = op.error
        return 200, {}, body

    def _poll_location(self, op_id: str) -> tuple[int, dict[str, str], Any]:
        op = self._advance(op_id)
        if op.status == "InProgress":
            return 202, {"Location": f"{self.url}/locations/{op_id}?api-version=2024-01-01"}, None
        if op.error:
            return 200, {}, {"error": op.error}
        return 200, {}, None

    # -- resource groups ------------------------------------------------------------------------------------

    def _group(self, rec: Recorded, name: str) -> tuple[int, dict[str, str], Any]:
        key = name.lower()
        if rec.method == "PUT":
            body = _object(rec.body)
            _check_keys(body)
            _check_tracked(body)
            existed = key in self.state.groups
            self.state.groups[key] = _group_json(name, body["location"], body.get("tags", {}))
            return (200 if existed else 201), {}, self.state.groups[key]
        if key not in self.state.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        if rec.method == "GET":
            return 200, {}, self.state.groups[key]
        if rec.method == "HEAD":
            return 204, {}, None
        if rec.method == "DELETE":
            self.state.groups[key]["properties"]["provisioningState"] = "Deleting"

            def finish() -> None:
                prefix = self.group_prefix(name)
                for rid in [r for r in self.state.resources if r.startswith(prefix)]:
                    del self.state.resources[rid]
                self.state.groups.pop(key, None)

            return 202, self._location_headers(finish), None
        raise ArmError(405, "MethodNotAllowed", f"{rec.method} on a resource group")

    def _list_groups(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        groups = list(self.state.groups.values())
        tag = _tag_filter(rec.query.get("$filter", ""))
        if tag is not None:
            groups = [g for g in groups if tag in (g.get("tags") or {})]
        return 200, {}, {"value": groups}

    def _list_resources(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        resources = list(self.state.resources.values())
        tag = _tag_filter(rec.query.get("$filter", ""))
        if tag is not None:
            resources = [r for r in resources if tag in (r.get("tags") or {})]
        return 200, {}, {"value": resources}

    # -- resources ------------------------------------------------------------------------------------------

    def _put(
        self, rec: Recorded, rid: str, rtype: str, name: str, group: str
    ) -> tuple[int, dict[str, str], Any]:
        body = _object(rec.body)
        _check_keys(body)
        _check_tracked(body)
        validator = getattr(self, "_check_" + rtype.split("/")[1])
        resource = validator(body, rid, name, group)
        fault = self.state.faults.get(rtype)
        if fault == "quota":
            raise ArmError(
                409,
                "OperationNotAllowed",
                "Operation could not be completed as it results in exceeding approved standardDSv5Family "
                "Cores quota. Current Limit: 0, Current Usage: 0, Additional Required: 2.",
            )
        resource.update({"id": rid, "name": name, "type": TYPES[rtype]})
        resource.setdefault("properties", {})["provisioningState"] = "Creating"
        key = rid.lower()
        existed = key in self.state.resources
        self.state.resources[key] = resource
        self.state.bodies[key] = rec.body
        after = getattr(self, "_after_" + rtype.split("/")[1], None)
        if after is not None:
            after(resource, group)

        def finish() -> dict[str, str] | None:
            if fault == "fail":
                resource["properties"]["provisioningState"] = "Failed"
                return {
                    "code": "OSProvisioningInternalError",
                    "message": "the VM failed to provision (fault)",
                }
            resource["properties"]["provisioningState"] = "Succeeded"
            return None

        never = rtype in self.state.never_finish
        return (200 if existed else 201), self._async_headers(finish, never), resource

    def _patch(self, rec: Recorded, rid: str) -> tuple[int, dict[str, str], Any]:
        body = _object(rec.body)
        _check_keys(body)
        resource = self.state.resources.get(rid.lower())
        if resource is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{rid}' was not found.")
        if "tags" in body:
            _check_tags(body["tags"])
            resource["tags"] = dict(body["tags"])
        return 202, self._async_headers(lambda: None), None

    def _delete(self, rid: str) -> tuple[int, dict[str, str], Any]:
        key = rid.lower()
        resource = self.state.resources.get(key)
        if resource is None:
            return 204, {}, None
        in_use = self._referenced_by(rid)
        if in_use:
            raise ArmError(400, "InUseResourceCannotBeDeleted", f"{rid} is in use by {in_use}")

        def finish() -> None:
            self.state.resources.pop(key, None)
            if resource["type"] == "Microsoft.Compute/virtualMachines":
                self._delete_with_vm(resource)

        return 202, self._location_headers(finish), None

    def _referenced_by(self, rid: str) -> str:
        needle = f'"{rid.lower()}"'
        for key, other in self.state.resources.items():
            if key != rid.lower() and needle in json.dumps(other.get("properties", {})).lower():
                return other["id"]
        return ""

    def _delete_with_vm(self, vm: dict[str, Any]) -> None:
        props = vm["properties"]
        os_disk = props["storageProfile"]["osDisk"]
        if os_disk.get("deleteOption") == "Delete":
            self.state.resources.pop(os_disk["managedDisk"]["id"].lower(), None)
        for nic in props["networkProfile"]["networkInterfaces"]:
            if nic.get("properties", {}).get("deleteOption") == "Delete":
                self.state.resources.pop(nic["id"].lower(), None)

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

    # -- shape checks per type ------------------------------------------------------------------------------

    def _ref(self, ref: Any, what: str) -> str:
        if not isinstance(ref, dict) or not isinstance(ref.get("id"), str):
            raise ArmError(400, "InvalidRequestFormat", f"{what} must be an object with an id")
        rid = ref["id"]
        base, _, sub = rid.partition("/subnets/")
        if sub:
            vnet = self.state.resources.get(base.lower())
            subnets = vnet["properties"]["subnets"] if vnet else []
            if not any(s["name"] == sub for s in subnets):
                raise ArmError(400, "InvalidResourceReference", f"{what} {rid} does not exist")
        elif rid.lower() not in self.state.resources:
            raise ArmError(400, "InvalidResourceReference", f"{what} {rid} does not exist")
        return rid

    def _check_networksecuritygroups(
        self, body: dict[str, Any], rid: str, name: str, group: str
    ) -> dict[str, Any]:
        rules = _path(body, "properties.securityRules", list)
        for rule in rules:
            props = _path(rule, "properties", dict)
            for key in ("protocol", "access", "direction", "priority"):
                if key not in props:
                    raise ArmError(400, "InvalidRequestFormat", f"security rule lacks properties.{key}")
            rule["id"] = f"{rid}/securityRules/{rule.get('name')}"
        return _copy(body)

    def _check_virtualnetworks(self, body: dict[str, Any], rid: str, name: str, group: str) -> dict[str, Any]:
        _path(body, "properties.addressSpace.addressPrefixes", list)
        resource = _copy(body)
        for subnet in _path(resource, "properties.subnets", list):
            _path(subnet, "properties.addressPrefix", str)
            subnet["id"] = f"{rid}/subnets/{subnet['name']}"
        return resource

    def _check_publicipaddresses(
        self, body: dict[str, Any], rid: str, name: str, group: str
    ) -> dict[str, Any]:
        _path(body, "sku.name", str)
        _path(body, "properties.publicIPAllocationMethod", str)
        resource = _copy(body)
        resource["properties"]["ipAddress"] = f"203.0.113.{len(self.state.resources) % 250 + 1}"
        return resource

    def _check_networkinterfaces(
        self, body: dict[str, Any], rid: str, name: str, group: str
    ) -> dict[str, Any]:
        self._ref(_path(body, "properties.networkSecurityGroup", dict), "networkSecurityGroup")
        resource = _copy(body)
        for index, config in enumerate(_path(resource, "properties.ipConfigurations", list)):
            props = _path(config, "properties", dict)
            self._ref(props.get("subnet"), "subnet")
            if props.get("publicIPAddress") is not None:
                self._ref(props["publicIPAddress"], "publicIPAddress")
            props["privateIPAddress"] = f"10.77.0.{index + 4 + len(self.state.resources) % 200}"
            config["id"] = f"{rid}/ipConfigurations/{config.get('name')}"
        return resource

    def _check_virtualmachines(self, body: dict[str, Any], rid: str, name: str, group: str) -> dict[str, Any]:
        _path(body, "properties.hardwareProfile.vmSize", str)
        image = _path(body, "properties.storageProfile.imageReference", dict)
        if "id" not in image and not all(k in image for k in ("publisher", "offer", "sku", "version")):
            raise ArmError(
                400, "InvalidParameter", "imageReference needs an id or publisher, offer, sku, version"
            )
        if image.get("publisher") == "kinvolk" and not isinstance(body.get("plan"), dict):
            raise ArmError(
                400, "VMMarketplaceInvalidInput", "Creating a VM from a marketplace image requires plan"
            )
        os_disk = _path(body, "properties.storageProfile.osDisk", dict)
        if os_disk.get("createOption") != "FromImage":
            raise ArmError(400, "InvalidParameter", "osDisk.createOption must be FromImage")
        profile = _path(body, "properties.osProfile", dict)
        for key in ("computerName", "adminUsername", "customData"):
            _path(profile, key, str)
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
        linux = _path(profile, "linuxConfiguration", dict)
        if linux.get("disablePasswordAuthentication") is True:
            keys = _path(linux, "ssh.publicKeys", list)
            if not keys or not all(isinstance(k, dict) and k.get("keyData") for k in keys):
                raise ArmError(400, "InvalidParameter", "an SSH public key is required without passwords")
        nics = _path(body, "properties.networkProfile.networkInterfaces", list)
        for nic in nics:
            self._ref(nic, "networkInterface")
        _path(body, "properties.diagnosticsProfile.bootDiagnostics.enabled", bool)
        resource = _copy(body)
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
        os_disk = _path(body, "properties.storageProfile.osDisk", dict)
        if os_disk.get("osType") not in ("Linux", "Windows") or os_disk.get("osState") not in (
            "Generalized",
            "Specialized",
        ):
            raise ArmError(400, "InvalidParameter", "osDisk needs osType and osState")
        blob = _path(os_disk, "blobUri", str)
        blob_key = blob.split("/blob/", 1)[-1]
        if blob_key not in self.state.blobs:
            raise ArmError(400, "InvalidParameter", f"blob {blob} does not exist")
        if body["properties"].get("hyperVGeneration") not in ("V1", "V2"):
            raise ArmError(400, "InvalidParameter", "hyperVGeneration must be V1 or V2")
        return _copy(body)

    # -- blob service ---------------------------------------------------------------------------------------

    def _blob(self, rec: Recorded, path: str) -> tuple[int, dict[str, str], Any]:
        if "x-ms-version" not in rec.headers:
            raise ArmError(400, "MissingRequiredHeader", "x-ms-version is required")
        parts = path[len("/blob/") :].split("/", 1)
        container = parts[0]
        if rec.method == "PUT" and rec.query.get("restype") == "container":
            if container in self.state.containers:
                return 409, {"x-ms-error-code": "ContainerAlreadyExists"}, None
            self.state.containers.add(container)
            return 201, {}, None
        if len(parts) != 2 or container not in self.state.containers:
            return 404, {"x-ms-error-code": "ContainerNotFound"}, None
        key = f"{container}/{parts[1]}"
        if rec.method == "PUT" and rec.query.get("comp") == "page":
            blob = self.state.blobs.get(key)
            data = rec.body if isinstance(rec.body, bytes) else b""
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", rec.headers.get("x-ms-range", ""))
            if blob is None or not match or rec.headers.get("x-ms-page-write") != "update":
                return 400, {"x-ms-error-code": "InvalidHeaderValue"}, None
            start, end = int(match.group(1)), int(match.group(2))
            if start % 512 or (end + 1) % 512 or end - start + 1 != len(data) or len(data) > 4 << 20:
                return 400, {"x-ms-error-code": "InvalidPageRange"}, None
            if end >= len(blob):
                return 416, {"x-ms-error-code": "InvalidPageRange"}, None
            blob[start : end + 1] = data
            return 201, {}, None
        if rec.method == "PUT":
            size = int(rec.headers.get("x-ms-blob-content-length", "-1"))
            if rec.headers.get("x-ms-blob-type") != "PageBlob" or size < 0 or size % 512:
                return 400, {"x-ms-error-code": "InvalidHeaderValue"}, None
            self.state.blobs[key] = bytearray(size)
            return 201, {}, None
        return 405, {}, None

    def _serial_log(self, rec: Recorded, path: str) -> tuple[int, dict[str, str], Any]:
        if "sig" not in rec.query:
            return 403, {"x-ms-error-code": "AuthenticationFailed"}, None
        name = path[len("/bootdiag/") :].split(".", 1)[0]
        text = self.state.serial_logs.get(name)
        if text is None:
            return 404, {"x-ms-error-code": "BlobNotFound"}, None
        return 200, {"Content-Type": "text/plain"}, text.encode()


# -- request handling ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    arm: FakeArm
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        body: Any = raw
        ctype = headers.get("content-type", "")
        try:
            if raw and "json" in ctype:
                body = json.loads(raw)
            elif raw and "x-www-form-urlencoded" in ctype:
                body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        except ValueError:
            body = raw
        rec = Recorded(self.command, split.path, query, headers, body, time.monotonic())
        arm = self.arm
        with arm.lock:
            arm.requests.append(rec)
            if raw and "json" in ctype and isinstance(body, bytes):
                status, extra, answer = 400, {}, _error("InvalidRequestContent", "the body is not JSON")
            else:
                try:
                    status, extra, answer = arm.handle(rec)
                except ArmError as exc:
                    status, extra, answer = exc.status, {}, _error(exc.code, exc.message)
            rec.status, rec.answer, rec.answer_headers = status, answer, dict(extra)
        if isinstance(answer, bytes):
            payload, content_type = answer, extra.pop("Content-Type", "application/octet-stream")
        elif answer is None:
            payload, content_type = b"", "application/json"
        else:
            payload, content_type = json.dumps(answer).encode(), "application/json"
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", f"req-{id(rec)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve


# -- shape helpers ------------------------------------------------------------------------------------------


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _group_json(name: str, location: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{name}",
        "name": name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": location,
        "tags": dict(tags),
        "properties": {"provisioningState": "Succeeded"},
    }


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "the request body must be a JSON object")
    return body


def _check_keys(value: Any, where: str = "") -> None:
    """ARM speaks camelCase: a snake_case key means a dict went out where a model should have."""
    if isinstance(value, dict):
        for key, item in value.items():
            if where.endswith("tags"):
                continue
            if "_" in key:
                raise ArmError(400, "InvalidRequestContent", f"unknown property {where}{key} (snake_case)")
            _check_keys(item, f"{where}{key}.")
    elif isinstance(value, list):
        for item in value:
            _check_keys(item, where)


def _check_tags(tags: Any) -> None:
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ArmError(400, "InvalidTag", "tags must map strings to strings")
    for key, value in tags.items():
        if len(key) > 512 or len(value) > 256 or any(c in key for c in "<>%&\\?/"):
            raise ArmError(400, "InvalidTagNameCharacters", f"tag {key!r} is not valid")


def _check_tracked(body: dict[str, Any]) -> None:
    unknown = set(body) - TRACKED_KEYS
    if unknown:
        raise ArmError(400, "InvalidRequestContent", f"unknown top-level properties {sorted(unknown)}")
    if not isinstance(body.get("location"), str) or not body["location"]:
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    _check_tags(body.get("tags", {}))
    if "properties" in body and not isinstance(body["properties"], dict):
        raise ArmError(400, "InvalidRequestContent", "properties must be an object")


def _path(value: Any, dotted: str, kind: type) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ArmError(400, "InvalidRequestFormat", f"required property {dotted} is missing")
        value = value[part]
    if not isinstance(value, kind):
        raise ArmError(400, "InvalidRequestFormat", f"{dotted} must be a {kind.__name__}")
    return value


def _copy(body: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(body))
    return copied


def _tag_filter(text: str) -> str | None:
    match = re.fullmatch(r"\s*tagName eq '([^']+)'\s*", text)
    return match.group(1) if match else None
