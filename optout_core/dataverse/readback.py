"""Read-backs: whether a write whose answer never arrived already took effect, told by reading its row.

A write that left but whose answer was lost (a timeout, a dropped connection, a gateway's 502/504, a ``$batch``
answer that cannot be matched) may have committed. Before it is sent again its row is read; when the row
already holds the write, it is not written twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optout_core.dataverse.batching import Send, replies
from optout_core.dataverse.errors import DataverseError, DataverseRejected, Undetermined
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.sender import Lost, Refused, error_of

log = logging.getLogger("optout.dataverse")
HELD = Response(204, {}, b"")  # the row already holds the write: as good as the write's own 204


@dataclass(frozen=True, slots=True)
class ReadBack:
    """How to tell whether an unanswered write already took effect: the row holds ``expected``."""

    path: str
    expected: Mapping[str, Any]

    def request(self) -> Request:
        return Request("GET", f"{self.path}?$select={','.join(self.expected)}", {})


@dataclass(frozen=True, slots=True)
class Findings:
    """What the reads told, by the index of their check: :data:`HELD` (the row holds the write), the 404 (the
    row is gone) or the error that refused the read for good (the write would be refused too). ``unknown``: a
    read could not tell (the checks after it were not read)."""

    settled: Mapping[int, Response | DataverseError] = field(default_factory=dict)
    unknown: Undetermined | None = None


def read_back(send: Send, checks: Sequence[ReadBack], *, batch: bool, retry_after_cap: float) -> Findings:
    settled: dict[int, Response | DataverseError] = {}
    answers = replies(send, [check.request() for check in checks], batch=batch)
    for index, (check, answer) in enumerate(zip(checks, answers, strict=True)):
        if isinstance(answer, Lost):
            return Findings(settled, Undetermined(answer.cause))
        response = answer.answer if isinstance(answer, Refused) else answer
        if response.status == 404:
            settled[index] = response
            continue
        if response.status != 200:
            error = error_of(answer, retry_after_cap)
            if not isinstance(error, DataverseRejected):
                return Findings(settled, Undetermined(str(error)))
            settled[index] = error
            continue
        try:
            row = json.loads(response.body)
        except ValueError:
            return Findings(settled, Undetermined("Dataverse's read-back answer was not JSON"))
        if all(row.get(column) == value for column, value in check.expected.items()):
            log.info("dataverse read-back: row already holds the update; not written again")
            settled[index] = HELD
    return Findings(settled)
