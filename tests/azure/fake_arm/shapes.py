"""Checks of ARM's REST shape (camelCase keys, tracked resources' top level, tags, required properties) and
the JSON the fake answers with; a wrong shape is an ArmError (400)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.azure.fake_arm.model import SUBSCRIPTION, TRACKED_KEYS, ArmError


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def group_json(name: str, location: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{name}",
        "name": name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": location,
        "tags": dict(tags),
        "properties": {"provisioningState": "Succeeded"},
    }


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "the request body must be a JSON object")
    return body


def check_keys(value: Any, where: str = "") -> None:
    """ARM speaks camelCase: a snake_case key means a dict went out where a model should have."""
    if isinstance(value, dict):
        for key, item in value.items():
            if where.endswith("tags"):
                continue
            if "_" in key:
                raise ArmError(400, "InvalidRequestContent", f"unknown property {where}{key} (snake_case)")
            check_keys(item, f"{where}{key}.")
    elif isinstance(value, list):
        for item in value:
            check_keys(item, where)


def check_tags(tags: Any) -> None:
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ArmError(400, "InvalidTag", "tags must map strings to strings")
    for key, value in tags.items():
        if len(key) > 512 or len(value) > 256 or any(c in key for c in "<>%&\\?/"):
            raise ArmError(400, "InvalidTagNameCharacters", f"tag {key!r} is not valid")


def check_tracked(body: dict[str, Any]) -> None:
    unknown = set(body) - TRACKED_KEYS
    if unknown:
        raise ArmError(400, "InvalidRequestContent", f"unknown top-level properties {sorted(unknown)}")
    if not isinstance(body.get("location"), str) or not body["location"]:
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    check_tags(body.get("tags", {}))
    if "properties" in body and not isinstance(body["properties"], dict):
        raise ArmError(400, "InvalidRequestContent", "properties must be an object")


def required(value: Any, dotted: str, kind: type) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ArmError(400, "InvalidRequestFormat", f"required property {dotted} is missing")
        value = value[part]
    if not isinstance(value, kind):
        raise ArmError(400, "InvalidRequestFormat", f"{dotted} must be a {kind.__name__}")
    return value


def copy_json(body: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(body))
    return copied


def tag_filter(text: str) -> str | None:
    match = re.fullmatch(r"\s*tagName eq '([^']+)'\s*", text)
    return match.group(1) if match else None
