"""The real azure-identity credentials against loopback token endpoints: a token Dataverse refused is replaced.

azure-identity credentials answer ``get_token`` from their cache until the token nears expiry, so asking again
after a 401 returns the refused token. ``auth.access_token(..., refused=...)`` asks with a claims request,
which the MSAL-based credentials answer from their token endpoint. Proven here against

* an App Service managed-identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``, api-version
  2019-08-01), for ``ManagedIdentityCredential`` and ``DefaultAzureCredential`` as ``dataverse_credential``
  builds them;
* an Entra-like authority over loopback HTTPS (``trustme`` certificate, ``disable_instance_discovery``) for
  ``ClientSecretCredential`` and ``EnvironmentCredential`` (azure-identity refuses a plain-HTTP authority);
* a stand-in ``az`` executable for ``AzureCliCredential``, which cannot take claims.

Every server binds to 127.0.0.1 only and is stopped, with its threads, inside the test.
"""

import base64
import contextlib
import json
import logging
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken

from optout_core.dataverse.auth import StaticTokenCredential, access_token, challenge_claims, dataverse_credential
from optout_core.domain.settings import Settings

DATAVERSE = "https://contoso.crm4.dynamics.com"
SCOPE = f"{DATAVERSE}/.default"
IDENTITY_HEADER = "loopback-identity-header"
CLIENT_ID = "3f8e2c41-7a55-4c1e-9c0a-2b6d1e4f5a60"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SECRET = "loopback-client-secret"
# The example of Entra's CAE documentation (app-resilience-continuous-access-evaluation): a revoked token.
CAE_CLAIMS = '{"access_token":{"nbf":{"essential":true, "value":"1604106651"}}}'
CAE_CHALLENGE = (
    'Bearer authorization_uri="https://login.windows.net/common/oauth2/authorize", error="insufficient_claims", '
    f'claims="{base64.b64encode(CAE_CLAIMS.encode()).decode()}"'
)
# Dataverse's documented 401 challenge: where to sign in, no claims.
DATAVERSE_CHALLENGE = f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT}/oauth2/authorize"
AZURE_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_REGIONAL_AUTHORITY_NAME",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


class TokenEndpoint:
    """What a loopback token endpoint was asked, and the tokens it issued (``<prefix>-1``, ``<prefix>-2``, …)."""

    def __init__(self, prefix):
        self.prefix, self.requests, self.issued = prefix, [], 0
        self._lock = threading.Lock()

    def record(self, request):
        with self._lock:
            self.requests.append(request)

    def issue(self, request):
        with self._lock:
            self.requests.append(request)
            self.issued += 1
            return f"{self.prefix}-{self.issued}"

    def tokens_requested(self, kind):
        return [r for r in self.requests if r["kind"] == kind]


class JsonHandler(BaseHTTPRequestHandler):
    def _json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def managed_identity_handler(endpoint):
    """The App Service managed-identity protocol: GET ?resource=…&api-version=2019-08-01, X-IDENTITY-HEADER."""

    class Handler(JsonHandler):
        def do_GET(self):
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER or url.path != "/msi/token":
                return self._json(401, {"statusCode": 401, "message": "wrong identity header or path"})
            if query.get("api-version") != "2019-08-01" or not query.get("resource"):
                return self._json(400, {"statusCode": 400, "message": "api-version and resource are required"})
            token = endpoint.issue({"kind": "token", **query})
            expires_on = str(int(time.time()) + 3600)  # App Service answers epoch seconds as a string
            self._json(
                200,
                {
                    "access_token": token,
                    "expires_on": expires_on,
                    "resource": query["resource"],
                    "token_type": "Bearer",
                },
            )

    return Handler


def entra_handler(endpoint):
    """Just enough of an Entra authority for MSAL's client-credentials flow: OpenID discovery and /token."""

    class Handler(JsonHandler):
        def do_GET(self):
            base = f"https://127.0.0.1:{self.server.server_address[1]}/{TENANT}"
            if self.path != f"/{TENANT}/v2.0/.well-known/openid-configuration":
                return self._json(404, {"error": "not_found"})
            endpoint.record({"kind": "discovery"})
            self._json(
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                },
            )

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            if self.path != f"/{TENANT}/oauth2/v2.0/token" or form.get("grant_type") != "client_credentials":
                return self._json(400, {"error": "unsupported_grant_type"})
            if form.get("client_id") != CLIENT_ID or form.pop("client_secret", None) != SECRET:
                return self._json(401, {"error": "invalid_client", "error_description": "AADSTS7000215"})
            token = endpoint.issue({"kind": "token", **form})
            self._json(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    return Handler


@contextlib.contextmanager
def serving(handler, tls=None):
    """A loopback server on 127.0.0.1 in its own thread; shut down, closed and joined on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = False  # server_close() joins every connection thread
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-token-endpoint", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        assert not thread.is_alive()


@pytest.fixture
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while (left := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not left, f"threads outlived the test: {left}"


@pytest.fixture
def clean_env(monkeypatch):
    for name in AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return monkeypatch


@pytest.fixture
def managed_identity(clean_env, no_leaked_threads):
    """A running App Service managed-identity endpoint, announced through IDENTITY_ENDPOINT/IDENTITY_HEADER."""
    endpoint = TokenEndpoint("mi-token")
    with serving(managed_identity_handler(endpoint)) as server:
        clean_env.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/msi/token")
        clean_env.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        yield endpoint


@pytest.fixture
def entra(clean_env, no_leaked_threads, tmp_path):
    """A running loopback Entra authority over HTTPS: (endpoint, authority URL, CA bundle path)."""
    import trustme

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "loopback-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    endpoint = TokenEndpoint("sp-token")
    with serving(entra_handler(endpoint), tls=context) as server:
        yield endpoint, f"https://127.0.0.1:{server.server_address[1]}", str(bundle)


def settings(**env):
    return Settings.from_env({"DATAVERSE_URL": DATAVERSE, **env})


# -- App Service managed identity ----------------------------------------------------------------------------


def test_a_managed_identity_answers_a_repeated_get_token_from_its_cache(managed_identity):
    credential = dataverse_credential(settings(AZURE_CLIENT_ID=CLIENT_ID))
    with credential:
        assert type(credential).__name__ == "ManagedIdentityCredential"
        first, second = credential.get_token(SCOPE), credential.get_token(SCOPE)
    assert first.token == second.token == "mi-token-1"
    assert managed_identity.requests == [
        {"kind": "token", "resource": DATAVERSE, "api-version": "2019-08-01", "client_id": CLIENT_ID}
    ]


def test_a_refused_managed_identity_token_is_replaced_from_the_endpoint(managed_identity):
    credential = dataverse_credential(settings(AZURE_CLIENT_ID=CLIENT_ID))
    with credential:
        refused = access_token(credential, SCOPE)
        assert credential.get_token(SCOPE).token == refused.token  # the problem: asked again, the cache answers
        assert len(managed_identity.requests) == 1

        fresh = access_token(credential, SCOPE, refused=refused, challenge=DATAVERSE_CHALLENGE)
        assert (refused.token, fresh.token) == ("mi-token-1", "mi-token-2")
        assert len(managed_identity.requests) == 2
        assert managed_identity.requests[1]["client_id"] == CLIENT_ID

        assert access_token(credential, SCOPE).token == "mi-token-2"  # the new token replaced the cached one
        assert len(managed_identity.requests) == 2


def test_a_managed_identity_claims_challenge_is_answered_from_the_endpoint(managed_identity):
    credential = dataverse_credential(settings(AZURE_CLIENT_ID=CLIENT_ID))
    with credential:
        refused = access_token(credential, SCOPE)
        fresh = access_token(credential, SCOPE, refused=refused, challenge=CAE_CHALLENGE)
    assert fresh.token == "mi-token-2" and len(managed_identity.requests) == 2


def test_a_token_already_replaced_in_the_cache_costs_no_request(managed_identity):
    credential = dataverse_credential(settings(AZURE_CLIENT_ID=CLIENT_ID))
    with credential:
        current = access_token(credential, SCOPE)
        older = AccessToken("mi-token-0", int(time.time()) + 60)
        assert access_token(credential, SCOPE, refused=older).token == current.token
    assert len(managed_identity.requests) == 1


def test_default_azure_credential_passes_the_refusal_to_the_managed_identity(managed_identity):
    credential = dataverse_credential(settings())  # no AZURE_CLIENT_ID: DefaultAzureCredential, system identity
    with credential:
        assert type(credential).__name__ == "DefaultAzureCredential"
        refused = access_token(credential, SCOPE)
        assert credential.get_token(SCOPE).token == refused.token
        fresh = access_token(credential, SCOPE, refused=refused)
    assert (refused.token, fresh.token) == ("mi-token-1", "mi-token-2")
    assert [r.get("client_id") for r in managed_identity.requests] == [None, None]


# -- Service principal with a secret ---------------------------------------------------------------------------


def test_a_service_principal_authority_must_be_https(clean_env):
    from azure.identity import ClientSecretCredential

    with pytest.raises(ValueError, match="https"):
        ClientSecretCredential(TENANT, CLIENT_ID, SECRET, authority="http://127.0.0.1:9")


def secret_credential(kind, authority, bundle, monkeypatch):
    from azure.identity import ClientSecretCredential, EnvironmentCredential

    options = {"authority": authority, "disable_instance_discovery": True, "connection_verify": bundle}
    if kind == "ClientSecretCredential":
        return ClientSecretCredential(TENANT, CLIENT_ID, SECRET, **options)
    for name, value in (("AZURE_TENANT_ID", TENANT), ("AZURE_CLIENT_ID", CLIENT_ID), ("AZURE_CLIENT_SECRET", SECRET)):
        monkeypatch.setenv(name, value)
    return EnvironmentCredential(**options)


@pytest.mark.parametrize("kind", ["ClientSecretCredential", "EnvironmentCredential"])
def test_a_refused_service_principal_token_is_replaced_with_a_claims_request(kind, entra, clean_env):
    endpoint, authority, bundle = entra
    with secret_credential(kind, authority, bundle, clean_env) as credential:
        refused = access_token(credential, SCOPE)
        assert credential.get_token(SCOPE).token == refused.token  # the problem: MSAL's cache answers
        assert len(endpoint.tokens_requested("token")) == 1

        before = int(time.time())
        fresh = access_token(credential, SCOPE, refused=refused, challenge=DATAVERSE_CHALLENGE)
        assert (refused.token, fresh.token) == ("sp-token-1", "sp-token-2")
        first, second = endpoint.tokens_requested("token")
        assert "claims" not in first and first["scope"] == SCOPE
        nbf = json.loads(second["claims"])["access_token"]["nbf"]
        assert nbf["essential"] is True and before <= int(nbf["value"]) <= time.time()

        assert access_token(credential, SCOPE).token == "sp-token-2"
        assert len(endpoint.tokens_requested("token")) == 2


def test_a_service_principal_claims_challenge_reaches_the_authority_as_sent(entra, clean_env):
    endpoint, authority, bundle = entra
    with secret_credential("ClientSecretCredential", authority, bundle, clean_env) as credential:
        refused = access_token(credential, SCOPE)
        fresh = access_token(credential, SCOPE, refused=refused, challenge=CAE_CHALLENGE)
    assert fresh.token == "sp-token-2"
    assert [r.get("claims") for r in endpoint.tokens_requested("token")] == [None, CAE_CLAIMS]


# -- Azure CLI (local development) and the static token ------------------------------------------------------


@pytest.fixture
def az(clean_env, tmp_path):
    """A stand-in ``az`` first on PATH: prints the same token each time (as the CLI does from its own cache) and
    counts its runs."""
    runs = tmp_path / "az-runs"
    script = tmp_path / "bin" / "az"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        f"with open({str(runs)!r}, 'a') as f: f.write(' '.join(sys.argv[1:]) + '\\n')\n"
        "print(json.dumps({'accessToken': 'cli-token', 'expires_on': int(time.time()) + 3600,"
        " 'tokenType': 'Bearer'}))\n"
    )
    script.chmod(0o755)
    clean_env.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    return lambda: runs.read_text().splitlines() if runs.exists() else []


def test_the_azure_cli_cannot_take_claims_so_its_own_token_comes_back(az, caplog):
    from azure.identity import AzureCliCredential

    credential = AzureCliCredential()
    refused = access_token(credential, SCOPE)
    with caplog.at_level(logging.WARNING, logger="optout.dataverse"):
        again = access_token(credential, SCOPE, refused=refused)
    assert again.token == refused.token == "cli-token"
    assert len(az()) == 2 and all(f"--resource {DATAVERSE}" in run for run in az())  # claims never ran az
    assert "could not issue a token past its cache" in caplog.text and "cli-token" not in caplog.text


def test_a_refused_static_token_comes_back_with_a_warning(caplog):
    credential = StaticTokenCredential("local-token")
    refused = access_token(credential, SCOPE)
    with caplog.at_level(logging.WARNING, logger="optout.dataverse"):
        again = access_token(credential, SCOPE, refused=refused, challenge=CAE_CHALLENGE)
    assert again.token == refused.token == "local-token"
    assert "issued the refused token again" in caplog.text and "local-token" not in caplog.text


# -- reading the challenge -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("challenge", "claims"),
    [
        (CAE_CHALLENGE, CAE_CLAIMS),
        (CAE_CHALLENGE.replace('error="insufficient_claims"', 'error="invalid_token"'), CAE_CLAIMS),
        (f'Bearer realm="", claims={base64.urlsafe_b64encode(b"{}").decode()}', None),  # empty: no claims
        (DATAVERSE_CHALLENGE, None),
        ('Bearer authorization_uri="https://login.microsoftonline.com/x", claims="not base64 json!"', None),
        ('Bearer client_claims="e30="', None),  # another parameter's name ending in "claims"
    ],
)
def test_the_claims_of_a_challenge(challenge, claims):
    assert challenge_claims(challenge) == claims
