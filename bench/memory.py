"""rss_growth_mb: resident memory growth of the pipeline from message 1,000 to message 10,000.

The measuring process is a fresh interpreter (``python -m bench.memory``, started by :func:`run`) that
holds only the pipeline: :class:`optout_dev.local.LocalPipeline` (router, the
in-memory queue standing in for Service Bus, BulkEmailOptOut writing through our client); the
stand-in runs in its own process. Events are Group Opt out Creates in the Dataverse wire shape, each
with its own campaign log id, over a pool of 2,000 recipients; they are made from one template body by
swapping ids, so building them allocates next to nothing. A few worker threads push them (as the host's
concurrent calls would) in blocks of 1,000; after each block ``gc.collect()`` runs and VmRSS is read
from /proc/self/status. The key is RSS at message 10,000 minus RSS at message 1,000, in MiB.

Known state that grows by design, for reading the figure: the duplicate guard
(:class:`optout_core.app.recent.RecentWork`, up to 20,000 recent work-item keys) and the in-memory queue's
duplicate-detection history (Service Bus keeps that in the broker in production; here it is in process).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import REPO, opt_out_bodies, pipeline_settings, quiet_logging, rss_bytes
from .standin_proc import RemoteStandIn, row_id

PREFIX = 0x3E30
RECIPIENTS = 2000


def run(quick: bool) -> dict[str, Any]:
    """Measure in a fresh interpreter, so that nothing else this suite did is in the process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", *(["--quick"] if quick else [])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the memory measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(quick: bool, threads: int = 4) -> dict[str, Any]:
    from optout_dev.local import LocalPipeline

    quiet_logging()
    total = 3000 if quick else 10_000
    block = 1000
    with RemoteStandIn() as standin:
        standin.seed(PREFIX, RECIPIENTS)
        pipeline = LocalPipeline(pipeline_settings(standin.url, DATAVERSE_MAX_CONCURRENCY=str(threads)))
        checkpoints: list[dict[str, Any]] = []
        outcomes: dict[str, int] = {}
        bodies = opt_out_bodies(total, lambda i: row_id(PREFIX, i % RECIPIENTS), tag=0x10C)
        with ThreadPoolExecutor(threads) as pool:
            for done in range(block, total + 1, block):
                chunk = [next(bodies) for _ in range(block)]
                for result in pool.map(lambda ib: pipeline.run(f"m{ib[0]}", ib[1]), enumerate(chunk, done - block)):
                    outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                del chunk
                gc.collect()
                checkpoints.append(
                    {
                        "message": done,
                        "rss_mib": round(rss_bytes() / 2**20, 2),
                        "allocated_blocks": sys.getallocatedblocks(),
                        "gc_objects": len(gc.get_objects()),
                    }
                )
        requests = standin.counts()["requests"]
    first, last = checkpoints[0], checkpoints[-1]
    growth = last["rss_mib"] - first["rss_mib"]
    designed = _designed_state(last["message"] - first["message"])
    return {
        "rss_growth_mb": round(growth, 2),
        "rss": {
            "unit": "MiB (2**20 bytes)",
            "from_message": first["message"],
            "to_message": last["message"],
            "threads": threads,
            "rss_at_from_mib": first["rss_mib"],
            "rss_at_to_mib": last["rss_mib"],
            "growth_per_1000_messages_kib": round(growth * 1024 / ((last["message"] - first["message"]) / 1000), 1),
            "allocated_blocks_growth": last["allocated_blocks"] - first["allocated_blocks"],
            "gc_objects_growth": last["gc_objects"] - first["gc_objects"],
            "designed_state_growth_mib": designed,
            "process": "a fresh interpreter holding only the pipeline (python -m bench.memory)",
            "outcomes": outcomes,
            "standin_requests": requests,
            "checkpoints": checkpoints,
        },
    }


def _designed_state(messages: int) -> dict[str, float]:
    """Python memory that ``messages`` more messages add, by design, to the two histories the pipeline
    keeps (measured apart with tracemalloc through their public APIs, with keys of the real shape): the
    duplicate guard's recent work-item keys (bounded: 20,000) and the in-memory queue's
    duplicate-detection history (a stand-in for the broker's; unbounded in this test double)."""
    import tracemalloc

    from optout_core.app.recent import RecentWork
    from optout_core.servicebus.envelopes import OutboundMessage
    from optout_dev.queues import InMemoryQueues

    def key(i: int) -> str:  # a fresh string each time, as each structure gets its own in the pipeline
        return f"{uuid.UUID(int=(0x20C << 96) | i, version=4)}:opt_out"

    tracemalloc.start()
    try:
        recent = RecentWork()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(messages):
            k = key(i)
            recent.claim(k)
            recent.release(k, done=True)
        del k
        recent_bytes = tracemalloc.get_traced_memory()[0] - base
        queues = InMemoryQueues()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(messages):
            queues.send(OutboundMessage(queue="opt-out", body=b"{}", message_id=key(i)))
            queues.take("opt-out")
        queue_bytes = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return {
        "duplicate_guard_mib": round(recent_bytes / 2**20, 2),
        "queue_duplicate_history_mib": round(queue_bytes / 2**20, 2),
    }


if __name__ == "__main__":
    print(json.dumps(measure("--quick" in sys.argv[1:])))
