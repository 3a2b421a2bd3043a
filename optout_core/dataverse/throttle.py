"""One gate per process in front of every Web API request: a 429 slows every worker, not just one.

Dataverse's service protection counts per application user, so when one request is told to wait
``Retry-After`` seconds, every other request from this process would be throttled too: they all wait
at the gate until the pause is over. A semaphore bounds the requests in flight (Dataverse refuses
more than 52 concurrent requests per user).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ThrottleGate:
    def __init__(
        self,
        max_concurrency: int = 8,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self._clock, self._sleep = clock, sleep

    def hold(self, seconds: float) -> None:
        """Pause every request for ``seconds`` from now (a longer pause already set is kept)."""
        with self._lock:
            self._resume_at = max(self._resume_at, self._clock() + seconds)

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._resume_at - self._clock())

    def __enter__(self) -> ThrottleGate:
        served = 0.0
        while True:  # wait out the pause; again if another 429 lengthened it meanwhile
            with self._lock:
                target = self._resume_at
            wait = target - self._clock()
            if target <= served or wait <= 0:
                break
            self._sleep(wait)
            served = target
        self._slots.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._slots.release()
