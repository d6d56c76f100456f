"""The identity provider: OpenID configuration and client-credential tokens, as azure-identity asks for them."""

from __future__ import annotations

from typing import Any

from tests.azure.fake_arm.base import ArmBase
from tests.azure.fake_arm.model import CLIENT_ID, Recorded


class IdentityProvider(ArmBase):
    """The tenant's OpenID configuration and token endpoint (client credentials: CLIENT_ID and the secret)."""

    def _openid(self, path: str) -> tuple[int, dict[str, str], Any]:
        tenant = path.strip("/").split("/")[0]
        base = f"{self.url}/{tenant}"
        return (
            200,
            {},
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "tenant_region_scope": None,
            },
        )

    def _token(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        form = rec.body if isinstance(rec.body, dict) else {}
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != self.state.secret:
            return (
                401,
                {},
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
            )
        return (
            200,
            {},
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": f"fake-token-{next(self._ids)}",
            },
        )
