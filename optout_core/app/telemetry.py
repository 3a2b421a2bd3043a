"""Outcome telemetry: each outcome's fields as custom dimensions, and counts and latency as metrics.

Off unless ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (the template sets it; tests, the CLI and bench do
not). Then the first outcome loads the Azure Monitor OpenTelemetry distro, never the indexing of
``function_app.py``: importing the distro costs about 2x a cold ``import azure.functions`` (measured, see
docs/deployment.md), which would break the cold-start budget. Signs in with Entra ID when
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` says ``Authorization=AAD`` (the component refuses keys).
Each outcome line goes to the host's log path (the ``optout`` logger) whatever happens, and a second copy with its
fields as custom dimensions goes through the distro (a logger of its own that does not propagate): should the
distro's ingestion fail (an Entra ID sign-in refused, say), the host's copy still reaches the logs and the log
alerts. Queries that parse the line keep the host's copy (``isempty(customDimensions.outcome)``), one per line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# The setting that turns telemetry on: the outcome line reads it to decide whether to load this module at all.
from optout_core.app.outcome import CONNECTION_STRING

log = logging.getLogger("optout")
METER = "optout"
OUTCOMES = "optout.outcomes"  # counter, per function and outcome
DURATION = "optout.duration_ms"  # histogram: one function's handling of one message, per function and outcome
END_TO_END = "optout.end_to_end_ms"  # histogram: campaign log created → written (outcome applied), per function
AUDIT_METRICS = "optout.audit."  # + each count of a scheduled audit run: one value per run (a histogram)
AUDIT_COUNTS = (
    "opt_outs",
    "recipients",
    "honoured",
    "not_honoured",
    "recipient_missing",
    "unresolved",
    "fixed",
    "failed",
    "left",
    "requests",
)
LOGGER = "optout.outcomes"  # the distro's logger: outcome lines with their fields as custom dimensions
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
# The distro would also trace every HTTP request (Dataverse URLs) and Azure SDK call; outcomes say enough.
_NOT_INSTRUMENTED = ("azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")


class Telemetry:
    """Writes one outcome as a log record with custom dimensions and as metrics."""

    def __init__(self, meter: Any, logger: logging.Logger, host: logging.Logger = log) -> None:
        self.logger, self.host = logger, host
        self.outcomes = meter.create_counter(OUTCOMES, unit="1", description="messages that ended, per outcome")
        self.duration = meter.create_histogram(DURATION, unit="ms", description="one message's handling")
        self.end_to_end = meter.create_histogram(
            END_TO_END, unit="ms", description="campaign log created in Dataverse → recipient written"
        )
        self.audit_counts = {
            name: meter.create_histogram(AUDIT_METRICS + name, unit="1", description=f"audit run: {name}")
            for name in AUDIT_COUNTS
        }

    def emit(self, level: int, line: str, fields: Mapping[str, Any], *, now: datetime | None = None) -> None:
        dimensions = {"function": str(fields.get("function")), "outcome": str(fields.get("outcome"))}
        self.host.log(level, "outcome %s", line)  # the host's logs, independent of the distro's ingestion
        self.logger.log(level, "outcome %s", line, extra={k: v for k, v in fields.items() if v is not None})
        self.outcomes.add(1, dimensions)
        self.duration.record(float(fields.get("duration_ms") or 0.0), dimensions)
        latency = end_to_end_ms(fields, now or datetime.now(UTC))
        if latency is not None:
            self.end_to_end.record(latency, {"function": dimensions["function"]})

    def audit(self, level: int, line: str, fields: Mapping[str, Any]) -> None:
        """One scheduled audit run: its line (host and distro) and each count as a metric."""
        self.host.log(level, "audit %s", line)
        self.logger.log(level, "audit %s", line, extra=dict(fields))
        dimensions = {"function": "OptOutAudit", "dry_run": str(fields.get("dry_run", True)).lower()}
        for name, histogram in self.audit_counts.items():
            value = fields.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                histogram.record(value, dimensions)


def audit_run(level: int, fields: Mapping[str, Any], started: float) -> None:
    """Log a scheduled audit run's one ``audit {json}`` line (the log alert reads it) and, when telemetry is on,
    emit its counts as ``optout.audit.<count>`` metrics. ``started`` is a ``time.perf_counter()``."""
    fields = {"function": "OptOutAudit", **fields, "duration_ms": round((time.perf_counter() - started) * 1000, 2)}
    line = json.dumps(fields, ensure_ascii=False, sort_keys=True)
    sink = current()
    if sink is None:
        log.log(level, "audit %s", line)
    else:
        sink.audit(level, line, fields)


def end_to_end_ms(fields: Mapping[str, Any], now: datetime) -> float | None:
    """Milliseconds from the campaign log's creation to ``now`` for a written (applied) event, else None."""
    occurred_on = fields.get("occurred_on")
    if fields.get("outcome") != "applied" or not isinstance(occurred_on, str):
        return None
    try:
        created = datetime.fromisoformat(occurred_on)
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    elapsed = (now - created).total_seconds() * 1000
    return elapsed if elapsed >= 0 else None


_lock = threading.Lock()
_current: Telemetry | None = None
_decided = False


def current(env: Mapping[str, str] | None = None) -> Telemetry | None:
    """The process's telemetry, set up on first use; None when it is off (no connection string, no distro)."""
    global _current, _decided
    with _lock:
        if not _decided:
            _current, _decided = _configure(os.environ if env is None else env), True
        return _current


def use(telemetry: Telemetry | None) -> None:
    """Use ``telemetry`` from now on (tests: an in-memory OpenTelemetry SDK); None switches it off."""
    global _current, _decided
    with _lock:
        _current, _decided = telemetry, True


def reset() -> None:
    """Decide again on the next outcome (tests)."""
    global _current, _decided
    with _lock:
        _current, _decided = None, False


def _configure(env: Mapping[str, str]) -> Telemetry | None:
    connection_string = env.get(CONNECTION_STRING, "")
    if not connection_string:
        return None
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor  # type: ignore[import-untyped,import-not-found,unused-ignore]
        from opentelemetry import metrics
    except ImportError:
        log.warning("telemetry: azure-monitor-opentelemetry is not installed; outcomes stay in the log lines only")
        return None
    try:
        configure_azure_monitor(
            connection_string=connection_string,
            credential=entra_credential(env.get(AUTHENTICATION_STRING, "")),
            logger_name=LOGGER,
            enable_live_metrics=False,
            instrumentation_options={name: {"enabled": False} for name in _NOT_INSTRUMENTED},
        )
    except Exception as exc:  # noqa: BLE001 - telemetry must never fail a message: fall back to the log line
        log.warning("telemetry: Azure Monitor could not be set up (%s); outcomes stay in the log lines only", exc)
        return None
    logger = logging.getLogger(LOGGER)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return Telemetry(metrics.get_meter(METER), logger)


def entra_credential(authentication_string: str) -> Any:
    """A managed identity credential for ``Authorization=AAD[;ClientId=<id>]``, else None (key-based ingestion)."""
    parts = dict(
        part.split("=", 1) for part in authentication_string.split(";") if "=" in part
    )  # "ClientId=…;Authorization=AAD"
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId") or None
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
