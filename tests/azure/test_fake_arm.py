"""The fake ARM server rejects what real ARM rejects, so the contract tests mean something."""

from __future__ import annotations

import http.client
import json
import ssl

import pytest

from tests.azure.fake_arm import SUBSCRIPTION


def request(fake_arm, method, path, body=None, token=True):
    context = ssl.create_default_context(cafile=str(fake_arm.ca_path))
    host, port = fake_arm.url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer fake-token-1"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else None


GROUP = f"/subscriptions/{SUBSCRIPTION}/resourcegroups/g"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (GROUP, {"location": "westeurope"}, "MissingApiVersionParameter"),
        (GROUP + "?api-version=2025-04-01", {"tags": {}}, "LocationRequired"),
        (GROUP + "?api-version=2025-04-01", {"location": "x", "tags": {"a": 1}}, "InvalidTag"),
        (GROUP + "?api-version=2025-04-01", {"location": "x", "os_profile": {}}, "InvalidRequestContent"),
    ],
)
def test_bad_shapes_get_arm_errors(fake_arm, path, body, code):
    status, answer = request(fake_arm, "PUT", path, body)
    assert status == 400
    assert answer["error"]["code"] == code


def test_snake_case_and_bad_custom_data_are_refused(fake_arm):
    fake_arm.add_group("g", {})
    vm = GROUP + "/providers/Microsoft.Compute/virtualMachines/v?api-version=2024-07-01"
    status, answer = request(fake_arm, "PUT", vm, {"location": "x", "properties": {"os_profile": {}}})
    assert (status, answer["error"]["code"]) == (400, "InvalidRequestContent")
    body = {
        "location": "x",
        "properties": {
            "hardwareProfile": {"vmSize": "s"},
            "storageProfile": {"imageReference": {"id": "/i"}, "osDisk": {"createOption": "FromImage"}},
            "osProfile": {"computerName": "v", "adminUsername": "core", "customData": "not base64!"},
        },
    }
    status, answer = request(fake_arm, "PUT", vm, body)
    assert status == 400
    assert "base64" in answer["error"]["message"]


def test_requests_need_a_token(fake_arm):
    status, answer = request(fake_arm, "GET", GROUP + "?api-version=2025-04-01", token=False)
    assert (status, answer["error"]["code"]) == (401, "AuthenticationFailed")
