"""The HTTP side: one request in, recorded, answered from FakeArm.handle as JSON (or bytes)."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.azure.fake_arm.model import ArmError, Recorded
from tests.azure.fake_arm.shapes import error_body

if TYPE_CHECKING:
    from tests.azure.fake_arm.server import FakeArm


class RequestHandler(BaseHTTPRequestHandler):
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
                status, extra, answer = 400, {}, error_body("InvalidRequestContent", "the body is not JSON")
            else:
                try:
                    status, extra, answer = arm.handle(rec)
                except ArmError as exc:
                    status, extra, answer = exc.status, {}, error_body(exc.code, exc.message)
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
