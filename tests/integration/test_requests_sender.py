"""RequestsSender on a real socket: requests' HTTPAdapter for one environment (its pool, TLS settings and request
target resolved once, answers without a cookie jar), and the URL each request is sent to, exactly as requests
itself prepares it."""

from __future__ import annotations

import contextlib
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from optout_core.dataverse.odata_batch import Request
from optout_core.dataverse.sender import RequestsSender, plain_path
from tests.support.dataverse import TOKEN

PATCH = Request("PATCH", "/api/data/v9.2/contacts(11111111-2222-4333-8444-555555555555)", {"If-Match": "*"}, b'{"a":1}')


class Recorder(BaseHTTPRequestHandler):
    """Answers 204 with a cookie, and keeps each request line and Cookie header it was sent."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str | None]]

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.requestline, self.headers.get("Cookie")))
        self.send_response(204)
        self.send_header("Set-Cookie", "ARRAffinity=abc; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def recording():
    """A loopback server on 127.0.0.1 (stopped and joined on exit) and the requests it was sent."""
    seen: list[tuple[str, str | None]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Recorder,), {"seen": seen}))
    server.daemon_threads = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def test_cookies_dataverse_sets_are_never_kept_or_sent_back(no_proxy):
    with recording() as (url, seen):
        sender = RequestsSender(url, timeout=5)
        first, second = sender.send(PATCH), sender.send(PATCH)
        sender.close()
    assert first.status == second.status == 204
    assert first.headers["set-cookie"].startswith("ARRAffinity")  # the answer's headers are all there
    assert [cookie for _, cookie in seen] == [None, None]


def test_the_adapters_answers_carry_no_cookie_jar(no_proxy):
    with recording() as (url, _):
        sender = RequestsSender(url, timeout=5)
        sender.send(PATCH)
        wire = sender._get_wire()
        prepared = requests.Request("PATCH", url + PATCH.path, data=b"{}").prepare()
        answer = wire.adapter.send(prepared, timeout=5, verify=wire.verify, proxies=wire.proxies)
        status, cookies, body = answer.status_code, answer.cookies, answer.content
        del wire, answer  # urllib3 closes a pool's connections when the pool goes, not when the adapter closes
        sender.close()
    assert status == 204 and body == b"" and not cookies


def test_the_connection_pool_is_resolved_once_for_the_environment(no_proxy, monkeypatch):
    resolved = []
    with recording() as (url, seen):
        sender = RequestsSender(url, timeout=5)
        manager = sender._get_wire().adapter.poolmanager
        monkeypatch.setattr(manager, "connection_from_host", counted(manager.connection_from_host, resolved))
        answers = [sender.send(PATCH).status for _ in range(5)]
        monkeypatch.undo()
        connections = sender._get_wire().adapter._env.pool.num_connections  # each answer read whole: one reused
        del manager  # urllib3 closes a pool's connections when the pool goes, not when the adapter closes
        sender.close()
    assert answers == [204] * 5 and len(seen) == 5 and len(resolved) == 1 and connections == 1


def counted(function, calls):
    def call(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return call


def test_behind_a_plain_http_proxy_the_whole_url_is_the_request_target(monkeypatch):
    with recording() as (proxy, seen):
        for name in ("http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy)
        sender = RequestsSender("http://dataverse.invalid", timeout=5)
        answers = [sender.send(PATCH).status for _ in range(2)]
        sender.close()
    assert answers == [204, 204]
    assert [line for line, _ in seen] == [f"PATCH http://dataverse.invalid{PATCH.path} HTTP/1.1"] * 2


def test_a_ca_bundle_from_the_environment_verifies_the_environment(make_standin, monkeypatch):
    standin = make_standin(tls=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", standin.ca_file)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    sender = RequestsSender(standin.url, timeout=5)
    whoami = Request("GET", "/api/data/v9.2/WhoAmI", {"Authorization": f"Bearer {TOKEN}"})
    statuses = [sender.send(whoami).status for _ in range(2)]
    sender.close()
    assert statuses == [200, 200]


# Paths the client builds, and some it never does: each must become the URL requests itself would prepare.
PATHS = [
    "/api/data/v9.2/contacts(11111111-2222-4333-8444-555555555555)",
    "/api/data/v9.2/$batch",
    "/api/data/v9.2/WhoAmI",
    "/api/data/v9.2/contacts?$select=emailaddress1,_parentcustomerid_value&$filter=contactid eq 1",
    "/api/data/v9.2/msdyn_contactpointconsent4s?$filter=msdyn_contactpointvalue eq 'jane%40example.com'",
    "/api/data/v9.2/EntityDefinitions(LogicalName='contact')/Attributes",
    "/api/data/v9.2/contacts?$select=a&$top=5&$skiptoken=%3Ccookie%20pagenumber=%222%22/%3E",
    "/api/data/v9.2/accounts(1)?$expand=primarycontactid($select=fullname)",
    "/api/data/v9.2/../v9.1/x",
    "/api/data/v9.2/./x",
    "/a?",
    "/a#fragment",
    "/Zürich?q=é",
    "/a b?c d",
    "/a?b?c",
    "/[x]",
    "/a%41b",
    "/api/data/v9.2/contacts?$filter=Microsoft.Dynamics.CRM.In(PropertyName='contactid',PropertyValues=%5B'1','2'%5D)",
    "/a?b=%5b",
    "/a?b=%2D%7E",
    "/a?b=%2",
    "/a%2E%2E/b",
]
# Characters, and escapes: kept as written (upper case, not unreserved), or rewritten by requests.
ALPHABET = [*"aZ09-._~!$&'()*+,/:;=@?%# é[]\"<>{}|\\^`", "%5B", "%5b", "%41", "%2E", "%7E", "%25", "%E9", "%3"]


def prepared_by_requests(root: str, path: str) -> str:
    request = requests.PreparedRequest()
    request.prepare_url(root.rstrip("/") + path, None)
    return request.url or ""


@pytest.mark.parametrize("root", ["http://127.0.0.1:8080", "https://Contoso.CRM.dynamics.com/", "https://x.example/p"])
@pytest.mark.parametrize("seed", range(3))
def test_every_path_is_sent_as_requests_would_prepare_it(root, seed):
    rng = random.Random(seed)
    randoms = [
        "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        for alphabet in (ALPHABET, ALPHABET[:20] + ALPHABET[-8:])  # the second: mostly plain, with escapes
        for _ in range(400)
    ]
    wire = RequestsSender(root, timeout=5)._get_wire()
    for path in PATHS + randoms:
        assert wire.prepare(Request("GET", path)).url == prepared_by_requests(root, path), path


def test_only_paths_needing_no_quoting_skip_requests_preparation():
    plain = [path for path in PATHS if plain_path(path)]
    assert plain == [PATHS[0], PATHS[1], PATHS[2], PATHS[5], PATHS[6], PATHS[7], "/a?b?c", PATHS[17]]
