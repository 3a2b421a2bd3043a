"""The Dataverse stand-in in a process of its own, driven over a pipe.

The benchmarks measure a client (ours or the official SDK) or the pipeline; with the stand-in in the
same process its request handling would share that process's GIL, CPU time and memory with what is
measured. So it runs here, in a child (``python -m bench.standin_proc CONFIG_JSON``), which prints one
JSON line (its URL and, with TLS, the certificate to trust) and then answers JSON commands, one per
line on stdin, with one JSON line each on stdout. End of input stops it.

Row ids are derived, not shipped: ``row_id(prefix, i)`` for ``i`` in ``range(count)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from .common import REPO, TOKEN

# The campaign log columns the stand-in accepts (the router's and VERIFY_CAMPAIGN_LOG's reads).
CAMPAIGN_LOG_COLUMNS = ["concep_activitytype", "_concep_recipientid_value", "createdon", "concep_bouncereason"]


def row_id(prefix: int, index: int) -> str:
    return f"{prefix:08x}-0000-4000-8000-{index:012x}"


def row_ids(prefix: int, count: int, start: int = 0) -> list[str]:
    return [row_id(prefix, i) for i in range(start, start + count)]


# ----- the child ---------------------------------------------------------------------------------------------


def _serve(config: dict[str, Any]) -> None:
    from optout_dev.messages import ENTITY
    from optout_dev.standin import DEFAULT_TABLES, DataverseStandIn, Fault, ServiceProtection

    protection = config.get("protection")
    tables: dict[str, Any] = {}
    if config.get("campaign_log"):  # the campaign log table, read by VERIFY_CAMPAIGN_LOG
        tables = {"tables": {**DEFAULT_TABLES, ENTITY: CAMPAIGN_LOG_COLUMNS}, "entity_sets": {ENTITY: f"{ENTITY}s"}}
    standin = DataverseStandIn(
        token=TOKEN,
        tls=bool(config.get("tls")),
        latency=float(config.get("latency", 0.0)),
        protection=ServiceProtection(**protection) if protection else None,
        **tables,
    )
    with standin:
        hello = {"url": standin.url, "pid": os.getpid()}
        if config.get("tls"):
            hello["ca_file"] = standin.ca_file
        answer_commands(hello, lambda name, args: _command(standin, name, args, Fault))


def answer_commands(hello: dict[str, Any], handle: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
    """The child's protocol: ``hello`` as one JSON line, then each JSON command line (``cmd`` and its arguments)
    answered by ``handle(name, args)`` with one JSON line; an error is reported and the child keeps serving."""
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        name = command.pop("cmd")
        try:
            reply = handle(name, command)
        except Exception as exc:  # noqa: BLE001 — report, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


def _command(standin: Any, name: str, args: dict[str, Any], fault_type: Any) -> dict[str, Any]:
    if name == "seed":
        for rid in row_ids(args["prefix"], args["count"], args.get("start", 0)):
            standin.add_row(args.get("table", "contact"), rid, **args.get("values", {"donotbulkemail": False}))
        return {"seeded": args["count"]}
    if name == "seed_logs":  # campaign log rows as the Web API returns them: each names its recipient contact
        from optout_dev.messages import ACTIVITY, ENTITY

        label = args.get("activity", "Group Opt out")
        for index in range(args["count"]):
            standin.add_row(
                ENTITY,
                row_id(args["prefix"], index),
                **{
                    "concep_activitytype": ACTIVITY[label],
                    "concep_activitytype@OData.Community.Display.V1.FormattedValue": label,
                    "_concep_recipientid_value": row_id(args["recipient_prefix"], args["recipients"][index]),
                    "_concep_recipientid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
                    "createdon": "2025-03-14T09:26:53Z",
                },
            )
        return {"seeded": args["count"]}
    if name == "counts":
        requests = standin.requests
        by_status: dict[str, int] = {}
        for request in requests:
            by_status[str(request.status)] = by_status.get(str(request.status), 0) + 1
        metadata = sum(1 for r in requests if "EntityDefinitions" in r.path)
        return {
            "requests": len(requests),
            "by_status": by_status,
            "metadata_requests": metadata,
            "batch_requests": sum(1 for r in requests if "$batch" in r.path),
            "operations": len(standin.operations),
            "writes": len(standin.writes),
            "throttled": standin.throttled,
            "client_bugs": len(standin.client_bugs),
        }
    if name == "holding":
        table = args.get("table", "contact")
        column, value = args.get("column", "donotbulkemail"), args.get("value", True)
        rows = standin.rows(table)
        wanted = row_ids(args["prefix"], args["count"], args.get("start", 0))
        return {"holding": sum(1 for rid in wanted if (rows.get(rid) or {}).get(column) == value), "of": len(wanted)}
    if name == "stats":
        stats = standin.window_stats()
        out = asdict(stats)
        out["protection"] = None if stats.protection is None else asdict(stats.protection)
        out["allowed_rate"] = stats.allowed_rate
        out["achieved_rate"] = stats.achieved_rate
        return out
    if name == "inject":
        standin.inject(*(fault_type(**fault) for fault in args["faults"]), times=args.get("times", 1))
        return {"pending": standin.pending_faults}
    if name == "fault_rate":
        standin.set_fault_rate(
            args["rate"], [fault_type(**fault) for fault in args["faults"]], seed=args.get("seed", 0)
        )
        return {"ok": True}
    raise ValueError(f"unknown command {name!r}")


# ----- the parent's handle ------------------------------------------------------------------------------------


class RemoteStandIn:
    """Starts the stand-in in a child process; ``with RemoteStandIn(tls=True) as s: s.url ...``."""

    module = "bench.standin_proc"  # the child's module (bench/audit_standin.py serves a typed campaign log table)

    def __init__(
        self,
        *,
        tls: bool = False,
        latency: float = 0.0,
        protection: dict[str, Any] | None = None,
        campaign_log: bool = False,
    ) -> None:
        self.config = {"tls": tls, "latency": latency, "protection": protection, "campaign_log": campaign_log}
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.ca_file: str | None = None
        self.pid: int | None = None

    def __enter__(self) -> RemoteStandIn:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, json.dumps(self.config)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=30)
            raise RuntimeError(f"the stand-in process failed to start (exit {self._proc.returncode})")
        hello = json.loads(line)
        self.url, self.ca_file, self.pid = hello["url"], hello.get("ca_file"), hello["pid"]
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.wait()

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the stand-in process went away")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"stand-in {cmd}: {reply['error']}")
        return reply

    def seed(self, prefix: int, count: int, table: str = "contact", **values: Any) -> None:
        self.call("seed", prefix=prefix, count=count, table=table, values=values or {"donotbulkemail": False})

    def seed_logs(self, prefix: int, recipient_prefix: int, recipients: list[int]) -> None:
        """Campaign log ``row_id(prefix, i)`` names contact ``row_id(recipient_prefix, recipients[i])``."""
        self.call(
            "seed_logs", prefix=prefix, count=len(recipients), recipient_prefix=recipient_prefix, recipients=recipients
        )

    def counts(self) -> dict[str, Any]:
        return self.call("counts")

    def holding(self, prefix: int, count: int, table: str = "contact") -> int:
        return self.call("holding", prefix=prefix, count=count, table=table)["holding"]

    def stats(self) -> dict[str, Any]:
        return self.call("stats")


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
