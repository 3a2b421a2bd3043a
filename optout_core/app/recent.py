"""An in-process guard against duplicates that arrive together.

Dataverse posts at least once and Service Bus redelivers after a lost lock, so two copies of one work
item can reach the same worker process at once, before queue duplicate detection has anything to say
(two deliveries of one message, or a copy sent outside its window). The second copy waits for the
first, and is then skipped when the first finished.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum


class Claim(Enum):
    CLAIMED = "claimed"  # the caller does the work and must release it
    DONE = "done"  # finished recently: a duplicate
    BUSY = "busy"  # another caller is doing it right now


class RecentWork:
    """Keys of work this process finished recently (bounded by count and age), and of work in flight."""

    def __init__(
        self, *, capacity: int = 20_000, ttl: float = 900.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._capacity, self._ttl, self._clock = capacity, ttl, clock
        self._done: OrderedDict[str, float] = OrderedDict()
        self._in_flight: set[str] = set()
        self._changed = threading.Condition()

    def claim(self, key: str) -> bool:
        """True: the caller does the work and must call :meth:`release`. False: it was done recently."""
        with self._changed:
            while key in self._in_flight:
                self._changed.wait()
            finished = self._done.get(key)
            if finished is not None and self._clock() - finished < self._ttl:
                return False
            self._in_flight.add(key)
            return True

    def try_claim(self, key: str) -> Claim:
        """Like :meth:`claim`, but never waits: ``BUSY`` when another caller holds the key right now. A batch
        uses this, so that two batches holding copies of A and B in opposite order cannot wait on each other."""
        with self._changed:
            if key in self._in_flight:
                return Claim.BUSY
            finished = self._done.get(key)
            if finished is not None and self._clock() - finished < self._ttl:
                return Claim.DONE
            self._in_flight.add(key)
            return Claim.CLAIMED

    def release(self, key: str, *, done: bool) -> None:
        """End a claim; ``done`` marks the work finished (False when it failed and may be retried)."""
        with self._changed:
            self._in_flight.discard(key)
            if done:
                self._done[key] = self._clock()
                self._done.move_to_end(key)
                while len(self._done) > self._capacity:
                    self._done.popitem(last=False)
            self._changed.notify_all()
