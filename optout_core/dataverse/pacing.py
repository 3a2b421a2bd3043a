"""How fast a process sends once 429s say the user's window is full: a rate read from the answers alone.

Dataverse counts requests per application user over a sliding window (6,000 in 300 s by default, per web
server; the service protection limits article). Instances of the app that share the user know nothing of each
other; each learns the limit only from its own 429s. Unpaced, every instance bursts whenever the window frees
room, all are refused together, and a fleet of eight spends a quarter of its requests on 429s.

So, once a 429 says the window is full, the process paces itself at its share of the window: the requests
it got through within the window, spread over the window, a little less (:class:`Pacing`). Instances that
each do so send, together, what the window lets through. The rate then grows, slowly at first, so that room
another instance stops using is taken up within a few windows. Microsoft's guidance is to let the
``Retry-After`` values tell the capacity rather than assume a limit: no limit is assumed here, only the answers
are read, and ``Retry-After`` is always waited out in full (by the gate).

A 429 is a full window, not a passing refusal, when its ``Retry-After`` is a large part of the window
(:attr:`Pacing.full`: the window filled long before it frees room), or when the process has been sending for a
whole window (its admissions are then a measure of its share). Otherwise, a young process refused once (the
concurrent-request limit, a short-lived spike) only waits out the ``Retry-After`` and is not held to a rate it
never had the time to show.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

_SLICES = 60  # the window is counted in this many slices: bounded memory whatever the rate
# The Web API's error code for the number-of-requests limit ("Number of requests exceeded the limit of 6000 over
# time window of 300 seconds"; the api-limits article). Only it is paced: a request rate is no answer to the
# execution-time limit (0x80072321: big $batches, slow plug-ins) or the concurrency limit (0x80072326), which
# the gate's bound on requests in flight and the Retry-After pause already answer.
REQUEST_COUNT_LIMIT = "0x80072322"


def paces(code: str | None) -> bool:
    """Whether a 429 with this Web API error code is the number-of-requests limit, which the gate paces against."""
    return code is not None and code.strip().lower() == REQUEST_COUNT_LIMIT


@dataclass(frozen=True)
class Pacing:
    """The pacing rules, a value. ``window``: Dataverse's sliding window in seconds (300, fixed by the service;
    DATAVERSE_PROTECTION_WINDOW_SECONDS, changed only against a stand-in whose time is scaled down).

    A 429 that says the window is full sets the process's share: what it got admitted within the window, per
    second (never more than it was paced at). It then sends at ``backoff`` x its share, climbs back to
    ``plateau`` x its share over one window (the window still holds what was sent before the cut: sending more
    within it only meets more 429s), and from the second window on grows by ``growth`` x that, 3 x after three
    windows, 7 x after four (doubling), until a 429 says it is too much: room another instance stopped using is
    taken up within a few windows, and a fleet at the limit meets a few 429s every few windows, not a burst
    every window. Never slower than ``floor`` requests a second (Dataverse allows a user 20): a process refused
    while its traffic was light is not starved by its small share."""

    window: float = 300.0
    backoff: float = 0.94
    plateau: float = 0.96
    growth: float = 0.02
    floor: float = 1.0
    full: float = 0.25  # a Retry-After of at least this share of the window says the window is full

    def __post_init__(self) -> None:
        if not self.window > 0 or not 0 < self.backoff <= self.plateau <= 1:
            raise ValueError("Pacing needs window > 0 and 0 < backoff <= plateau <= 1")
        if not self.growth >= 0 or not self.floor > 0 or not 0 < self.full <= 1:
            raise ValueError("Pacing needs growth >= 0, floor > 0 and 0 < full <= 1")

    @property
    def second(self) -> float:
        """Dataverse's unit of time (its Retry-After counts whole seconds), a 300th of its window: the longest
        random spread the gate adds to a pause, scaled with the window."""
        return self.window / 300.0

    def full_window(self, retry_after: float, observed: float) -> bool:
        """Whether a 429 with ``retry_after`` says the user's window is full, for a process that has been sending
        for ``observed`` seconds: a long wait, or any 429 once the process has seen a whole window."""
        return retry_after >= self.full * self.window or observed >= self.window

    def cut_lasts(self, retry_after: float) -> float:
        """How long after a cut another 429 cannot cut again: the pause, and, for a short one (a window at its
        limit, not one newly flooded), the rest of the window, which still holds what was sent before the cut."""
        return retry_after if retry_after >= self.full * self.window else max(retry_after, self.window)

    def share(self, current: float | None, admitted: int) -> float:
        """The share (requests a second) a 429 that says the window is full sets, when ``admitted`` requests of
        this process got through within the window: the instances sharing the user, each taking its own, take
        the window's allowance together. ``current``: the rate paced at until now (None: unpaced): a cut never
        raises it."""
        share = max(1, admitted) / self.window
        return share if current is None else min(current, share)

    def rate(self, share: float, elapsed: float) -> float:
        """Requests a second, ``elapsed`` seconds after sending resumed with the share ``share``."""
        windows = max(0.0, elapsed) / self.window
        if windows < 1:
            return max(self.floor, share * (self.backoff + (self.plateau - self.backoff) * windows))
        return max(self.floor, share * self.plateau * (1 + self.growth * (2 ** min(windows - 1, 30) - 1)))


class Admissions:
    """Requests let through over the last window, counted in slices of it (a request refused with a 429 is
    taken back out)."""

    def __init__(self, window: float) -> None:
        self._slice = window / _SLICES
        self._counts: deque[list[int]] = deque()  # [slice number, requests], oldest first

    def add(self, at: float) -> None:
        number = int(at // self._slice)
        if self._counts and self._counts[-1][0] == number:
            self._counts[-1][1] += 1
            return
        self._counts.append([number, 1])
        self._forget(number)

    def _forget(self, newest: int) -> None:
        """Drop the slices wholly outside the window that ends in slice ``newest`` (and empty ones at the front)."""
        while self._counts and (self._counts[0][0] <= newest - _SLICES or self._counts[0][1] == 0):
            self._counts.popleft()

    def take_back(self, at: float) -> None:
        number = int(at // self._slice)
        for entry in reversed(self._counts):
            if entry[0] == number:
                entry[1] = max(0, entry[1] - 1)
                return

    def within(self, now: float) -> int:
        """The requests let through within the window that ends ``now``."""
        self._forget(int(now // self._slice))
        return sum(entry[1] for entry in self._counts)
