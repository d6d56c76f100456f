"""Getting disks in and logs out of Azure storage: fixed VHD conversion, page blob upload, blob download.

Azure makes managed images from fixed-size VHDs whose virtual size is a whole number of MiB, stored as page
blobs. The upload talks to the Blob service REST API through azure-core (Put Blob, Put Page), authenticated by
the run's Azure AD credential, so no storage SDK or account key is needed; the identity needs the role
"Storage Blob Data Contributor" on the account. `BlobUploader` is the seam for another transport.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import ImageError, PlatformError
from platforms.azure.clients import transport_kwargs
from platforms.azure.settings import AzureSettings

if TYPE_CHECKING:
    from azure.core import PipelineClient
    from azure.core.credentials import TokenCredential
    from azure.core.rest import HttpResponse

log = logging.getLogger(__name__)

MIB = 1 << 20
PAGE = 512
CHUNK = 4 * MIB  # the largest Put Page request the Blob service takes
BLOB_API_VERSION = "2023-11-03"
STORAGE_SCOPE = "https://storage.azure.com/.default"
QEMU_IMG = "qemu-img"
CONVERT_TIMEOUT = 3600.0


def aligned_size(size: int) -> int:
    """`size` rounded up to a whole MiB (Azure rejects VHDs whose virtual size is not)."""
    return -(-size // MIB) * MIB


def vhd_commands(source: Path, source_format: str, virtual_size: int, target: Path) -> list[list[str]]:
    """The qemu-img commands that turn `source` into a fixed VHD at `target` with a MiB-aligned size.

    An unaligned disk goes through a raw copy (`<target>.raw`) that is grown to the next MiB first.
    """
    convert_vhd = [QEMU_IMG, "convert", "-q", "-O", "vpc", "-o", "subformat=fixed,force_size"]
    size = aligned_size(virtual_size)
    if size == virtual_size:
        return [[*convert_vhd, "-f", source_format, str(source), str(target)]]
    raw = target.with_name(target.name + ".raw")
    return [
        [QEMU_IMG, "convert", "-q", "-f", source_format, "-O", "raw", str(source), str(raw)],
        [QEMU_IMG, "resize", "-q", "-f", "raw", str(raw), str(size)],
        [*convert_vhd, "-f", "raw", str(raw), str(target)],
    ]


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CONVERT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"{shlex.join(argv)} failed: {exc}") from exc
    if done.returncode != 0:
        raise ImageError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def convert_to_vhd(image: Path, target: Path) -> Path:
    """Write a fixed VHD of `image` (qcow2 or raw) to `target`; returns `target`."""
    try:
        info = json.loads(_run([QEMU_IMG, "info", "-U", "--output=json", str(image)]))
        fmt, size = str(info["format"]), int(info["virtual-size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"cannot read format and size of {image}: {exc}") from exc
    commands = vhd_commands(image, fmt, size, target)
    try:
        for argv in commands:
            log.info("%s", shlex.join(argv))
            _run(argv)
    finally:
        target.with_name(target.name + ".raw").unlink(missing_ok=True)
    return target


class BlobUploader(Protocol):
    def upload_page_blob(self, path: Path, container: str, blob: str) -> str:
        """Upload `path` (a multiple of 512 bytes) as page blob `container/blob`; returns its URL."""
        ...


def _client(
    settings: AzureSettings, base_url: str, credential: TokenCredential | None
) -> PipelineClient[Any, Any]:
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import (
        BearerTokenCredentialPolicy,
        HeadersPolicy,
        HTTPPolicy,
        RetryPolicy,
        SansIOHTTPPolicy,
    )

    kwargs = transport_kwargs(settings)
    policies: list[HTTPPolicy[Any, Any] | SansIOHTTPPolicy[Any, Any]] = [
        HeadersPolicy({"x-ms-version": BLOB_API_VERSION}),
        RetryPolicy(**kwargs),
    ]
    if credential is not None:
        policies.append(BearerTokenCredentialPolicy(credential, STORAGE_SCOPE))
    return PipelineClient(base_url, policies=policies, **kwargs)


STORAGE_ADVICE = (
    "; check that the storage account exists and that the identity has the role "
    "'Storage Blob Data Contributor' on it"
)


def _check(
    response: HttpResponse, what: str, ok: tuple[int, ...] = (200, 201), advice: str = STORAGE_ADVICE
) -> None:
    if response.status_code not in ok:
        code = response.headers.get("x-ms-error-code", "")
        raise PlatformError(f"{what} failed: HTTP {response.status_code} {code}".rstrip() + advice)


class RestPageBlobUploader:
    """Page blob upload over the Blob service REST API; all-zero pages are skipped (a new blob reads zero)."""

    def __init__(
        self,
        settings: AzureSettings,
        credential: TokenCredential,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.base = settings.blob_base
        self.client = _client(settings, self.base, credential)
        self.progress = progress or log.info

    def upload_page_blob(self, path: Path, container: str, blob: str) -> str:
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        size = path.stat().st_size
        if size % PAGE:
            raise ImageError(f"{path} is {size} bytes, not a whole number of 512-byte pages")
        url = f"{self.base}/{container}/{blob}"
        try:
            response = self.client.send_request(
                HttpRequest("PUT", f"{self.base}/{container}?restype=container")
            )
            _check(response, f"creating blob container {container}", ok=(201, 409))
            response = self.client.send_request(
                HttpRequest(
                    "PUT",
                    url,
                    headers={"x-ms-blob-type": "PageBlob", "x-ms-blob-content-length": str(size)},
                    content=b"",
                )
            )
            _check(response, f"creating page blob {url}")
            sent = 0
            with path.open("rb") as source:
                offset = 0
                while chunk := source.read(CHUNK):
                    if chunk.count(0) != len(chunk):
                        end = offset + len(chunk) - 1
                        response = self.client.send_request(
                            HttpRequest(
                                "PUT",
                                f"{url}?comp=page",
                                headers={"x-ms-page-write": "update", "x-ms-range": f"bytes={offset}-{end}"},
                                content=chunk,
                            )
                        )
                        _check(response, f"writing bytes {offset}-{end} of {url}")
                        sent += len(chunk)
                    offset += len(chunk)
                    if offset % (256 * MIB) == 0:
                        self.progress(f"uploaded {offset // MIB} of {size // MIB} MiB")
        except AzureError as exc:
            raise PlatformError(f"uploading {path} to {url} failed: {exc}") from exc
        self.progress(f"uploaded {url} ({size // MIB} MiB, {sent // MIB} MiB of data)")
        return url


def fetch_text(settings: AzureSettings, url: str) -> str:
    """The text of a blob reachable through a SAS URL (e.g. a boot diagnostics serial log)."""
    from azure.core.exceptions import AzureError
    from azure.core.rest import HttpRequest

    client = _client(settings, url, None)
    try:
        with client:
            response = client.send_request(HttpRequest("GET", url))
            _check(response, "downloading the serial log", ok=(200,), advice="")
            return str(response.text())
    except AzureError as exc:
        raise PlatformError(f"downloading the serial log failed: {exc}") from exc
