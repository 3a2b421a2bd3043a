"""The stand-in for the audit benchmark, in a process of its own: the samples' typed campaign log table (its
``createdon`` a date the ``$filter`` compares, its activity type a choice with option metadata), seeded with a
window of opt-out logs and their contacts. ``python -m bench.audit_standin`` prints its URL as one JSON line, then
answers JSON commands one per line (bench/standin_proc.py's protocol and commands, plus ``seed_window``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .common import TOKEN
from .standin_proc import RemoteStandIn, row_id

CREATED_ON = "2025-03-14T09:26:53Z"


def _serve() -> None:
    from optout_dev.standin import SAMPLES_ACTIVITY_OPTIONS, DataverseStandIn, Fault

    from .standin_proc import _command

    code = {label: c for c, label in SAMPLES_ACTIVITY_OPTIONS.items()}["Group Opt out"]
    with DataverseStandIn(token=TOKEN, presets=("samples",)) as standin:
        print(json.dumps({"url": standin.url, "pid": os.getpid()}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            name = command.pop("cmd")
            try:
                if name == "seed_window":  # log row_id(prefix, i) names contact row_id(recipient_prefix, recipients[i])
                    for index, recipient in enumerate(command["recipients"]):
                        standin.add_row(
                            "concep_emailcampaignlog",
                            row_id(command["prefix"], index),
                            concep_activitytype=code,
                            **{"concep_activitytype@OData.Community.Display.V1.FormattedValue": "Group Opt out"},
                            createdon=CREATED_ON,
                            concep_contactid=row_id(command["recipient_prefix"], recipient),
                        )
                    reply: dict[str, Any] = {"seeded": len(command["recipients"])}
                else:
                    reply = _command(standin, name, command, Fault)
            except Exception as exc:  # noqa: BLE001 — report, keep serving
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)


class AuditStandIn(RemoteStandIn):
    """:class:`RemoteStandIn` running this module's child instead."""

    module = "bench.audit_standin"

    def seed_window(self, prefix: int, recipient_prefix: int, recipients: list[int]) -> None:
        self.call("seed_window", prefix=prefix, recipient_prefix=recipient_prefix, recipients=recipients)


if __name__ == "__main__":
    _serve()
