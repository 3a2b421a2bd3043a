"""write_wall_vs_sdk (and write_wall_batch_vs_sdk): wall time of N row updates, ours ÷ the official SDK's.

Like with like: the same N single-row updates (``donotbulkemail = true`` on existing contacts, one
PATCH with ``If-Match: *`` each), the same thread concurrency C (a thread pool of C workers calling a
shared client; our client's own gate is also C), the same stand-in (its own process, HTTPS because the
SDK accepts nothing else, no added latency), the same static token credential. Ours is
``DataverseClient.update``; the SDK's is ``client.records.update`` inside its recommended ``with``
block. Both are warmed up first (connections open, the SDK's EntityDefinitions lookup cached), so the
figure is the steady cost per write. Rounds alternate which side goes first; medians are compared.

Then each client is profiled on N/3 sequential updates, to show how much of a write is the client's own
code and how much the HTTP stack both share.

Separately, ``write_wall_batch_vs_sdk``: the same N updates through our ``update_many`` ($batch,
<= 1,000 per request, one call from one thread) over the same SDK wall time.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import sdk
from .common import TOKEN, median
from .standin_proc import RemoteStandIn, row_ids

PREFIX = 0xC0DE
CHANGES = {"donotbulkemail": True}


def run(quick: bool, concurrency: int = 8) -> dict[str, Any]:
    version = sdk.available()
    if version is None:
        return {
            "write_wall_vs_sdk": None,
            "write_wall_batch_vs_sdk": None,
            "notes": {
                "write_wall_vs_sdk": "PowerPlatform-Dataverse-Client is not installed: "
                "pip install -r requirements-bench.txt"
            },
        }
    from optout_core.dataverse.auth import StaticTokenCredential
    from optout_core.dataverse.client import DataverseClient, Write
    from optout_core.domain.retry import RetryPolicy

    n = 300 if quick else 1000
    rounds = 3 if quick else 7
    ids = row_ids(PREFIX, n)
    credential = StaticTokenCredential(TOKEN)
    walls: dict[str, list[float]] = {"ours": [], "sdk": [], "ours_batch": []}
    cpu: dict[str, list[float]] = {"ours": [], "sdk": [], "ours_batch": []}
    incomplete: dict[str, int] = {"ours": 0, "sdk": 0, "ours_batch": 0}
    requests_per_round: dict[str, list[int]] = {"ours": [], "sdk": [], "ours_batch": []}

    with RemoteStandIn(tls=True) as standin, sdk.trusting(standin.ca_file):
        standin.seed(PREFIX, n)
        ours = DataverseClient(standin.url, credential, retry=RetryPolicy(), timeout=30.0, max_concurrency=concurrency)
        with sdk.client(standin.url, credential) as theirs, ThreadPoolExecutor(concurrency) as pool:

            def ours_single() -> None:
                results = list(pool.map(lambda rid: ours.update("contact", rid, CHANGES), ids))
                assert all(r.error is None and r.value.found for r in results)

            def sdk_single() -> None:
                list(pool.map(lambda rid: theirs.records.update("contact", rid, CHANGES), ids))

            def ours_batch() -> None:
                result = ours.update_many([Write("contact", rid, CHANGES) for rid in ids])
                assert all(o.error is None and o.value.found for o in result.items)

            sides = {"ours": ours_single, "sdk": sdk_single, "ours_batch": ours_batch}
            # Warm-up: every pooled connection open, TLS done, the SDK's entity-set lookup cached.
            warm = ids[: concurrency * 4]
            list(pool.map(lambda rid: ours.update("contact", rid, CHANGES), warm))
            list(pool.map(lambda rid: theirs.records.update("contact", rid, CHANGES), warm))
            ours.update_many([Write("contact", rid, CHANGES) for rid in warm])
            metadata_after_warmup = standin.counts()["metadata_requests"]

            names = list(sides)
            for round_ in range(rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    before = standin.counts()
                    cpu_started, started = time.process_time(), time.perf_counter()
                    sides[name]()
                    wall = time.perf_counter() - started
                    cpu_used = time.process_time() - cpu_started
                    after = standin.counts()
                    walls[name].append(wall)
                    cpu[name].append(cpu_used)
                    requests_per_round[name].append(after["requests"] - before["requests"])
                    incomplete[name] += n - (after["writes"] - before["writes"])
            final = standin.counts()
            profile = {
                "ours": _profile(lambda rid: ours.update("contact", rid, CHANGES), ids[: n // 3]),
                "sdk": _profile(lambda rid: theirs.records.update("contact", rid, CHANGES), ids[: n // 3]),
            }
        ours.close()

    ours_wall, sdk_wall, batch_wall = (median(walls[k]) for k in ("ours", "sdk", "ours_batch"))
    return {
        "write_wall_vs_sdk": round(ours_wall / sdk_wall, 3),
        "write_wall_batch_vs_sdk": round(batch_wall / sdk_wall, 3),
        "writes": {
            "n": n,
            "concurrency": concurrency,
            "rounds": rounds,
            "sdk_version": version,
            "transport": "HTTPS to the loopback stand-in in its own process, keep-alive, no added latency",
            "ours_median_s": round(ours_wall, 4),
            "sdk_median_s": round(sdk_wall, 4),
            "ours_batch_median_s": round(batch_wall, 4),
            "ours_per_update_ms": round(ours_wall / n * 1000, 3),
            "sdk_per_update_ms": round(sdk_wall / n * 1000, 3),
            "ours_batch_per_update_ms": round(batch_wall / n * 1000, 3),
            "client_cpu_median_s": {k: round(median(v), 4) for k, v in cpu.items()},
            "walls_s": {k: [round(x, 4) for x in v] for k, v in walls.items()},
            "requests_per_round": requests_per_round,
            "updates_not_written": incomplete,
            "sdk_metadata_requests": metadata_after_warmup,
            "profile_ms_per_update": profile,
            "standin_totals": final,
        },
    }


def _profile(update: Callable[[str], Any], ids: list[str]) -> dict[str, float]:
    """Where one client's time goes per update, one thread, under cProfile (which inflates everything
    alike): its own code (optout_core, or the SDK's package) versus the HTTP stack both share (requests,
    urllib3, http.client, ssl, the rest of the standard library)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for rid in ids:
        update(rid)
    profiler.disable()
    own = shared = 0.0
    for (filename, _, _), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        if "optout_core" in filename or "PowerPlatform" in filename:
            own += tottime
        else:
            shared += tottime
    per = 1000 / len(ids)
    return {
        "own_code_ms": round(own * per, 3),
        "shared_http_stack_ms": round(shared * per, 3),
        "own_share": round(own / (own + shared), 3),
        "updates": len(ids),
    }
