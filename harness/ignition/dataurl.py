"""RFC 2397 ``data:`` URLs as Ignition reads them: encoding file contents and decoding them back.

Ignition (through its data URL parser) accepts in the plain (non-base64) form only the
RFC 2396 unreserved and reserved characters plus ``%XX`` escapes, and in the base64 form
only padded standard base64. The encoder here produces exactly that; the decoder is as
strict, so a URL it accepts is one Ignition accepts.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import string
import urllib.parse
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "GZIP_THRESHOLD",
    "DataURLError",
    "decode_data_url",
    "decode_resource",
    "encode_contents",
]

#: Contents at least this long are gzip-compressed when that makes the URL shorter.
GZIP_THRESHOLD = 1024

# RFC 2396 unreserved ("-_.!~*'()" and alphanumerics) and reserved (";/?:@&=+$,") characters.
_URL_SAFE = "-_.!~*'();/?:@&=+$,"
_PLAIN_CHARS = frozenset(string.ascii_letters + string.digits + _URL_SAFE + "%")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class DataURLError(ValueError):
    """A ``data:`` URL that Ignition would refuse to decode."""


def _plain(data: bytes) -> str:
    return "data:," + urllib.parse.quote_from_bytes(data, safe=_URL_SAFE)


def _b64(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode("ascii")


def encode_contents(contents: str | bytes, *, compress: bool | None = None) -> tuple[str, str | None]:
    """Encode file contents as a ``data:`` URL; return ``(source, compression)``.

    Text becomes a percent-encoded ``data:,`` URL, bytes a ``data:;base64,`` URL.
    ``compress=None`` gzips contents of at least :data:`GZIP_THRESHOLD` bytes when the result
    is shorter; ``True`` always gzips; ``False`` never does. ``compression`` is ``"gzip"`` or
    ``None`` and belongs next to ``source`` in the Ignition resource.
    """
    if isinstance(contents, str):
        raw = contents.encode("utf-8")
        source = _plain(raw)
    elif isinstance(contents, bytes | bytearray | memoryview):
        raw = bytes(contents)
        source = _b64(raw)
    else:
        raise TypeError(f"file contents must be str or bytes, not {type(contents).__name__}")
    if compress is False or (compress is None and len(raw) < GZIP_THRESHOLD):
        return source, None
    zipped = _b64(gzip.compress(raw, compresslevel=9, mtime=0))
    if compress or len(zipped) < len(source):
        return zipped, "gzip"
    return source, None


def decode_data_url(url: str) -> bytes:
    """Return the bytes a ``data:`` URL carries (still compressed if it was); raise DataURLError."""
    if not url.startswith("data:"):
        raise DataURLError("not a data URL: it must start with 'data:'")
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise DataURLError("data URL has no ',' between its media type and its data")
    params = [p.strip() for p in header.split(";")]
    if params[-1].lower() == "base64":
        if not _BASE64_RE.fullmatch(payload) or len(payload) % 4:
            raise DataURLError(
                "invalid base64 data in data URL: use padded standard base64 (A-Z a-z 0-9 + / and '=')"
            )
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise DataURLError(f"invalid base64 data in data URL: {exc}") from None
    bad = sorted({c for c in payload if c not in _PLAIN_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise DataURLError(
            f"invalid character(s) {shown} in plain data URL: percent-encode them "
            "(urllib.parse.quote) or use the ';base64' form"
        )
    if _ESCAPE_RE.search(payload):
        raise DataURLError("invalid percent escape in data URL: '%' must be followed by two hex digits")
    return urllib.parse.unquote_to_bytes(payload)


def decode_resource(resource: Mapping[str, Any]) -> bytes:
    """Decode an Ignition resource (``{"source": "data:...", "compression": ...}``) to its contents."""
    source = resource.get("source")
    if not isinstance(source, str):
        raise DataURLError("resource has no 'source' string")
    data = decode_data_url(source)
    compression = resource.get("compression")
    if compression == "gzip":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataURLError(f"compression is 'gzip' but the data does not gunzip: {exc}") from None
    return data
