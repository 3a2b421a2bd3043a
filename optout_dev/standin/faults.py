"""Injected failures: the :class:`Fault` a test asks for, picking the one a request gets (queued or at a seeded
random rate), and the answer it produces."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from optout_dev.standin.responses import Response, error, phrase

THROTTLE_MESSAGE = "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
_DEFAULT_RETRY_AFTER_429 = 1.0  # Dataverse always sends Retry-After on 429; keep tests fast

# Default error.code / message per status for injected faults (docs/dataverse-webapi.md §2, §4).
_FAULT_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("0x80040265", "The operation was canceled by a plug-in."),  # a plug-in rejecting a valid update
    401: ("", "The access token is invalid or has expired."),
    403: ("0x80040220", "Principal user is missing a privilege required for this operation."),
    404: ("0x80040217", "The requested record was not found or you do not have sufficient permissions to view it."),
    408: ("", "The request timed out."),
    412: ("0x80060882", "The version of the existing record doesn't match the RowVersion property provided."),
    413: ("", "The request payload is too large."),
    429: ("0x80072322", THROTTLE_MESSAGE),
    500: ("0x80040216", "An unexpected error occurred."),
    502: ("", "Bad Gateway"),
    503: ("", "Service Unavailable"),
    504: ("", "Gateway Timeout"),
}


@dataclass(frozen=True)
class Fault:
    """One injected failure. A fault applies before authentication and routing; with ``inner=True`` it
    applies to one operation inside a ``$batch`` instead (matched on the operation's method and path,
    consumed by the first operation that matches), the batch itself being served as usual."""

    status: int = 503
    retry_after: float | None = None  # seconds; sent as whole seconds, rounded up, like Dataverse
    code: str | None = None  # None -> the usual code for the status ("" allowed)
    message: str | None = None
    drop: bool = False  # close the connection without writing a byte
    delay: float = 0.0  # sleep first (provokes client read timeouts)
    method: str | None = None  # only requests with this method match (None = any)
    path_contains: str | None = None  # only requests whose path (with query) contains this match
    # Serve the request first (a write commits), then fail the answer: the client cannot tell whether its
    # write happened.
    after: bool = False
    # Match one operation inside a $batch (method/path are the inner request's, path resolved to
    # /api/data/v9.2/...), not an HTTP request.
    inner: bool = False
    # Sent as the Retry-After header exactly as given ("10000000000", "inf", "-5", "soon", an HTTP date),
    # instead of the numeric retry_after.
    retry_after_header: str | None = None
    # Serve the request first (a write commits, a $batch runs whole), then cut its answer off mid-body: the
    # status line and headers go out with a Content-Length larger than the part of the body that follows,
    # then the connection closes. An answer without a body to cut (a PATCH's 204) is replaced by this
    # fault's own error answer (``status``: a gateway's 502 page, say), cut the same way. ``requests``
    # raises ``requests.exceptions.ChunkedEncodingError`` (urllib3's ``ProtocolError("Connection broken:
    # IncompleteRead(...)")``) while reading the body, i.e. from ``Session.send`` before any status is seen.
    cut: bool = False

    def __post_init__(self) -> None:
        if not self.drop and not 400 <= self.status <= 599:
            raise ValueError(f"Fault.status must be an HTTP error status (400-599), got {self.status}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("Fault.retry_after must be >= 0")
        if self.retry_after_header is not None:
            if self.retry_after is not None:
                raise ValueError("Fault.retry_after and Fault.retry_after_header exclude each other")
            if any(c in self.retry_after_header for c in "\r\n\0"):
                raise ValueError("Fault.retry_after_header must be one header line")
        if self.cut and (self.drop or self.inner):
            raise ValueError("Fault(cut=True) cuts an HTTP answer: not with drop=True or inner=True")
        if self.delay < 0:
            raise ValueError("Fault.delay must be >= 0")

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and (
            self.path_contains is None or self.path_contains in path
        )


class FaultInjector:
    """The queued faults and the random fault rate; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._rate = 0.0
        self._rate_faults: tuple[Fault, ...] = ()
        self._rng = random.Random(0)

    def inject(self, faults: Sequence[Fault], times: int = 1) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._queue.extend(fault for fault in faults for _ in range(times))

    def set_rate(self, rate: float, faults: Sequence[Fault], seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        faults = tuple(faults)
        if rate > 0 and not faults:
            raise ValueError("a positive rate needs at least one fault")
        with self._lock:
            self._rate = rate
            self._rate_faults = faults
            self._rng = random.Random(seed)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def pick(self, method: str, path: str, inner: bool = False) -> Fault | None:
        """The fault a request (``inner``: an operation inside a $batch) gets, if any: the first queued one it
        matches (consumed), else maybe one drawn at the random rate."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.inner == inner and fault.matches(method, path):
                    return self._queue.pop(index)
            # Exactly one draw per request (plus one choice on a hit): same traffic, same faults. An
            # operation inside a $batch draws only when some rate fault is an inner one, so adding
            # batches to a test never shifts the faults its plain requests get.
            if (
                self._rate > 0
                and (not inner or any(fault.inner for fault in self._rate_faults))
                and self._rng.random() < self._rate
            ):
                candidates = [
                    fault for fault in self._rate_faults if fault.inner == inner and fault.matches(method, path)
                ]
                if candidates:
                    return self._rng.choice(candidates)
        return None


def fault_response(
    fault: Fault, *, stopping: threading.Event, challenge: str, served: Response | None = None
) -> Response:
    """The answer a fault gives (after its delay; a dropped connection if the stand-in stops meanwhile).
    ``challenge`` is the ``WWW-Authenticate`` value a 401 carries; ``served`` the answer the request got when
    it was served first (``after`` or ``cut``), which a ``cut`` fault sends cut off when it has a body."""
    if fault.delay and stopping.wait(fault.delay):
        return Response(0, drop=True)  # stopping: don't keep the client (or stop()) waiting
    if fault.drop:
        return Response(0, drop=True)
    if fault.cut and served is not None and (served.drop or (served.body and served.status not in (204, 304))):
        return served if served.drop else replace(served, cut=True)
    default_code, default_message = _FAULT_DEFAULTS.get(fault.status, ("", phrase(fault.status)))
    headers: list[tuple[str, str]] = []
    retry_after = fault.retry_after
    if retry_after is None and fault.status == 429:
        retry_after = _DEFAULT_RETRY_AFTER_429
    if fault.retry_after_header is not None:
        headers.append(("Retry-After", fault.retry_after_header))
    elif retry_after is not None:
        headers.append(("Retry-After", str(math.ceil(retry_after))))
    if fault.status == 401:
        headers.append(("WWW-Authenticate", challenge))
    answer = error(
        fault.status,
        default_code if fault.code is None else fault.code,
        default_message if fault.message is None else fault.message,
        tuple(headers),
    )
    return replace(answer, cut=True) if fault.cut else answer
