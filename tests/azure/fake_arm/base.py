"""What every part of the fake ARM shares: its state, the TLS certificate, the ids it hands out, the
long-running-operation protocol (201 with Azure-AsyncOperation, 202 with Location, InProgress at least once)
and references between resources."""

from __future__ import annotations

import itertools
import ssl
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

from tests.azure.fake_arm.model import ArmError, FakeState, Operation, Recorded


class ArmBase:
    """The fake's state and the protocol machinery its providers build on."""

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

    # -- references between resources -----------------------------------------------------------------------

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
