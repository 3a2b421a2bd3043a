"""One gate per process in front of every Web API request: a 429 slows every worker, not just one.

Dataverse's service protection counts per application user, so when one request is told to wait
``Retry-After`` seconds, every other request from this process would be throttled too: they all wait
at the gate until the pause is over. The gate bounds the requests in flight (Dataverse refuses more
than 52 concurrent requests per user).

Several instances of the app share one user's limits, each with its own gate, and nothing else tells
them about each other. So after a 429 the gate lets one request go first when the pause is over, and
one more for every answer that is not a 429 (up to the bound): a process that finds the capacity
taken by another loses one request, not one per worker. And a 429 that comes while the gate is still
reopening (the capacity went to another instance again) is waited out a random part of its Retry-After
longer (a second at most; never less than Retry-After), so that instances told the same Retry-After stop
arriving at once.
docs/performance.md ("fleet") measures what this saves.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

_POLL_SECONDS = 0.05  # a request waiting for room looks again this often (it is also woken by every answer)
_SPREAD_MAX_SECONDS = 1.0  # the longest random addition to a pause after a lost race
_DECIDING_SECONDS = 0.01  # after a 429, the others wait this long for the retry's pause (hold) to be set


class ThrottleGate:
    def __init__(
        self,
        max_concurrency: int = 8,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._resume_at = 0.0
        self._allowed = max_concurrency  # requests allowed in flight now: 1 after a 429, +1 per answer since
        self._in_flight = 0
        self._lost_race = False  # a 429 came while reopening after an earlier one: the next pause is longer
        self._request = threading.local()  # this thread's request through the gate: sent while recovering, refused
        self._clock, self._sleep, self._draw = clock, sleep, draw

    def hold(self, seconds: float) -> None:
        """Pause every request for ``seconds`` from now (a longer pause already set is kept); then one goes
        first, and the others follow as answers come back. After a 429 that came while the gate was still
        reopening, the pause is longer by a random part of itself (of a second at most)."""
        with self._lock:
            if self._lost_race:  # at most a second more: Dataverse's unit, small against its 5-minute windows
                seconds, self._lost_race = seconds + min(seconds, _SPREAD_MAX_SECONDS) * self._draw(), False
            self._resume_at = max(self._resume_at, self._clock() + seconds)
            self._allowed = 1

    def refused(self) -> None:
        """The request this thread sent through the gate was answered 429: called before it leaves the gate, so
        that no other request follows it before the caller decides the retry (and calls :meth:`hold`)."""
        with self._lock:
            self._request.refused = True
            self._lost_race = self._lost_race or getattr(self._request, "recovering", False)
            self._resume_at = max(self._resume_at, self._clock() + _DECIDING_SECONDS)
            self._allowed = 1

    def enter(self, deadline: float | None = None) -> bool:
        """Wait for room, then count this request in flight (:meth:`leave` when it is answered). False, without
        waiting, when the gate would stay closed past ``deadline`` (the gate's clock): a caller's time budget is
        never spent queued here (a message's lock would expire while it waits)."""
        served = 0.0
        while True:  # wait out the pause; again if another 429 lengthened it meanwhile
            with self._lock:
                target = self._resume_at
                now = self._clock()
                wait = target - now
                if target <= served or wait <= 0:
                    if self._in_flight < self._allowed:
                        self._in_flight += 1
                        self._request.recovering = self._allowed < self.max_concurrency
                        self._request.refused = False
                        return True
                    if deadline is not None and now >= deadline:
                        return False
                    self._room.wait(_POLL_SECONDS if deadline is None else min(_POLL_SECONDS, deadline - now))
                    continue
                if deadline is not None and target > deadline:
                    return False
            self._sleep(wait)
            served = target

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if not getattr(self._request, "refused", False):  # answered (or failed) without a 429
                self._allowed = min(self.max_concurrency, self._allowed + 1)
            self._room.notify_all()

    def __enter__(self) -> ThrottleGate:
        self.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave()
