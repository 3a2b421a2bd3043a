"""Sending one Web API request: the :class:`HttpSender` protocol, the one implementation that puts a request on
the wire (:class:`RequestsSender`), and the thin senders stacked on it per call (the throttle gate, counting).

A sender answers a :class:`~optout_core.dataverse.odata_batch.Request` with the
:class:`~optout_core.dataverse.odata_batch.Response`, or with :class:`Lost` when no answer came: what to make
of either (retry, read back, give up) is decided above, in :mod:`optout_core.dataverse.transport`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from optout_core.dataverse.errors import DataverseError, OutOfTime, from_answer
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.throttle import ThrottleGate

if TYPE_CHECKING:
    import requests

_USER_AGENT = "optout (Dataverse Web API client; python-requests)"


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
    """The only place an HTTP request is sent: one pooled ``requests`` session, the Web API's headers, no retries
    of its own (urllib3's are off: retrying is :mod:`~optout_core.dataverse.transport`'s job)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def send(self, request: Request) -> Response | Lost:
        import requests  # lazy: the router never pays for it

        headers = {
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            **request.headers,
        }
        # Prepared by hand and handed to the session's adapter (the connection pool): no cookie jar, auth, hooks
        # or redirect handling per request, a sizeable share of a loopback write's CPU (docs/performance.md).
        # The bearer header is the only credential, Dataverse's cookies are not needed, redirects are not followed.
        prepared = requests.PreparedRequest()
        prepared.prepare_method(request.method)
        prepared.prepare_url(self.url + request.path, None)
        prepared.prepare_headers(headers)
        prepared.prepare_body(request.body, None)
        session = self._get_session()
        try:
            r = session.get_adapter(prepared.url or "").send(
                prepared,
                timeout=self._timeout,
                verify=True if session.verify is None else session.verify,
                proxies=session.proxies,
            )
            body = r.content  # read here: an answer cut off mid-body raises inside this try
        except (requests.ConnectionError, requests.Timeout) as exc:
            # Only a failed connect proves the request never left; anything later may have committed.
            sent = not isinstance(exc, requests.ConnectTimeout)
            return Lost(sent=sent, cause=f"Dataverse unreachable: {type(exc).__name__}")
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            # The answer was cut off mid-body: the request arrived, and a write may have committed.
            return Lost(sent=True, cause=f"Dataverse's answer was cut off: {type(exc).__name__}")
        return Response(r.status_code, r.headers, body)

    def _get_session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = _new_session(self.url)
            return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def _new_session(url: str) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    # Enough pooled connections for the worker's thread pool; retries are ours, not urllib3's.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # Proxy and CA-bundle variables are read once here instead of on every request (requests re-reads the
    # environment per call otherwise, a sizeable share of a loopback write).
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session


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
