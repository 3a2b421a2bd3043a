"""Which credential signs Dataverse requests, the bearer token each request carries, and how a token Dataverse
refused is replaced.

azure-identity credentials hand back their cached token until it nears expiry, so asking again after a 401
usually returns the very token that was refused. :func:`access_token` asks with a claims request instead,
which makes the MSAL-based credentials skip their cache (see docs/credentials.md for what each credential
does with it, with sources).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import time
from typing import Any, NamedTuple, Protocol

from optout_core.dataverse.errors import SignInFailed, sign_in_advice
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.sender import HttpSender, Refused, Reply
from optout_core.domain.errors import SettingsError
from optout_core.domain.settings import Settings, is_loopback_url

log = logging.getLogger("optout.dataverse")

# Refresh a cached token this long before it expires, so a request never leaves with a dying token.
_TOKEN_MARGIN_SECONDS = 300
_NOT_RENEWED = " and the credential gave the refused token again (a static token, or one it cannot renew)"
# The ``claims`` parameter of a Bearer challenge, quoted or bare (RFC 9110 auth-param); compiled with the first 401.
_CLAIMS_PARAMETER = r'(?:^|[\s,])claims\s*=\s*(?:"([^"]*)"|([^\s,]+))'


class AccessTokenLike(Protocol):
    """``azure.core.credentials.AccessToken``, as far as this client uses it."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class TokenCredentialLike(Protocol):
    """``azure.core.credentials.TokenCredential``: every azure-identity credential, and the ones below."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessTokenLike: ...


class StaticToken(NamedTuple):
    """``azure.core.credentials.AccessToken``'s shape, without loading azure-core for a static token."""

    token: str
    expires_on: int


class StaticTokenCredential:
    """A fixed bearer token for loopback stand-ins. Settings refuse it for any other URL.

    It accepts and ignores ``claims``: a refused static token has no replacement."""

    def __init__(self, token: str, lifetime: float = 3600.0) -> None:
        self._token = token
        self._lifetime = lifetime

    def get_token(self, *scopes: str, **kwargs: Any) -> StaticToken:
        return StaticToken(self._token, int(time.time() + self._lifetime))

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


def access_token(
    credential: TokenCredentialLike,
    scope: str,
    *,
    refused: AccessTokenLike | None = None,
    challenge: str | None = None,
) -> AccessTokenLike:
    """A token for ``scope``: the credential's cached one, or, given ``refused`` (the token Dataverse just
    answered 401 to), one obtained past the credential's cache where the credential allows it.

    ``challenge`` is that 401's ``WWW-Authenticate`` value. When it carries a claims challenge (Continuous
    Access Evaluation, or a revoked managed-identity token), those claims are asked for. Otherwise the credential
    is asked plainly first (it may already hold a newer token); if it answers with the refused token again, it
    is asked once more with a claims request (``nbf`` = now, the shape of a CAE revocation challenge), which
    ``ManagedIdentityCredential``, ``ClientSecretCredential``, ``EnvironmentCredential`` and
    ``DefaultAzureCredential`` (through whichever credential served it) answer from their token endpoint, not
    their cache. A credential that cannot (``AzureCliCredential`` raises on claims) or whose claims request
    fails leaves the plainly obtained token: the caller's retry then meets the same 401, as it would have.
    """
    if refused is None:
        return credential.get_token(scope)
    claims = challenge_claims(challenge) if challenge else None
    cached: AccessTokenLike | None = None
    if claims is None:
        cached = credential.get_token(scope)
        if cached.token != refused.token:
            return cached  # the credential already holds a newer token
        claims = _fresh_token_claims()
    try:
        fresh = credential.get_token(scope, claims=claims)
    except _sign_in_errors() as exc:
        log.warning(
            "dataverse token: %s could not issue a token past its cache (%s); using its cached token",
            type(credential).__name__,
            getattr(exc, "message", exc),
        )
        return cached if cached is not None else credential.get_token(scope)
    if fresh.token == refused.token:
        log.warning("dataverse token: %s issued the refused token again", type(credential).__name__)
    return fresh


def challenge_claims(challenge: str) -> str | None:
    """The claims JSON of a ``WWW-Authenticate`` claims challenge (its base64url ``claims`` parameter), or None.

    Accepted whatever the ``error`` parameter says (``insufficient_claims`` per Entra's documentation,
    ``invalid_token`` in some services' revocation challenges); a value that is not base64 JSON is ignored.
    """
    match = re.search(_CLAIMS_PARAMETER, challenge, re.IGNORECASE)
    if not match:
        return None
    encoded = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
    try:
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        parsed = json.loads(decoded)
    except ValueError:  # not base64, not UTF-8, or not JSON
        return None
    return decoded if isinstance(parsed, dict) and parsed else None


def _fresh_token_claims() -> str:
    """A claims request for a token issued from now on: what a CAE revocation challenge asks for."""
    now = str(int(time.time()))
    return json.dumps({"access_token": {"nbf": {"essential": True, "value": now}}}, separators=(",", ":"))


class BearerToken:
    """The token every request carries: cached while good (refreshed ``margin`` seconds before it expires, so
    none leaves with a dying token), and replaced once after Dataverse refused it. A sign-in that fails raises
    :class:`~optout_core.dataverse.errors.SignInFailed` (permanent), explained as ``check --connect`` would."""

    def __init__(self, credential: TokenCredentialLike, scope: str, *, margin: float = _TOKEN_MARGIN_SECONDS) -> None:
        self._credential, self._scope, self._margin = credential, scope, margin
        self._lock = threading.Lock()
        self._token: AccessTokenLike | None = None

    def current(self) -> str:
        with self._lock:
            token = self._token
            if token is None or token.expires_on - self._margin <= time.time():
                token = self._token = self._obtain(None, None)
            return token.token

    def replace(self, refused: str, challenge: str | None) -> str:
        """The token after Dataverse refused ``refused``: one obtained anew (see :func:`access_token`), shared by
        every thread that saw the same refused token; the credential's own token when it has no other."""
        with self._lock:
            token = self._token
            if token is not None and token.token == refused:
                token = self._token = self._obtain(token, challenge)
            elif token is None or token.expires_on - self._margin <= time.time():
                token = self._token = self._obtain(None, None)
            return token.token

    def _obtain(self, refused: AccessTokenLike | None, challenge: str | None) -> AccessTokenLike:
        try:
            return access_token(self._credential, self._scope, refused=refused, challenge=challenge)
        except _sign_in_errors() as exc:
            raise SignInFailed(sign_in_advice(exc)) from None


def _sign_in_errors() -> tuple[type[Exception], ...]:
    """azure-core's ``ClientAuthenticationError`` when azure-core is loaded; none otherwise: a credential that
    raises it has loaded azure-core, and a static token's path never loads it (a fresh process's first write)."""
    errors = sys.modules.get("azure.core.exceptions")
    return () if errors is None else (errors.ClientAuthenticationError,)


class Authorized:
    """A sender that signs each request with the bearer token and, when Dataverse answers 401, sends it once more
    with a token obtained anew (a token can expire or be revoked between issue and use)."""

    def __init__(self, sender: HttpSender, token: BearerToken) -> None:
        self._sender, self._token = sender, token

    def send(self, request: Request) -> Reply:
        token = self._token.current()
        answer = self._sender.send(_signed(request, token))
        if not isinstance(answer, Response) or answer.status != 401:
            return answer
        fresh = self._token.replace(token, answer.headers.get("WWW-Authenticate"))
        if fresh == token:  # the credential cannot issue another token (a static one, or a cache)
            return Refused(answer, _NOT_RENEWED)
        answer = self._sender.send(_signed(request, fresh))
        if isinstance(answer, Response) and answer.status == 401:
            return Refused(answer, " to a token obtained anew after a first 401")
        return answer


def _signed(request: Request, token: str) -> Request:
    return Request(request.method, request.path, {"Authorization": f"Bearer {token}", **request.headers}, request.body)
