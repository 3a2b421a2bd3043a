"""``cpu_per_event_vs_floor``: this process's CPU per applied opt-out in steady flow, over a floor measured beside it.

Ours: one event at a time through :class:`optout_dev.local.LocalPipeline` (CampaignLogRouter, the in-memory
opt-out queue, BulkEmailOptOut, the real Web API client with ``requests``; the token is cached after the
warm-up). The floor: what any process must spend on the same event, ``json.loads`` of the same body and one
``PATCH`` of the same row through a bare ``http.client`` connection (kept alive) to the same stand-in. The two
alternate in blocks of ``BLOCK`` events after a warm-up, so the machine's state is shared alike; the CPU is
``time.process_time`` (this process only: not the stand-in's), summed per side, and the key is the ratio of the
two sums per event. A third side, measured the same way, is the app's ``requests`` sender alone (``json.loads``
and the same PATCH through :class:`~optout_core.dataverse.sender.RequestsSender`): ``sender_alone_vs_floor`` is
what keeping ``requests`` costs before any of the pipeline's own work, ``ours_vs_sender_alone`` what the pipeline
adds to it. The ``optout`` logger is at Information, as deployed (host.json), each outcome line
built and formatted as the worker would ship it (``production_logging``). ``--profile``
(``python -m bench.cpu --profile``) prints where ours goes (cProfile).
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from optout_core.dataverse.odata_batch import Request, Response

from .common import TOKEN, opt_out_bodies, pipeline_settings, production_logging
from .standin_proc import RemoteStandIn, row_id

PREFIX, TAG = 0xC9C1, 0xC9D
BLOCK = 50  # events per side before the sides swap
SERVICE_TIME = 0.0  # the stand-in's own wait does not count toward this process's CPU either way
_HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Content-Type": "application/json",
    "If-Match": "*",
    "Accept": "application/json",
    "OData-Version": "4.0",
}


class SenderAlone:
    """``json.loads`` of the body, then one PATCH of its recipient through the app's own ``requests`` sender
    (:class:`~optout_core.dataverse.sender.RequestsSender`, pooled connection) and nothing else: what the event
    would cost with ``requests`` kept and no router, queue, writer, transport or outcome lines around it."""

    _OWN = {name: _HEADERS[name] for name in ("Authorization", "Content-Type", "If-Match")}  # the sender adds the rest

    def __init__(self, url: str) -> None:
        from optout_core.dataverse.sender import RequestsSender

        self._sender = RequestsSender(url, timeout=30)

    def __call__(self, body: bytes, recipient: str) -> None:
        json.loads(body)
        request = Request("PATCH", f"/api/data/v9.2/contacts({recipient})", self._OWN, b'{"donotbulkemail":true}')
        answer = self._sender.send(request)
        if not isinstance(answer, Response) or answer.status != 204:
            raise RuntimeError(f"the sender's PATCH answered {answer}")

    def close(self) -> None:
        self._sender.close()


class Floor:
    """``json.loads`` of the body, then one PATCH of its recipient over one kept-alive ``http.client`` connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)

    def __call__(self, body: bytes, recipient: str) -> None:
        json.loads(body)
        self._connection.request(
            "PATCH", f"/api/data/v9.2/contacts({recipient})", body=b'{"donotbulkemail":true}', headers=_HEADERS
        )
        answer = self._connection.getresponse()
        answer.read()
        if answer.status != 204:
            raise RuntimeError(f"floor PATCH answered {answer.status}")

    def close(self) -> None:
        self._connection.close()


def run(quick: bool) -> dict[str, Any]:
    blocks = 6 if quick else 20  # per side
    return measure(blocks * BLOCK)


def measure(events: int, warm: int = 50) -> dict[str, Any]:
    from optout_dev.local import LocalPipeline

    total = events + warm
    bodies = list(opt_out_bodies(total, lambda i: row_id(PREFIX, i), tag=TAG))
    # The two measuring sides beside ours write rows of their own: the floor the next ``total``, the sender the last.
    others = {
        side: (n, list(opt_out_bodies(total, lambda i, n=n: row_id(PREFIX, n * total + i), tag=TAG + n)))
        for n, side in ((1, "floor"), (2, "sender"))
    }
    cpu = {"ours": 0.0, "floor": 0.0, "sender": 0.0}
    outcomes: dict[str, int] = {}
    with production_logging(), RemoteStandIn(latency=SERVICE_TIME) as standin:
        standin.seed(PREFIX, 3 * total)
        pipeline = LocalPipeline(pipeline_settings(standin.url))
        alone = {"floor": Floor(standin.url), "sender": SenderAlone(standin.url)}

        def one(side: str, index: int) -> None:
            if side == "ours":
                outcome = pipeline.run(f"cpu-{index}", bodies[index]).outcome
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            else:
                n, side_bodies = others[side]
                alone[side](side_bodies[index], row_id(PREFIX, n * total + index))

        for index in range(warm):  # connections, the token and every lazy import in place first
            for side in alone:
                one(side, index)
            pipeline.run(f"cpu-warm-{index}", bodies[index])
        order = ("ours", "floor", "sender")
        for block, start in enumerate(range(warm, total, BLOCK)):
            for side in order[block % 3 :] + order[: block % 3]:  # each side first, second and last in turn
                started = time.process_time()
                for index in range(start, min(total, start + BLOCK)):
                    one(side, index)
                cpu[side] += time.process_time() - started
        for measuring in alone.values():
            measuring.close()
        holding = standin.holding(PREFIX, 3 * total)
    applied = outcomes.get("applied", 0)
    ours_ms = cpu["ours"] / max(1, applied) * 1000
    floor_ms = cpu["floor"] / events * 1000
    sender_ms = cpu["sender"] / events * 1000
    return {
        "cpu_per_event_vs_floor": round(ours_ms / floor_ms, 3) if applied == events and floor_ms > 0 else None,
        "cpu_per_event": {
            "events_per_side": events,
            "warm_up": warm,
            "block": BLOCK,
            "outcomes": outcomes,
            "rows_holding_update": holding,
            "ours_ms": round(ours_ms, 4),
            "floor_ms": round(floor_ms, 4),
            "sender_alone_ms": round(sender_ms, 4),
            "sender_alone_vs_floor": round(sender_ms / floor_ms, 3) if floor_ms > 0 else None,
            "ours_vs_sender_alone": round(ours_ms / sender_ms, 3) if sender_ms > 0 else None,
            "floor": "json.loads of the body + one PATCH of the row through a kept-alive http.client connection",
            "sender_alone": "json.loads of the body + one PATCH of the row through the app's requests sender alone",
            "what": "process CPU (this process only) per applied opt-out: router + opt-out + Web API client",
        },
    }


def profile(events: int = 1000, top: int = 25) -> str:
    """cProfile of ours over ``events`` after a warm-up: the functions with the most cumulative and own time."""
    import cProfile
    import io
    import pstats

    from optout_dev.local import LocalPipeline

    bodies = list(opt_out_bodies(events + 50, lambda i: row_id(PREFIX, i), tag=TAG))
    with production_logging(), RemoteStandIn(latency=SERVICE_TIME) as standin:
        standin.seed(PREFIX, events + 50)
        pipeline = LocalPipeline(pipeline_settings(standin.url))
        for index in range(50):
            pipeline.run(f"warm-{index}", bodies[index])
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for index in range(50, events + 50):
            pipeline.run(f"p-{index}", bodies[index])
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


if __name__ == "__main__":
    if "--profile" in sys.argv:
        print(profile())
    else:
        print(json.dumps(measure(300), indent=2))
