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
    # The step of Retry-After, in seconds: Dataverse sends whole seconds against a 300 s window. A benchmark
    # that scales the window down by f (300 s -> 300/f s) scales this step by the same f, so that the wait it
    # imposes weighs on the window as much as Dataverse's does (sent with decimals when not whole).
    retry_after_step: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError("ServiceProtection.requests must be a positive whole number")
        if not self.window > 0:
            raise ValueError("ServiceProtection.window must be > 0 seconds")
        if isinstance(self.concurrent, bool) or not isinstance(self.concurrent, int) or self.concurrent < 1:
            raise ValueError("ServiceProtection.concurrent must be a positive whole number")
        if self.execution_ms is not None and not self.execution_ms > 0:
            raise ValueError("ServiceProtection.execution_ms must be > 0 (or None: not modelled)")
        if not self.retry_after_step > 0:
            raise ValueError("ServiceProtection.retry_after_step must be > 0 seconds")

    @classmethod
    def scaled(cls, factor: float, *, concurrent: int = 52, execution: bool = True) -> ServiceProtection:
        """Dataverse's defaults with time scaled down ``factor`` times: the same requests per second and execution
        milliseconds per second, in a window (and a Retry-After step) ``factor`` times shorter."""
        return cls(
            requests=max(1, round(6000 / factor)),
            window=300.0 / factor,
            concurrent=concurrent,
            execution_ms=1_200_000 / factor if execution else None,
            retry_after_step=1.0 / factor,
        )

    def retry_after(self, wait: float) -> str:
        """The Retry-After header for a wait of ``wait`` seconds: rounded up to the step, at least one step."""
        steps = max(1, math.ceil(wait / self.retry_after_step - 1e-9))
        value = steps * self.retry_after_step
        if float(self.retry_after_step).is_integer():
            return str(round(value))
        return f"{math.ceil(value * 1000 - 1e-6) / 1000:.3f}"  # never sooner than the slot frees

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
    # The whole history, for a benchmark to draw or measure from (times are time.monotonic(), which every
    # process of the machine shares): admissions, refusals (time, code) and executions (finished at, ms).
    admissions: tuple[float, ...] = ()
    refusals: tuple[tuple[float, str], ...] = ()
    executions: tuple[tuple[float, float], ...] = ()

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
    running: list[float] = field(default_factory=list)  # admission times of the requests in flight
    peak_in_flight: int = 0
    admitted: int = 0
    first_admitted: float | None = None
    last_admitted: float | None = None
    throttled: dict[str, int] = field(default_factory=dict)
    admissions: list[float] = field(default_factory=list)  # the history behind WindowStats
    refusals: list[tuple[float, str]] = field(default_factory=list)
    history: list[tuple[float, float]] = field(default_factory=list)


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
                # Combined execution time: what finished within the window and what runs now, so far.
                spent = sum(ms for _, ms in load.executions) + sum((now - at) * 1000.0 for at in load.running)
                refusal = self._refusal(protection, load, spent, now)
                if refusal is not None:
                    code, message, wait = refusal
                    load.throttled[code] = load.throttled.get(code, 0) + 1
                    load.refusals.append((now, code))
                    return error(429, code, message, (("Retry-After", protection.retry_after(wait)),)), load, ()
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
            load.admissions.append(now)
            load.first_admitted = now if load.first_admitted is None else load.first_admitted
            load.last_admitted = now
            load.in_flight += 1
            load.running.append(now)
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
                protection.retry_after_step,
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
            # Once enough finished requests slide out; when the requests running now are over the limit on
            # their own, a tenth of the window (their end cannot be known yet).
            wait, left = protection.window / 10, spent
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
            if started in load.running:
                load.running.remove(started)
            execution = (now, (now - started) * 1000.0)
            load.history.append(execution)
            if self.protection is not None:
                load.executions.append(execution)

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
                admissions=tuple(load.admissions),
                refusals=tuple(load.refusals),
                executions=tuple(load.history),
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
