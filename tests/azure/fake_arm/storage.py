"""Storage: the Blob service (containers and page blobs, written page by page) and the boot diagnostics'
serial log blobs."""

from __future__ import annotations

import re
from typing import Any

from tests.azure.fake_arm.base import ArmBase
from tests.azure.fake_arm.model import ArmError, Recorded


class StorageProvider(ArmBase):
    """The Blob service below /blob/ and the serial log blobs below /bootdiag/."""

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
