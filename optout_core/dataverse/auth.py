"""Which credential signs Dataverse requests."""

from __future__ import annotations

import time
from typing import Any

from optout_core.domain.errors import SettingsError
from optout_core.domain.settings import Settings, is_loopback_url


class StaticTokenCredential:
    """A fixed bearer token for loopback stand-ins. Settings refuse it for any other URL."""

    def __init__(self, token: str, lifetime: float = 3600.0) -> None:
        self._token = token
        self._lifetime = lifetime

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time() + self._lifetime))

    def __repr__(self) -> str:  # never show the token
        return "StaticTokenCredential(***)"


def dataverse_credential(settings: Settings) -> Any:
    """A static token (loopback only), a user-assigned managed identity, or ``DefaultAzureCredential``."""
    if settings.dataverse_token:
        if not (settings.dataverse_url and is_loopback_url(settings.dataverse_url)):
            raise SettingsError("DATAVERSE_TOKEN is honoured only with a loopback DATAVERSE_URL")
        return StaticTokenCredential(settings.dataverse_token)
    if settings.azure_client_id and not settings.raw.get("AZURE_CLIENT_SECRET"):
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.azure_client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
