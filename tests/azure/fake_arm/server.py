"""The fake ARM server: its lifecycle, the helpers tests assert with, the routing of a request to the
providers, resource groups and the generic PUT, PATCH, GET and DELETE of resources."""

from __future__ import annotations

import json
import re
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from tests.azure.fake_arm.compute import ComputeProvider
from tests.azure.fake_arm.handler import RequestHandler
from tests.azure.fake_arm.identity import IdentityProvider
from tests.azure.fake_arm.model import SUBSCRIPTION, TYPES, ArmError, FakeState, Recorded
from tests.azure.fake_arm.network import NetworkProvider
from tests.azure.fake_arm.shapes import (
    check_keys,
    check_tags,
    check_tracked,
    error_body,
    group_json,
    json_object,
    tag_filter,
)
from tests.azure.fake_arm.storage import StorageProvider


class FakeArm(IdentityProvider, ComputeProvider, NetworkProvider, StorageProvider):
    """Start with `start()`; `url` is the ARM endpoint, `ca_path` the CA bundle to trust."""

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> FakeArm:
        fake = self

        class Handler(RequestHandler):
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
            self.state.groups[name.lower()] = group_json(name, location, tags)

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
                return 429, {"Retry-After": "1"}, error_body("TooManyRequests", "throttled, retry after 1 s")
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

    # -- resource groups ------------------------------------------------------------------------------------

    def _group(self, rec: Recorded, name: str) -> tuple[int, dict[str, str], Any]:
        key = name.lower()
        if rec.method == "PUT":
            body = json_object(rec.body)
            check_keys(body)
            check_tracked(body)
            existed = key in self.state.groups
            self.state.groups[key] = group_json(name, body["location"], body.get("tags", {}))
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
        tag = tag_filter(rec.query.get("$filter", ""))
        if tag is not None:
            groups = [g for g in groups if tag in (g.get("tags") or {})]
        return 200, {}, {"value": groups}

    def _list_resources(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        resources = list(self.state.resources.values())
        tag = tag_filter(rec.query.get("$filter", ""))
        if tag is not None:
            resources = [r for r in resources if tag in (r.get("tags") or {})]
        return 200, {}, {"value": resources}

    # -- resources ------------------------------------------------------------------------------------------

    def _put(
        self, rec: Recorded, rid: str, rtype: str, name: str, group: str
    ) -> tuple[int, dict[str, str], Any]:
        body = json_object(rec.body)
        check_keys(body)
        check_tracked(body)
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
        body = json_object(rec.body)
        check_keys(body)
        resource = self.state.resources.get(rid.lower())
        if resource is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{rid}' was not found.")
        if "tags" in body:
            check_tags(body["tags"])
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
