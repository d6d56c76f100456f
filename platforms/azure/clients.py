"""The Azure SDK clients of a run, and what turns SDK failures into Railyard errors.

The SDK is imported here, lazily (the platform module must import without it). Every client shares one
credential (azure-identity's DefaultAzureCredential: environment, workload or managed identity, Azure CLI...)
and one retry configuration: azure-core's RetryPolicy retries throttling (429) and transient 5xx answers,
honouring Retry-After, with exponential backoff otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from harness.errors import PlatformError
from platforms.azure.settings import AzureSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.polling import LROPoller
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_TOTAL = 8
RETRY_BACKOFF_FACTOR = 1.0
RETRY_BACKOFF_MAX = 60
CONNECTION_TIMEOUT = 30
READ_TIMEOUT = 120

# Error codes with which Azure refuses a request for want of quota or capacity.
QUOTA_CODES = frozenset(
    {
        "OperationNotAllowed",
        "QuotaExceeded",
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "PublicIPCountLimitReached",
        "ResourceQuotaExceeded",
    }
)


def transport_kwargs(settings: AzureSettings) -> dict[str, Any]:
    """Keyword arguments every SDK client and credential of the run gets: retries, timeouts, CA bundle."""
    kwargs: dict[str, Any] = {
        "retry_total": RETRY_TOTAL,
        "retry_backoff_factor": RETRY_BACKOFF_FACTOR,
        "retry_backoff_max": RETRY_BACKOFF_MAX,
        "connection_timeout": CONNECTION_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
    }
    if settings.ca_bundle:
        kwargs["connection_verify"] = settings.ca_bundle
    return kwargs


def make_credential(settings: AzureSettings) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    kwargs = transport_kwargs(settings)
    if settings.arm_endpoint:
        # A private or sovereign endpoint comes with its own authority (AZURE_AUTHORITY_HOST), which the
        # Microsoft instance-discovery service does not know.
        kwargs["disable_instance_discovery"] = True
    credential: TokenCredential = DefaultAzureCredential(**kwargs)
    return credential


@dataclass
class AzureClients:
    settings: AzureSettings
    credential: TokenCredential
    resources: ResourceManagementClient
    compute: ComputeManagementClient
    network: NetworkManagementClient

    @classmethod
    def connect(cls, settings: AzureSettings) -> AzureClients:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient
        from azure.mgmt.resource.resources import ResourceManagementClient

        credential = make_credential(settings)
        kwargs = transport_kwargs(settings)
        kwargs["polling_interval"] = settings.poll_interval
        if settings.arm_endpoint:
            kwargs["base_url"] = settings.arm_endpoint.rstrip("/")
        return cls(
            settings=settings,
            credential=credential,
            resources=ResourceManagementClient(credential, settings.subscription, **kwargs),
            compute=ComputeManagementClient(credential, settings.subscription, **kwargs),
            network=NetworkManagementClient(credential, settings.subscription, **kwargs),
        )

    def close(self) -> None:
        for client in (self.resources, self.compute, self.network):
            with contextlib.suppress(Exception):
                client.close()
        close = getattr(self.credential, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()


def error_code(exc: BaseException) -> str:
    """The ARM error code of an SDK error (`OperationNotAllowed`, `ResourceNotFound`...), or ''."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else ""


def describe(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    code = error_code(exc)
    text = " ".join(str(message).split())
    return f"{code}: {text}" if code and code not in text else text


@contextlib.contextmanager
def azure_errors(what: str) -> Iterator[None]:
    """Turn SDK exceptions raised while doing `what` into PlatformError with advice."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    try:
        yield
    except ClientAuthenticationError as exc:
        raise PlatformError(
            f"Azure did not accept the credentials while {what}: {describe(exc)}. Sign in with `az login`, "
            "or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or use a managed identity), "
            "and check that the identity has a role on the subscription"
        ) from exc
    except HttpResponseError as exc:
        code = error_code(exc)
        if code in QUOTA_CODES or "quota" in str(exc).lower():
            raise PlatformError(
                f"Azure refused {what} for want of quota or capacity ({describe(exc)}): request a quota "
                "increase for the region, or choose another --azure-vm-size or --azure-location"
            ) from exc
        raise PlatformError(f"{what} failed: {describe(exc)}") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise PlatformError(
            f"could not reach Azure while {what}: {describe(exc)}; check the network, proxy settings and "
            "--azure-arm-endpoint / --azure-ca-bundle"
        ) from exc
    except AzureError as exc:
        raise PlatformError(f"{what} failed: {describe(exc)}") from exc


def wait(poller: LROPoller[T], timeout: float, what: str) -> T:
    """The result of a long-running operation; PlatformError when it takes longer than `timeout` seconds."""
    result = poller.result(timeout=timeout)
    if not poller.done():
        raise PlatformError(
            f"{what} did not finish within {timeout:.0f} s (status {poller.status()}); raise "
            "--azure-operation-timeout, or look at the resource group in the Azure portal"
        )
    return result


def is_not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404
