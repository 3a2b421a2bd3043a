"""Throttling: ``ours_completed_under_429`` / ``sdk_completed_under_429`` and ``ceiling_utilisation``.

Both use the stand-in's service-protection mode (not injected faults): the same rules as Dataverse's
(domain notes §4), scaled down: at most ``requests`` requests per user in any sliding ``window`` of
seconds and at most ``concurrent`` in flight, each refusal a 429 with a ``Retry-After`` in whole
seconds and Dataverse's error code. A 429 does not count toward the window. The stand-in runs in its
own process.

* under 429: N single-row updates at concurrency C, the window far smaller than N, once with our
  client (``DataverseClient.update``, its default retry policy) and once with the official SDK
  (``records.update``, which does not retry 429s: the caller would have to), each against a fresh
  stand-in. Completed = the update returned normally and the stand-in committed it.
* ceiling: the whole pipeline (router + BulkEmailOptOut, one event at a time: ``LocalPipeline``) run by C
  worker threads, as C concurrent function invocations would, with N·(k+1) events against a limit of N
  per W seconds (k windows' worth beyond the first window's allowance). Under a sliding window, request
  number j·N+1 can come no sooner than j·W seconds after request 1, whatever the client does; so
  utilisation = k·W ÷ (time from request 1 to request k·N+1): the achieved long-run rate over the
  allowed N/W, 1.0 for a client that takes every freed slot at once. Every event must end ``applied``
  and every row must hold the update. Time is scaled down as a whole: the window, and with it the step
  of ``Retry-After`` (Dataverse's whole second in 300 s becomes W/300). Kept at a whole second, the step
  cost a client that honours it up to a second per window: a quarter of the quick run's 4 s window, where
  Dataverse's 300 s window loses a third of a percent. The quick run read 0.87-0.90 where the full run read
  0.93-0.98.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import sdk
from .common import TOKEN, Clock, opt_out_bodies, pipeline_settings
from .standin_proc import RemoteStandIn, row_id, row_ids

UNDER_PREFIX, CEILING_PREFIX = 0x4290, 0xCE11
CHANGES = {"donotbulkemail": True}


def under_429(quick: bool, concurrency: int = 8) -> dict[str, Any]:
    version = sdk.available()
    n = 200 if quick else 600
    protection = {"requests": 100, "window": 2.0, "concurrent": 52}
    result: dict[str, Any] = {}
    sides: dict[str, dict[str, Any]] = {}
    for side in ("ours", "sdk"):
        if side == "sdk" and version is None:
            result.setdefault("notes", {})["sdk_completed_under_429"] = (
                "PowerPlatform-Dataverse-Client is not installed"
            )
            continue
        with RemoteStandIn(tls=True, protection=protection) as standin, sdk.trusting(standin.ca_file):
            standin.seed(UNDER_PREFIX, n)
            sides[side] = _updates_under_protection(side, standin, row_ids(UNDER_PREFIX, n), concurrency)
            sides[side]["standin"] = standin.counts()
            sides[side]["rows_holding_update"] = standin.holding(UNDER_PREFIX, n)
            stats = standin.stats()
            sides[side]["throttled_by_code"] = stats["throttled_by_code"]
    for side, figures in sides.items():
        result[f"{side}_completed_under_429"] = round(figures["completed"] / n, 4)
    result.setdefault("sdk_completed_under_429", None)
    result["under_429"] = {
        "mode": "stand-in service protection (sliding window + concurrency), not injected faults",
        "n": n,
        "concurrency": concurrency,
        "protection": protection,
        "sdk_version": version,
        "sides": sides,
    }
    return result


def _updates_under_protection(side: str, standin: RemoteStandIn, ids: list[str], concurrency: int) -> dict[str, Any]:
    from optout_core.dataverse.auth import StaticTokenCredential
    from optout_core.dataverse.client import DataverseClient
    from optout_core.domain.retry import RetryPolicy

    credential = StaticTokenCredential(TOKEN)
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def attempt(update: Any, rid: str) -> bool:
        try:
            update(rid)
            return True
        except Exception as exc:  # noqa: BLE001 — a failed update is what is counted
            status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
            key = f"{type(exc).__name__}:{status}"
            with lock:
                errors[key] = errors.get(key, 0) + 1
            return False

    with ThreadPoolExecutor(concurrency) as pool, Clock() as clock:
        if side == "ours":
            client = DataverseClient(
                standin.url, credential, retry=RetryPolicy(), timeout=30.0, max_concurrency=concurrency
            )
            done = list(pool.map(lambda rid: attempt(lambda r: client.update("contact", r, CHANGES).get(), rid), ids))
            client.close()
        else:
            with sdk.client(standin.url, credential) as theirs:
                done = list(
                    pool.map(lambda rid: attempt(lambda r: theirs.records.update("contact", r, CHANGES), rid), ids)
                )
    return {
        "completed": sum(done),
        "failed": len(done) - sum(done),
        "errors": errors,
        "seconds": round(clock.seconds, 3),
    }


def ceiling(
    quick: bool, concurrency: int = 8, protection: dict[str, Any] | None = None, windows: int | None = None
) -> dict[str, Any]:
    from optout_dev.local import LocalPipeline

    if protection is None:
        # Time scaled down as a whole: Retry-After's step shrinks with the window (Dataverse: 1 s in 300 s).
        protection = (
            {"requests": 400, "window": 4.0, "concurrent": 52, "retry_after_step": 4.0 / 300}
            if quick
            else {"requests": 1000, "window": 10.0, "concurrent": 52, "retry_after_step": 10.0 / 300}
        )
    windows = windows or (2 if quick else 5)
    n, w = protection["requests"], protection["window"]
    events = n * (windows + 1)  # the first window's allowance, then `windows` windows' worth
    latency = 0.002
    with RemoteStandIn(protection=protection, latency=latency) as standin:
        standin.seed(CEILING_PREFIX, events)
        pipeline = LocalPipeline(pipeline_settings(standin.url, DATAVERSE_MAX_CONCURRENCY=str(concurrency)))
        bodies = list(opt_out_bodies(events, lambda i: row_id(CEILING_PREFIX, i), tag=0xCE1))

        def one(index: int) -> tuple[Any, float]:
            result = pipeline.run(f"ceiling-{index}", bodies[index])
            return result, time.monotonic()

        with ThreadPoolExecutor(concurrency) as pool, Clock() as clock:
            done = list(pool.map(one, range(events)))
        stats = standin.stats()
        counts = standin.counts()
        holding = standin.holding(CEILING_PREFIX, events)
    outcomes: dict[str, int] = {}
    for result, _ in done:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    lost = events - outcomes.get("applied", 0)

    # Steady state. Under "at most N in any window of W seconds", request number j*N+1 can come no
    # sooner than W*j seconds after request 1, whatever the client does. So the achieved rate over the
    # first `windows` windows is windows*N requests per (t[windows*N] - t[0]) seconds, and the allowed
    # one N per W: utilisation = windows*W / (t[windows*N] - t[0]). Times are the client's completion
    # times (the stand-in's admission plus one service time): a few ms of jitter over >= 10 s.
    finished = sorted(t for _, t in done)
    steady = None
    reached = None
    if len(finished) > windows * n:
        reached = finished[windows * n] - finished[0]
        steady = round(windows * w / reached, 3)

    admitted = stats["admitted"]
    span = (stats["last_admitted"] or 0) - (stats["first_admitted"] or 0)
    allowed = n + n * span / w
    return {
        "ceiling_utilisation": steady,
        "ceiling": {
            "definition": "windows x W / (time from request 1 to request windows x N + 1): the sliding "
            "window lets request jN+1 come no sooner than jW after request 1",
            "protection": protection,
            "added_latency_s": latency,
            "concurrency": concurrency,
            "events": events,
            "windows_beyond_first": windows,
            "outcomes": outcomes,
            "lost": lost,
            "rows_holding_update": holding,
            "seconds_to_request_windows_x_n_plus_1": round(reached, 3) if reached else None,
            "ideal_seconds": windows * w,
            "whole_run_utilisation": round(admitted / allowed, 3) if span > 0 else None,
            "whole_run_definition": "admitted / (N + N x span / W): the most the limit admits in the span",
            "admitted_requests": admitted,
            "throttled_429": stats["throttled"],
            "throttled_by_code": stats["throttled_by_code"],
            "peak_in_flight": stats["peak_in_flight"],
            "admission_span_s": round(span, 3),
            "allowed_requests_in_span": round(allowed, 1),
            "achieved_rate_per_s": round(admitted / span, 2) if span > 0 else None,
            "allowed_long_run_rate_per_s": round(n / w, 2),
            "wall_s": round(clock.seconds, 3),
            "standin_requests": counts["requests"],
        },
    }
