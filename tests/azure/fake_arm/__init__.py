"""A small Azure Resource Manager over HTTPS, for contract tests with the real SDK and azure-identity.

It serves the routes the Azure platform uses (resource groups, network security groups, virtual networks,
public IPs, NICs, VMs, disks, images, boot diagnostics, Blob service page uploads), an OpenID/token endpoint
for azure-identity, and drives the long-running-operation protocol: creates answer 201 with
`Azure-AsyncOperation`, deletes and actions 202 with `Location`; each operation answers `InProgress` at least
once before it succeeds. Request bodies are checked for ARM's REST shape (camelCase keys, `properties`
nesting, `location`, `tags`, references to existing resources, base64 custom data holding JSON); a wrong
shape gets 400 with an ARM error body. Every request is recorded for the tests to assert on.

The package: the server and its routing (server.py, handler.py), the shared state and the long-running
operations (model.py, base.py), the REST shape checks (shapes.py), and one module per provider: identity
(tokens), network, compute and storage (Blob service, boot diagnostics).
"""

from tests.azure.fake_arm.model import (
    CLIENT_ID,
    CLIENT_SECRET,
    CUSTOM_DATA_MAX,
    SUBSCRIPTION,
    TENANT,
    TRACKED_KEYS,
    TYPES,
    ArmError,
    FakeState,
    Operation,
    Recorded,
)
from tests.azure.fake_arm.server import FakeArm

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "CUSTOM_DATA_MAX",
    "SUBSCRIPTION",
    "TENANT",
    "TRACKED_KEYS",
    "TYPES",
    "ArmError",
    "FakeArm",
    "FakeState",
    "Operation",
    "Recorded",
]
