"""Sending one Web API request: the :class:`HttpSender` protocol, the one implementation that puts a request on
the wire (:class:`RequestsSender`), and the thin senders stacked on it per call (the throttle gate, counting).

A sender answers a :class:`~optout_core.dataverse.odata_batch.Request` with the
:class:`~optout_core.dataverse.odata_batch.Response`, or with :class:`Lost` when no answer came: what to make
of either (retry, read back, give up) is decided above, in :mod:`optout_core.dataverse.transport`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from optout_core.dataverse.errors import DataverseError, OutOfTime, from_answer
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.throttle import ThrottleGate

if TYPE_CHECKING:
    import requests
    import requests.adapters

# Every request's headers, before its own.
_HEADERS = {
    "User-Agent": "optout (Dataverse Web API client; python-requests)",
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
}


class _NoQuery(logging.Filter):
    """urllib3 logs each request line at DEBUG, query included; a query can name an email address (a ``$filter``
    on a consent record's address), so the line keeps the path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_path_only(a) if isinstance(a, str) else a for a in record.args)
        return True


def _path_only(text: str) -> str:
    path, query, _ = text.partition("?")
    return f"{path}?<query>" if query else path


logging.getLogger("urllib3.connectionpool").addFilter(_NoQuery())


@dataclass(frozen=True, slots=True)
class Lost:
    """No answer: ``sent`` when the request may have reached Dataverse (anything but a failed connect)."""

    sent: bool
    cause: str


@dataclass(frozen=True, slots=True)
class Refused:
    """An error answer that stands for each part of a ``$batch`` (or a final 401), with what it refused."""

    answer: Response
    what: str


# What one request came to, as the layers above the wire see it.
Reply = Response | Lost | Refused


def error_of(answer: Response | Refused, retry_after_cap: float) -> DataverseError:
    """What an error answer means; a whole ``$batch`` or final-401 answer says what it refused."""
    response, what = (answer.answer, answer.what) if isinstance(answer, Refused) else (answer, "")
    return from_answer(response.status, response.headers, response.body, what, retry_after_cap)


class HttpSender(Protocol):
    def send(self, request: Request) -> Response | Lost: ...


class RequestsSender:
    """The only place an HTTP request is sent: ``requests``' connection pool (one
    :class:`requests.adapters.HTTPAdapter` of this environment, see :func:`_adapter`), the Web API's headers, no
    retries of its own (urllib3's are off: retrying is :mod:`~optout_core.dataverse.transport`'s job)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._lock = threading.Lock()
        self._wire: _Wire | None = None

    def send(self, request: Request) -> Response | Lost:
        import requests  # lazy: the router never pays for it

        wire = self._get_wire()
        try:
            r = wire.adapter.send(wire.prepare(request), timeout=wire.timeout, verify=wire.verify, proxies=wire.proxies)
            body = _content(r)  # read here: an answer cut off mid-body raises inside this try
        except (requests.ConnectionError, requests.Timeout) as exc:
            # Only a failed connect proves the request never left; anything later may have committed.
            sent = not isinstance(exc, requests.ConnectTimeout)
            return Lost(sent=sent, cause=f"Dataverse unreachable: {type(exc).__name__}")
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            # The answer was cut off mid-body: the request arrived, and a write may have committed.
            return Lost(sent=True, cause=f"Dataverse's answer was cut off: {type(exc).__name__}")
        return Response(r.status_code, r.headers, body)

    def _get_wire(self) -> _Wire:
        with self._lock:
            if self._wire is None:
                self._wire = _Wire(self.url, self._timeout)
            return self._wire

    def close(self) -> None:
        with self._lock:
            if self._wire is not None:
                self._wire.adapter.close()
                self._wire = None


def _content(answer: requests.Response) -> bytes:
    """``answer.content``, read in one call instead of requests' 10 KiB chunks, each error of the read raised as
    requests raises it (``Response.iter_content``)."""
    import requests
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

    try:
        body: bytes = answer.raw.read(decode_content=True)
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from exc
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    return body


class _Wire:
    """What every request to one environment shares, settled once: the adapter (its connection pool), the proxy
    and CA-bundle settings (requests re-reads the environment per request otherwise), the timeout, and the
    environment's URL as requests prepares it."""

    def __init__(self, url: str, timeout: float) -> None:
        import requests
        from urllib3.util import Timeout

        self.proxies: dict[str, str] = requests.utils.get_environ_proxies(url)
        self.verify: bool | str = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.timeout: Any = Timeout(connect=timeout, read=timeout)  # requests would build it anew per request
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url + "/", None)
        root = prepared.url or ""  # as requests writes it (scheme and host lower-cased, IDNA), ending in "/"
        self._url = url
        self._root = root if root.endswith("/") and "?" not in root and "#" not in root else None
        # A root the fast paths cannot serve gets an environment no URL starts with: requests does it all.
        self.adapter = _adapter()(_Environment(self._root or "\0", self.verify, self.proxies))

    def prepare(self, request: Request) -> requests.PreparedRequest:
        """The request as requests would prepare it, without the cookie jar, auth, hooks or redirect handling of
        ``Session.request``, and without parsing the URL again when it needs no quoting (:func:`plain_path`)."""
        import requests

        prepared = requests.PreparedRequest()
        prepared.prepare_method(request.method)
        if self._root is not None and plain_path(request.path):
            prepared.url = self._root + request.path[1:]
        else:
            prepared.prepare_url(self._url + request.path, None)
        prepared.prepare_headers({**_HEADERS, **request.headers})
        prepared.prepare_body(request.body, None)
        return prepared


# The characters requests (urllib3's parse_url, then requote_uri) leaves as they are in a path and query: a path
# of only these, with no dot segment ("/.") and no empty query (a "?" at its end), is the URL's tail exactly as
# requests would prepare it. So is a percent-escape in upper case of a byte that is not unreserved (requote_uri
# decodes "%41" to "A", urllib3 upper-cases "%5b"): a query's encoded brackets ("%5B") and quotes. Anything else
# (a bare "%", a blank, non-ASCII, "#", "[") goes through requests' own preparation
# (tests/integration/test_requests_sender.py compares the two).
_PLAIN = re.compile(
    r"/[A-Za-z0-9\-._~!$&'()*+,/:;=@%]*(?:\?[A-Za-z0-9\-._~!$&'()*+,/:;=@?%]*[A-Za-z0-9\-._~!$&'()*+,/:;=@])?"
)
_NOT_KEPT_ESCAPE = re.compile(r"%(?!(?:[01][0-9A-F]|2[0-9A-CF]|3[A-F]|40|5[B-E]|60|7[B-DF]|[89A-F][0-9A-F]))")


def plain_path(path: str) -> bool:
    """Whether ``path`` (from the environment root, starting with "/") goes into the URL unchanged."""
    return (
        _PLAIN.fullmatch(path) is not None
        and "/." not in path
        and ("%" not in path or _NOT_KEPT_ESCAPE.search(path) is None)
    )


class _Environment:
    """One environment's settled request route: its root URL as requests writes it, the TLS and proxy settings the
    sender passes, and, once resolved, its connection pool and whether the request target is the path (not behind
    a plain-HTTP proxy, which is sent the whole URL)."""

    def __init__(self, root: str, verify: bool | str, proxies: dict[str, str]) -> None:
        from urllib.parse import urlsplit

        self.root, self.verify, self.proxies = root, verify, proxies
        self.origin = len(root) - len(urlsplit(root).path)  # root[:origin] is scheme://host[:port]
        self.pool: Any = None
        self.target_is_path = True

    def owns(self, url: str | None, proxies: Any) -> bool:
        """A request to this environment (no fragment), sent with the sender's own proxy settings."""
        return url is not None and url.startswith(self.root) and "#" not in url and proxies == self.proxies

    def pool_for(self, url: str | None, verify: Any, proxies: Any, cert: Any) -> Any:
        """The resolved pool when it serves this request (None: not resolved yet, or another route)."""
        if self.pool is None or cert is not None or verify != self.verify:
            return None
        return self.pool if self.owns(url, proxies) else None


@functools.cache
def _adapter() -> Callable[[_Environment], requests.adapters.HTTPAdapter]:
    """:class:`requests.adapters.HTTPAdapter` for one environment (built on first use: requests loads with the first
    request). requests resolves the connection pool, the TLS settings and the request target anew for every request,
    and reads the cookies of every answer into a jar; through the hooks it documents for subclasses this adapter
    resolves them once for its environment and skips the jar (the bearer header is the only credential). Requests
    to any other URL, or with other TLS or proxy settings, take requests' own path."""
    from requests import Response as Answer
    from requests.adapters import HTTPAdapter
    from requests.structures import CaseInsensitiveDict

    class EnvironmentAdapter(HTTPAdapter):
        def __init__(self, environment: _Environment) -> None:
            # Enough pooled connections for the worker's thread pool; retries are ours, not urllib3's.
            super().__init__(pool_connections=4, pool_maxsize=32, max_retries=0)
            self._env = environment

        def get_connection_with_tls_context(
            self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
        ) -> Any:
            env = self._env
            pool = env.pool_for(request.url, verify, proxies, cert)
            if pool is not None:
                return pool
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            if env.owns(request.url, proxies) and verify == env.verify and cert is None:
                super().cert_verify(pool, request.url, verify, cert)  # type: ignore[no-untyped-call]
                env.target_is_path = super().request_url(request, proxies) == request.path_url
                env.pool = pool
            return pool

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            if conn is not self._env.pool:  # this environment's pool was checked when it was resolved
                super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]

        def request_url(self, request: Any, proxies: Any) -> str:
            env, url = self._env, request.url
            if env.target_is_path and env.owns(url, proxies):
                return str(url[env.origin :])
            return super().request_url(request, proxies)

        def build_response(self, req: Any, resp: Any) -> Answer:
            """requests' answer without its cookie jar and encoding guess (the body is read as bytes)."""
            answer = Answer()
            answer.status_code = resp.status
            answer.headers = CaseInsensitiveDict(resp.headers)
            answer.raw, answer.reason, answer.url = resp, resp.reason, req.url
            answer.request, answer.connection = req, self
            return answer

    return EnvironmentAdapter


class Gated:
    """Every request through the process-wide :class:`ThrottleGate`; told of a 429 before it leaves the gate, so
    the others stay back until the retry is decided. Counts the requests that left (one operation's call).

    ``deadline`` (the gate's clock): when the gate would stay closed past it, nothing is sent and
    :class:`~optout_core.dataverse.errors.OutOfTime` is raised, for the caller to put the work back."""

    def __init__(self, sender: HttpSender, gate: ThrottleGate, deadline: float | None = None) -> None:
        self._sender, self._gate, self._deadline = sender, gate, deadline
        self.requests = 0

    def send(self, request: Request) -> Response | Lost:
        if not self._gate.enter(self._deadline):  # due again when the gate opens: Retry-After as the gate knows it
            raise OutOfTime(
                "Dataverse's throttle pause outlasts the time left: nothing sent, to be tried later",
                retry_after=self._gate.closed_for(),
            )
        try:
            self.requests += 1
            answer = self._sender.send(request)
            if isinstance(answer, Response) and answer.status == 429:
                self._gate.refused()
            return answer
        finally:
            self._gate.leave()
