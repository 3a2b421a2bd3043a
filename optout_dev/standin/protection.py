"""Service protection limits (docs/dataverse-webapi.md §4; Microsoft's api-limits article), per user: a sliding
window of N requests, C requests in flight and, optionally, combined execution time; and the accounting a test
or a benchmark reads back (:class:`WindowStats`)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from optout_dev.standin.responses import Headers, Response, error

# Web API hex codes of the three limits.
_REQUESTS_CODE, _EXECUTION_CODE, _CONCURRENCY_CODE = "0x80072322", "0x80072321", "0x80072326"


@dataclass(frozen=True)
class ServiceProtection:
    """Dataverse's service protection limits, per user, scaled down for tests (docs/dataverse-webapi.md §4).

    ``requests`` within a sliding ``window`` (seconds), ``concurrent`` requests in flight, and, when
    ``execution_ms`` is set, the combined execution time (milliseconds) of the requests that finished
    within the window. Dataverse's defaults are 6,000 / 300 s / 52 / 1,200,000 ms.
    """

    requests: int = 6000
    window: float = 300.0
    concurrent: int = 52
    execution_ms: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError("ServiceProtection.requests must be a positive whole number")
        if not self.window > 0:
            raise ValueError("ServiceProtection.window must be > 0 seconds")
        if isinstance(self.concurrent, bool) or not isinstance(self.concurrent, int) or self.concurrent < 1:
            raise ValueError("ServiceProtection.concurrent must be a positive whole number")
        if self.execution_ms is not None and not self.execution_ms > 0:
            raise ValueError("ServiceProtection.execution_ms must be > 0 (or None: not modelled)")

    @property
    def allowed_rate(self) -> float:
        """Requests per second the number-of-requests limit allows in the long run (N / window)."""
        return self.requests / self.window


@dataclass(frozen=True)
class WindowStats:
    """A snapshot of one user's service-protection accounting (see :meth:`DataverseStandIn.window_stats`).

    Counted are requests that reached the Web API authenticated (a ``$batch`` once); injected faults,
    401/403 answers and 429s are not. Times are ``time.monotonic()`` values.
    """

    protection: ServiceProtection | None
    admitted: int  # requests served (each counted once toward the window)
    throttled: int  # 429s the protection answered, all codes
    throttled_by_code: dict[str, int]
    in_window: int  # admitted requests still inside the sliding window (0 without protection)
    execution_ms_in_window: float  # their combined execution time (finished requests only)
    in_flight: int
    peak_in_flight: int
    first_admitted: float | None
    last_admitted: float | None

    @property
    def allowed_rate(self) -> float | None:
        """N / window in requests per second; None without protection."""
        return None if self.protection is None else self.protection.allowed_rate

    @property
    def achieved_rate(self) -> float:
        """Admitted requests per second between the first and the last admission: (admitted - 1) / span;
        0.0 with fewer than two admissions."""
        if self.admitted < 2 or self.first_admitted is None or self.last_admitted is None:
            return 0.0
        span = self.last_admitted - self.first_admitted
        return (self.admitted - 1) / span if span > 0 else float("inf")


@dataclass
class UserLoad:
    """One user's service-protection accounting (guarded by the lock of the :class:`UserLoads` holding it)."""

    admitted_at: deque[float] = field(default_factory=deque)  # admissions inside the window
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (finished at, milliseconds)
    in_flight: int = 0
    peak_in_flight: int = 0
    admitted: int = 0
    first_admitted: float | None = None
    last_admitted: float | None = None
    throttled: dict[str, int] = field(default_factory=dict)


class UserLoads:
    """Every user's load, admitted or refused against ``protection`` (None: counted, never refused)."""

    def __init__(self, protection: ServiceProtection | None) -> None:
        self.protection = protection
        self._lock = threading.Lock()
        self._loads: dict[str, UserLoad] = {}

    def admit(self, user: str, now: float) -> tuple[Response | None, UserLoad, Headers]:
        """Admit one request of the user (the caller must :meth:`release` the load), or the 429 the service
        protection answers instead; with the rate-limit headers an admitted answer carries.

        A refused request does not count toward any limit: only requests Dataverse processes are
        counted in its windows (the api-limits article counts "requests sent by a user" that it serves;
        its growing Retry-After for clients that keep sending while throttled is not modelled).
        """
        with self._lock:
            load = self._loads.setdefault(user, UserLoad())
            limits: Headers = ()
            protection = self.protection
            if protection is not None:
                self._slide(load, now)
                spent = sum(ms for _, ms in load.executions)
                refusal = self._refusal(protection, load, spent, now)
                if refusal is not None:
                    code, message, wait = refusal
                    load.throttled[code] = load.throttled.get(code, 0) + 1
                    retry_after = str(max(1, math.ceil(wait)))
                    return error(429, code, message, (("Retry-After", retry_after),)), load, ()
                load.admitted_at.append(now)
                # Debugging aids Dataverse sends too (never drive throttling from them, §4).
                limits = (
                    ("x-ms-ratelimit-burst-remaining-xrm-requests", str(protection.requests - len(load.admitted_at))),
                )
                if protection.execution_ms is not None:
                    limits += (
                        (
                            "x-ms-ratelimit-time-remaining-xrm-requests",
                            f"{max(0.0, protection.execution_ms - spent):.0f}",
                        ),
                    )
            load.admitted += 1
            load.first_admitted = now if load.first_admitted is None else load.first_admitted
            load.last_admitted = now
            load.in_flight += 1
            load.peak_in_flight = max(load.peak_in_flight, load.in_flight)
            return None, load, limits

    @staticmethod
    def _refusal(
        protection: ServiceProtection, load: UserLoad, spent: float, now: float
    ) -> tuple[str, str, float] | None:
        """(code, message, seconds until a retry can pass) of the limit a new request would break, if any."""
        if load.in_flight >= protection.concurrent:
            # Checked first: Dataverse answers these at once, whatever the windows hold.
            return (
                _CONCURRENCY_CODE,
                f"Number of concurrent requests exceeded the limit of {protection.concurrent}.",
                1.0,
            )
        if len(load.admitted_at) >= protection.requests:
            # One more fits once the oldest admissions that make the window full have slid out.
            oldest = load.admitted_at[len(load.admitted_at) - protection.requests]
            return (
                _REQUESTS_CODE,
                f"Number of requests exceeded the limit of {protection.requests} "
                f"over time window of {protection.window:g} seconds.",
                oldest + protection.window - now,
            )
        if protection.execution_ms is not None and spent > protection.execution_ms:
            wait, left = protection.window, spent
            for finished, ms in load.executions:
                left -= ms
                if left <= protection.execution_ms:
                    wait = finished + protection.window - now
                    break
            limit = protection.execution_ms
            shown = f"{int(limit):,}" if float(limit).is_integer() else f"{limit:,}"
            return (
                _EXECUTION_CODE,
                f"Combined execution time of incoming requests exceeded limit of {shown} milliseconds over time "
                f"window of {protection.window:g} seconds. Decrease number of concurrent requests or reduce the "
                "duration of requests and try again later.",
                wait,
            )
        return None

    def release(self, load: UserLoad, started: float) -> None:
        """An admitted request (admitted at ``started``) has finished: no longer in flight; its execution time
        counts."""
        now = time.monotonic()
        with self._lock:
            load.in_flight -= 1
            if self.protection is not None:
                load.executions.append((now, (now - started) * 1000.0))

    def stats(self, user: str, now: float) -> WindowStats:
        with self._lock:
            load = self._loads.get(user) or UserLoad()
            self._slide(load, now)
            return WindowStats(
                protection=self.protection,
                admitted=load.admitted,
                throttled=sum(load.throttled.values()),
                throttled_by_code=dict(load.throttled),
                in_window=len(load.admitted_at),
                execution_ms_in_window=sum(ms for _, ms in load.executions),
                in_flight=load.in_flight,
                peak_in_flight=load.peak_in_flight,
                first_admitted=load.first_admitted,
                last_admitted=load.last_admitted,
            )

    @property
    def throttled(self) -> int:
        """429s answered to all users."""
        with self._lock:
            return sum(sum(load.throttled.values()) for load in self._loads.values())

    def _slide(self, load: UserLoad, now: float) -> None:
        # caller holds the lock
        if self.protection is None:
            return
        horizon = now - self.protection.window
        while load.admitted_at and load.admitted_at[0] <= horizon:
            load.admitted_at.popleft()
        while load.executions and load.executions[0][0] <= horizon:
            load.executions.popleft()
