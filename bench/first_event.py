"""``first_event_vs_floor``: a fresh process's time from start to its first applied opt-out, over a floor.

Ours: a fresh interpreter (started from the repository root, like the worker) imports ``function_app`` (the
indexing), then hands one opt-out work item, as CampaignLogRouter queues it, to BulkEmailOptOut's code
(``opt_out_batch`` with the process's ``services()``, built from the environment as deployed: its first token,
its first connection, its first write). The floor: a fresh interpreter imports ``azure.functions`` (what the
worker loads to index any Python app) and sends one ``PATCH`` of a row through a bare ``http.client`` connection
to the same stand-in: nothing can do less. Each child times from its first statement (interpreter start-up is
the same for both and left out); the sides alternate, a warm-up of each is discarded, and the key is the ratio of
the medians. A third side, timed the same way, keeps ``requests`` and nothing of the app: the floor's import,
``import requests`` and the same PATCH through a ``requests.Session``. ``requests_alone_vs_floor`` is what keeping
``requests`` costs the first event before any of the app's own work. Bytecode is cached for every side, as in
``import_vs_floor``.

The token is the loopback stand-in's static one (``DATAVERSE_TOKEN``): a deployed app's first token is a managed
identity round trip to the instance's identity endpoint, which this figure does not include.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import Any

from .common import TOKEN, fresh_child, median, messages, pipeline_settings
from .imports import _env
from .instances import WorkItems
from .standin_proc import RemoteStandIn, row_id

PREFIX, TAG = 0xF125, 0xF12

_OURS = """\
import time
started = time.perf_counter()
import json, sys
import function_app
from optout_core.app.opt_out import opt_out_batch
from optout_core.app.services import services
from optout_core.servicebus.envelopes import InboundMessage
item = json.loads(sys.argv[1])
records = list(opt_out_batch([InboundMessage(body=item["body"].encode("ascii"), message_id=item["message_id"],
    delivery_count=1, correlation_id=item["correlation_id"], application_properties=item["properties"])], services()))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "outcome": [str(r.outcome) for r in records]}))
"""

_FLOOR = """\
import time
started = time.perf_counter()
import json, sys
import azure.functions
import http.client
item = json.loads(sys.argv[1])
connection = http.client.HTTPConnection("127.0.0.1", item["port"], timeout=30)
connection.request("PATCH", f"/api/data/v9.2/contacts({item['row']})", body=b'{"donotbulkemail":true}',
    headers={"Authorization": "Bearer " + item["token"], "Content-Type": "application/json", "If-Match": "*"})
answer = connection.getresponse()
answer.read()
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "outcome": [str(answer.status)]}))
"""


# What keeping ``requests`` costs on its own: the floor's import, ``requests``, and the same PATCH through a
# ``requests.Session`` (its first connection).
_REQUESTS_ALONE = """\
import time
started = time.perf_counter()
import json, sys
import azure.functions
import requests
item = json.loads(sys.argv[1])
answer = requests.Session().patch(f"http://127.0.0.1:{item['port']}/api/data/v9.2/contacts({item['row']})",
    data=b'{"donotbulkemail":true}', timeout=30,
    headers={"Authorization": "Bearer " + item["token"], "Content-Type": "application/json", "If-Match": "*"})
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "outcome": [str(answer.status_code)]}))
"""
_SIDES = ("ours", "floor", "requests_alone")


def _child(script: str, argument: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return fresh_child(["-c", script, json.dumps(argument)], env, "the first-event child")


def run(quick: bool) -> dict[str, Any]:
    samples = 5 if quick else 15
    rows = len(_SIDES) * (samples + 1)
    cache = tempfile.mkdtemp(prefix="optout-bench-pycache-")
    seconds: dict[str, list[float]] = {side: [] for side in _SIDES}
    outcomes: dict[str, dict[str, int]] = {side: {} for side in _SIDES}
    try:
        with RemoteStandIn() as standin:
            standin.seed(PREFIX, rows)
            env = _env(cache)
            env.update(
                {"EXPECTED_ORGANIZATION_ID": messages.ORG_ID, "DATAVERSE_URL": standin.url, "DATAVERSE_TOKEN": TOKEN}
            )
            items = WorkItems(pipeline_settings(standin.url))
            port = int(standin.url.rsplit(":", 1)[1])
            for sample in range(samples + 1):  # sample 0 is the warm-up (bytecode written, page cache warm)
                shift = sample % len(_SIDES)
                for side in _SIDES[shift:] + _SIDES[:shift]:  # each side first, second and last in turn
                    row = row_id(PREFIX, len(_SIDES) * sample + _SIDES.index(side))
                    if side == "ours":
                        (message,) = items.make(TAG, [(sample, row)])
                        argument: dict[str, Any] = {
                            "body": message.body.decode("ascii"),
                            "message_id": message.message_id,
                            "correlation_id": message.correlation_id,
                            "properties": dict(message.application_properties),
                        }
                        result = _child(_OURS, argument, env)
                    else:
                        script = _FLOOR if side == "floor" else _REQUESTS_ALONE
                        result = _child(script, {"port": port, "row": row, "token": TOKEN}, env)
                    if sample:
                        seconds[side].append(result["seconds"])
                        for outcome in result["outcome"]:
                            outcomes[side][outcome] = outcomes[side].get(outcome, 0) + 1
            holding = standin.holding(PREFIX, rows)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    ours, floor, alone = (median(seconds[side]) for side in _SIDES)
    applied = outcomes["ours"].get("applied", 0) == samples
    return {
        "first_event_vs_floor": round(ours / floor, 3) if applied else None,
        "first_event": {
            "samples_per_side": samples,
            "ours_median_ms": round(ours * 1000, 2),
            "floor_median_ms": round(floor * 1000, 2),
            "requests_alone_median_ms": round(alone * 1000, 2),
            "requests_alone_vs_floor": round(alone / floor, 3),
            "ours_vs_requests_alone": round(ours / alone, 3),
            "samples_ms": {side: [round(s * 1000, 2) for s in values] for side, values in seconds.items()},
            "outcomes": outcomes,
            "rows_holding_update": holding,
            "ours": "fresh interpreter: import function_app, then BulkEmailOptOut's code on one work item "
            "(services from the environment, static loopback token, first connection, first write)",
            "floor": "fresh interpreter: import azure.functions, then one PATCH through a bare http.client connection",
            "requests_alone": "fresh interpreter: import azure.functions and requests, then one PATCH through a "
            "requests.Session",
        },
    }
