"""What the stand-in received, for tests to inspect: HTTP requests, the operations inside ``$batch`` requests,
and client misuse the real service would not report."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the stand-in received it; the Authorization header is never kept."""

    method: str
    path: str  # as sent, including the query string (inside a $batch: resolved to /api/data/...)
    headers: dict[str, str]
    body: bytes
    status: int  # status answered; 0 for a dropped connection
    # The $batch's serial number (1, 2, ...): on the $batch request itself (in .requests) and on each
    # operation it held (in .operations); else None.
    batch: int | None = None
    cut: bool = False  # the answer (with ``status``) was cut off mid-body: Fault(cut=True)


def kept_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as received, a repeated one joined with ", "; never Authorization (tokens are not kept)."""
    kept: dict[str, str] = {}
    for name, value in headers:
        if name.lower() != "authorization":
            kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept


class Traffic:
    """The recorded requests, batch operations and client bugs, in order; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._operations: list[RecordedRequest] = []
        self._batches = 0
        self._client_bugs: list[str] = []

    def record_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def record_operation(self, operation: RecordedRequest) -> None:
        with self._lock:
            self._operations.append(operation)

    def next_batch(self) -> int:
        """The serial number of a new $batch: 1, 2, ..."""
        with self._lock:
            self._batches += 1
            return self._batches

    def bug(self, description: str) -> None:
        with self._lock:
            self._client_bugs.append(description)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def operations(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._operations)

    @property
    def client_bugs(self) -> list[str]:
        with self._lock:
            return list(self._client_bugs)
