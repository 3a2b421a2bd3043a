"""audit_logs_per_request and audit_wall_vs_floor: the compliance audit over a 100,000-log window.

The stand-in runs in its own process (bench/audit_standin.py) holding the window: opt-out campaign logs
(``Group Opt out``, each naming a contact in its ``concep_contactid`` lookup) and their contacts, a share of them
not opted out (drift). Settings as the README recommends: ``RECIPIENT_COLUMNS`` set, so the logs are read
with a ``$select`` of the columns the router needs.

* ``audit_logs_per_request``: campaign logs checked per Web API request of one dry-run audit
  (:func:`optout_core.app.audit.run_audit`) — the log pages, the activity type metadata and the ``In`` queries
  of the distinct recipients, as the stand-in counted them.
* ``audit_wall_vs_floor``: that audit's wall time against the floor measured beside it in the same run, the
  time to merely page through the same logs with the same client, ``$filter`` and ``$select``
  (:meth:`~optout_core.dataverse.client.DataverseClient.pages`) and nothing else. Sides interleaved, median of
  the rounds.

Beside the timed rounds (and outside them), one more run of each side reports the CPU seconds it took in this
process and in the stand-in's (``cpu_s``): on a busy machine the two processes take turns on one core, and the
wall ratio tends to the ratio of those sums.

The window holds ``LOGS`` logs naming ``LOGS // REPEAT`` distinct contacts, each opted out in ``REPEAT`` logs (an
address on several lists of a week's campaigns); ``--quick`` uses 20,000 logs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .audit_standin import AuditStandIn
from .common import interleaved, median, pipeline_settings, ratio

LOGS, QUICK_LOGS = 100_000, 20_000
REPEAT = 5  # opt-out logs per recipient in the window
DRIFT_EVERY = 10  # one recipient in ten is found not honoured
LOG_PREFIX, CONTACT_PREFIX = 0xA0D1, 0xA0C1
SINCE, UNTIL = "2025-03-14T00:00:00Z", "2025-03-15T00:00:00Z"  # seed_logs creates every log at 09:26:53Z that day


def cpu_seconds(pid: int | None) -> float | None:
    """A process's user and system CPU seconds from /proc (Linux); None where they cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks
    except (OSError, IndexError, ValueError, AttributeError):
        return None


def cpu_split(side: Callable[[], Any], standin_pid: int | None) -> dict[str, float | None]:
    """CPU seconds one run of ``side`` takes here and in the stand-in's process."""
    here, there = time.process_time(), cpu_seconds(standin_pid)
    side()
    after = cpu_seconds(standin_pid)
    return {
        "client": round(time.process_time() - here, 3),
        "standin": round(after - there, 3) if after is not None and there is not None else None,
    }


def run(quick: bool) -> dict[str, Any]:
    from optout_core.app.audit import run_audit
    from optout_core.app.services import build_dataverse_client
    from optout_core.domain.audit import Window, log_filter, log_select, parse_when

    logs = QUICK_LOGS if quick else LOGS
    recipients = logs // REPEAT
    rounds = 3 if quick else 5
    with AuditStandIn() as standin:
        drifted = recipients // DRIFT_EVERY  # the first tenth is not opted out, the rest is
        standin.seed(CONTACT_PREFIX, drifted)
        standin.call(
            "seed", prefix=CONTACT_PREFIX, count=recipients - drifted, start=drifted, values={"donotbulkemail": True}
        )
        standin.seed_window(LOG_PREFIX, CONTACT_PREFIX, [i % recipients for i in range(logs)])
        settings = pipeline_settings(standin.url, RECIPIENT_COLUMNS="concep_contactid")
        window = Window(parse_when(SINCE), parse_when(UNTIL))
        select = (*log_select(settings), f"{settings.campaign_log_table}id")
        where = log_filter(settings, window, None)
        client = build_dataverse_client(settings)
        try:
            # Warm: the token, the connection pool and the stand-in's caches; the metadata read of the codes.
            report = run_audit(settings, client, window)
            before = standin.counts()["requests"]
            report = run_audit(settings, client, window)
            audit_requests = standin.counts()["requests"] - before

            def floor() -> int:
                pages = client.pages(settings.campaign_log_entity_set, select=select, where=where)
                return sum(len(rows) for rows, _ in pages)

            paged = floor()
            sides = {"audit": lambda: run_audit(settings, client, window), "floor": floor}
            times = interleaved(sides, rounds=rounds)
            audit_s, floor_s = times["audit"], times["floor"]
            cpu = {name: cpu_split(side, standin.pid) for name, side in sides.items()}
        finally:
            client.close()
    expected_drift = drifted
    assert report.opt_outs == logs == paged, (report.opt_outs, logs, paged)
    assert (report.recipients, len(report.not_honoured), report.unresolved) == (recipients, expected_drift, ())
    return {
        "audit_logs_per_request": ratio(logs, audit_requests, 1),
        "audit_wall_vs_floor": ratio(median(audit_s), median(floor_s)),
        "audit": {
            "logs": logs,
            "recipients": recipients,
            "not_honoured": expected_drift,
            "requests": audit_requests,
            "requests_reported": report.requests,
            "audit_s": [round(s, 3) for s in audit_s],
            "floor_s": [round(s, 3) for s in floor_s],
            "us_per_log_audit": round(median(audit_s) / logs * 1e6, 2),
            "us_per_log_floor": round(median(floor_s) / logs * 1e6, 2),
            "cpu_s": cpu,
        },
    }
