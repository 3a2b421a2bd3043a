"""The stand-in for the audit benchmark, in a process of its own: the samples' typed campaign log table (its
``createdon`` a date the ``$filter`` compares, its activity type a choice with option metadata), seeded with a
window of opt-out logs and their contacts. ``python -m bench.audit_standin`` prints its URL as one JSON line, then
answers JSON commands one per line (bench/standin_proc.py's protocol and commands, plus ``seed_window``).
"""

from __future__ import annotations

import os
from typing import Any

from .common import TOKEN
from .standin_proc import RemoteStandIn, row_id

CREATED_ON = "2025-03-14T09:26:53Z"


def _serve() -> None:
    from optout_dev.standin import SAMPLES_ACTIVITY_OPTIONS, DataverseStandIn, Fault

    from .standin_proc import _command, answer_commands

    code = {label: c for c, label in SAMPLES_ACTIVITY_OPTIONS.items()}["Group Opt out"]

    def handle(name: str, command: dict[str, Any]) -> dict[str, Any]:
        if name != "seed_window":
            return _command(standin, name, command, Fault)
        for index, recipient in enumerate(command["recipients"]):  # log row_id(prefix, i) names its recipient
            standin.add_row(
                "concep_emailcampaignlog",
                row_id(command["prefix"], index),
                concep_activitytype=code,
                **{"concep_activitytype@OData.Community.Display.V1.FormattedValue": "Group Opt out"},
                createdon=CREATED_ON,
                concep_contactid=row_id(command["recipient_prefix"], recipient),
            )
        return {"seeded": len(command["recipients"])}

    with DataverseStandIn(token=TOKEN, presets=("samples",)) as standin:
        answer_commands({"url": standin.url, "pid": os.getpid()}, handle)


class AuditStandIn(RemoteStandIn):
    """:class:`RemoteStandIn` running this module's child instead."""

    module = "bench.audit_standin"

    def seed_window(self, prefix: int, recipient_prefix: int, recipients: list[int]) -> None:
        self.call("seed_window", prefix=prefix, recipient_prefix=recipient_prefix, recipients=recipients)


if __name__ == "__main__":
    _serve()
