"""Many requests as one or more ``$batch`` requests (up to 1,000 parts each, ``continue-on-error``), and each
part's answer matched back to its request. The wire format is :mod:`~optout_core.dataverse.odata_batch`'s.

A batch groups several operations into one request (docs/dataverse-webapi.md §5): a lone operation (a single
request, or a last chunk of one) is sent as itself, and its reply is the one it gets when not batching. A part's
answer and a plain one read alike (a :class:`~optout_core.dataverse.odata_batch.Response` either way); only a
whole-``$batch`` failure is a :class:`~optout_core.dataverse.sender.Refused` that stands for each part."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from optout_core.dataverse import odata_batch
from optout_core.dataverse.odata_batch import Request
from optout_core.dataverse.sender import Lost, Refused, Reply

API = "/api/data/v9.2"
Send = Callable[[Request], Reply]


def replies(send: Send, requests: Sequence[Request], *, batch: bool) -> Iterator[Reply]:
    """Each request's reply, in order: one request each, or ``$batch`` chunks of two or more. Lazy: a chunk is
    sent only when its first reply is asked for, so a caller that has seen enough sends no more."""
    if not batch:
        for request in requests:
            yield send(request)
        return
    for start in range(0, len(requests), odata_batch.MAX_OPERATIONS):
        chunk = requests[start : start + odata_batch.MAX_OPERATIONS]
        if len(chunk) == 1:  # a batch of one is the same request wrapped: send it as itself
            yield send(chunk[0])
        else:
            yield from exchange(send, chunk)


def exchange(send: Send, requests: Sequence[Request]) -> list[Reply]:
    """One ``$batch`` request: each part's reply, in order. A whole-batch failure is every part's."""
    content_type, body = odata_batch.build(requests)
    headers = {"Content-Type": content_type, "Prefer": "odata.continue-on-error"}
    answer = send(Request("POST", f"{API}/$batch", headers, body))
    if isinstance(answer, (Lost, Refused)):
        return [answer] * len(requests)
    if answer.status != 200:
        return [Refused(answer, " to $batch")] * len(requests)
    try:
        parts = odata_batch.parse(answer.headers.get("Content-Type", ""), answer.body)
    except odata_batch.BatchFormatError:
        parts = []
    if len(parts) != len(requests):  # an answer we cannot match to the operations: as good as lost
        return [Lost(sent=True, cause="Dataverse's $batch answer did not match the request")] * len(requests)
    return list(parts)
