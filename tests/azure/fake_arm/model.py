"""What the fake ARM knows: its fixed identities, the resource types it serves, the requests it recorded,
its resources and operations, and the error it answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
