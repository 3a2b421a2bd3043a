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

And once a 429 says the user's window is full, the gate paces what this process sends at the rate it got
admitted (:mod:`optout_core.dataverse.pacing`), so that the instances sharing the user send, together, what the
window lets through instead of bursting into it whenever it frees room.
docs/performance.md ("fleet") measures what this saves.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from optout_core.dataverse.pacing import Admissions, Pacing

_POLL_SECONDS = 0.05  # a request waiting for room looks again this often (it is also woken by every answer)
_DECIDING_SECONDS = 0.01  # after a 429, the others wait this long for the retry's pause (hold) to be set


class ThrottleGate:
    def __init__(
        self,
        max_concurrency: int = 8,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
        pacing: Pacing | None = None,
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
        self.pacing = pacing or Pacing()
        self._admissions = Admissions(self.pacing.window)
        self._first_at: float | None = None  # when the first request was let in: how long this gate has observed
        self._paced: tuple[float, float] | None = None  # (share, since when): None until a 429 says the window is full
        self._cut_until = 0.0  # until then a 429 answers what was sent before the last cut, and cuts no more
        self._next_at = 0.0  # the earliest time the next paced request goes

    def hold(self, seconds: float, *, paces: bool = False) -> None:
        """Pause every request for ``seconds`` from now (a longer pause already set is kept); then one goes
        first, and the others follow as answers come back. After a 429 that came while the gate was still
        reopening, the pause is longer by a random part of itself (of a second at most: a 300th of the window).
        A 429 of the number-of-requests limit (``paces``) that says the user's window is full sets the pace the
        process sends at once the pause is over (:class:`Pacing`)."""
        with self._lock:
            now = self._clock()
            if paces:
                self._pace_after(now, seconds)
            if self._lost_race:  # a second more at most: Dataverse's unit, small against its 5-minute window
                seconds, self._lost_race = seconds + min(seconds, self.pacing.second) * self._draw(), False
            self._resume_at = max(self._resume_at, now + seconds)
            self._allowed = 1
            if self._paced is not None:
                # Instances told the same Retry-After resume spread over one paced step (a 60th of the window at
                # most); a retry told to wait less than a step does not come back before its turn at the pace.
                step = min(1.0 / self._rate(self._resume_at), self.pacing.window / 60)
                self._next_at = max(self._next_at, self._resume_at + step * self._draw())

    def _pace_after(self, now: float, retry_after: float) -> None:
        """A 429 told this process to wait ``retry_after``: set its share when the 429 says the window is full
        (not again while an earlier cut still shows: see :meth:`Pacing.cut_lasts`)."""
        observed = 0.0 if self._first_at is None else now - self._first_at
        if now < self._cut_until or not self.pacing.full_window(retry_after, observed):
            return
        current = None if self._paced is None else self._rate(now)
        self._paced = (self.pacing.share(current, self._admissions.within(now)), now + retry_after)
        self._cut_until = now + self.pacing.cut_lasts(retry_after)
        self._next_at = now + retry_after  # no credit carried over the pause

    def _rate(self, now: float) -> float:
        assert self._paced is not None
        share, since = self._paced
        return self.pacing.rate(share, now - since)

    def refused(self) -> None:
        """The request this thread sent through the gate was answered 429: called before it leaves the gate, so
        that no other request follows it before the caller decides the retry (and calls :meth:`hold`)."""
        with self._lock:
            self._request.refused = True
            if (at := getattr(self._request, "at", None)) is not None:  # counted when let in; it was not admitted
                self._admissions.take_back(at)
            self._lost_race = self._lost_race or getattr(self._request, "recovering", False)
            self._resume_at = max(self._resume_at, self._clock() + _DECIDING_SECONDS)
            self._allowed = 1

    def enter(self, deadline: float | None = None) -> bool:
        """Wait for room, then count this request in flight (:meth:`leave` when it is answered). False, without
        waiting, when the gate would stay closed past ``deadline`` (the gate's clock): a caller's time budget is
        never spent queued here (a message's lock would expire while it waits)."""
        served = 0.0  # the pause this request has waited out
        slot: float | None = None  # its turn at the pace, once taken
        while True:  # wait out the pause (again if another 429 lengthened it meanwhile), then its turn
            with self._lock:
                now = self._clock()
                target = self._resume_at
                if target > served and target > now:
                    if deadline is not None and target > deadline:
                        return False
                    slot, wait = None, target - now  # a turn taken before this pause is taken anew after it
                else:
                    if slot is None and self._paced is not None:
                        slot = self._take_turn(now, deadline)
                        if slot is None:
                            return False
                    wait = 0.0 if slot is None else slot - now
                    if wait <= 0:
                        if self._in_flight < self._allowed:
                            self._let_in(now)
                            return True
                        if deadline is not None and now >= deadline:
                            return False
                        self._room.wait(_POLL_SECONDS if deadline is None else min(_POLL_SECONDS, deadline - now))
                        continue
            self._sleep(wait)
            served = target

    def closed_for(self) -> float:
        """Seconds until the gate lets a request go (the pause, then the next turn at the pace), 0 when open:
        when work the gate turned away at its deadline is due again."""
        with self._lock:
            now = self._clock()
            opens = max(now, self._resume_at)
            if self._paced is not None:
                opens = max(opens, self._next_at)
            return opens - now

    def _take_turn(self, now: float, deadline: float | None) -> float | None:
        """The time this request goes at the pace (under the lock), or None, taking nothing, when it is past
        ``deadline``. The paced grid goes on when a request comes late (a step of credit at most), so that a
        scheduler's late wake-ups do not lower the rate."""
        step = 1.0 / self._rate(now)
        due = max(self._next_at, now - step)
        slot = max(now, due)
        if deadline is not None and slot > deadline:
            return None
        self._next_at = due + step
        return slot

    def _let_in(self, now: float) -> None:
        self._in_flight += 1
        self._request.recovering = self._allowed < self.max_concurrency
        self._request.refused = False
        self._request.at = now
        self._admissions.add(now)  # counted at once: an answer still on its way is admitted too
        if self._first_at is None:
            self._first_at = now

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
