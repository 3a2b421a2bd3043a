"""Outcome telemetry (optout_core.app.telemetry): fields as custom dimensions, counts and latency as metrics.

Driven through the real OpenTelemetry SDK with its in-memory log exporter and metric reader: what reaches
them is what the Azure Monitor distro exports to Application Insights (customDimensions, customMetrics).
"""

import json
import logging
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from optout_core.app import telemetry
from optout_core.app.outcome import OutcomeRecord, log_outcome
from optout_core.domain.model import Outcome

ROOT = Path(__file__).resolve().parents[2]
# The SDK's own LoggingHandler is what the distro attaches; its deprecation notice is not ours to act on.
pytestmark = pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")


@pytest.fixture
def sdk():
    """An in-memory OpenTelemetry pipeline installed as the process's telemetry; switched off afterwards."""
    logs = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    logger = logging.getLogger("tests.telemetry.outcomes")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    telemetry.use(telemetry.Telemetry(meters.get_meter(telemetry.METER), logger))
    yield logs, reader
    telemetry.reset()
    logger.removeHandler(handler)


def points(reader, name):
    data = reader.get_metrics_data()
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_each_outcome_field_is_a_custom_dimension_and_the_message_keeps_the_line(sdk):
    logs, _ = sdk
    record = OutcomeRecord(
        "BulkEmailOptOut", Outcome.APPLIED, log_id="5c1e", recipient="contact/a1", dataverse_requests=1
    )
    logged = log_outcome(record, time.perf_counter())
    (exported,) = logs.get_finished_logs()
    attributes = dict(exported.log_record.attributes)
    assert {k: attributes[k] for k in ("function", "outcome", "log_id", "recipient", "dataverse_requests")} == {
        "function": "BulkEmailOptOut",
        "outcome": "applied",
        "log_id": "5c1e",
        "recipient": "contact/a1",
        "dataverse_requests": 1,
    }
    assert exported.log_record.body == f"outcome {logged.line()}"


def test_with_the_exporter_loaded_each_line_still_reaches_the_hosts_log_once(sdk, caplog):
    logs, _ = sdk
    with caplog.at_level(logging.INFO, logger="optout"):
        logged = log_outcome(OutcomeRecord("BounceDetail", Outcome.REJECTED, log_id="7a"), time.perf_counter())
    host = [r for r in caplog.records if r.name == "optout"]
    assert [(r.levelno, r.getMessage()) for r in host] == [(logging.WARNING, f"outcome {logged.line()}")]
    assert [e.log_record.body for e in logs.get_finished_logs()] == [f"outcome {logged.line()}"]


class _RefusedIngestion(InMemoryLogRecordExporter):
    """An exporter whose every export fails, as the distro's does when Entra ID refuses its sign-in."""

    def export(self, batch):  # type: ignore[no-untyped-def]
        raise PermissionError("ingestion refused")


def test_when_ingestion_fails_the_hosts_log_still_gets_the_line(caplog):
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(_RefusedIngestion()))
    logger = logging.getLogger("tests.telemetry.refused")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.propagate = False
    telemetry.use(telemetry.Telemetry(MeterProvider().get_meter(telemetry.METER), logger))
    try:
        with caplog.at_level(logging.INFO, logger="optout"):
            logged = log_outcome(OutcomeRecord("BulkEmailOptOut", Outcome.FAILED, log_id="3c"), time.perf_counter())
        assert f"outcome {logged.line()}" in [r.getMessage() for r in caplog.records if r.name == "optout"]
    finally:
        telemetry.reset()
        logger.removeHandler(handler)


def test_a_dimension_never_carries_an_email_address(sdk):
    logs, _ = sdk
    log_outcome(
        OutcomeRecord("CampaignLogRouter", Outcome.IGNORED, activity_type="Spam jane@mail.example.com"),
        time.perf_counter(),
    )
    (exported,) = logs.get_finished_logs()
    assert exported.log_record.attributes["activity_type"] == "Spam <email address>"
    assert "@" not in exported.log_record.body


def test_counts_and_durations_are_metrics_per_function_and_outcome(sdk):
    _, reader = sdk
    for outcome in (Outcome.APPLIED, Outcome.APPLIED, Outcome.REJECTED):
        log_outcome(OutcomeRecord("BounceDetail", outcome), time.perf_counter())
    counts = {(p.attributes["function"], p.attributes["outcome"]): p.value for p in points(reader, telemetry.OUTCOMES)}
    assert counts == {("BounceDetail", "applied"): 2, ("BounceDetail", "rejected"): 1}
    assert sum(p.count for p in points(reader, telemetry.DURATION)) == 3


def test_end_to_end_latency_is_recorded_for_a_written_event_only(sdk):
    _, reader = sdk
    log_outcome(OutcomeRecord("BulkEmailOptOut", Outcome.APPLIED, occurred_on="2026-01-01T00:00:00Z"), 0.0)
    log_outcome(OutcomeRecord("BulkEmailOptOut", Outcome.REJECTED, occurred_on="2026-01-01T00:00:00Z"), 0.0)
    log_outcome(OutcomeRecord("BulkEmailOptOut", Outcome.APPLIED), 0.0)  # no creation time: nothing to measure
    (point,) = points(reader, telemetry.END_TO_END)
    assert point.count == 1 and dict(point.attributes) == {"function": "BulkEmailOptOut"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"outcome": "applied", "occurred_on": "2026-03-01T12:00:00Z"}, 90_000.0),
        ({"outcome": "applied", "occurred_on": "2026-03-01T12:00:00"}, 90_000.0),  # no zone: UTC, as Dataverse
        ({"outcome": "applied", "occurred_on": "2026-03-01T12:05:00Z"}, None),  # in the future: a clock or a forgery
        ({"outcome": "applied", "occurred_on": "yesterday"}, None),
        ({"outcome": "ignored", "occurred_on": "2026-03-01T12:00:00Z"}, None),
    ],
)
def test_end_to_end_runs_from_the_campaign_logs_creation(fields, expected):
    assert telemetry.end_to_end_ms(fields, datetime(2026, 3, 1, 12, 1, 30, tzinfo=UTC)) == expected


def test_without_a_connection_string_telemetry_is_off_and_the_line_goes_to_the_log(caplog):
    telemetry.reset()
    try:
        assert telemetry.current({}) is None
        with caplog.at_level(logging.INFO, logger="optout"):
            log_outcome(OutcomeRecord("BounceDetail", Outcome.APPLIED, log_id="9f"), time.perf_counter())
        (line,) = [r.getMessage() for r in caplog.records if r.name == "optout"]
        fields = json.loads(line.removeprefix("outcome "))
        assert {k: fields[k] for k in ("function", "outcome", "log_id")} == {
            "function": "BounceDetail",
            "outcome": "applied",
            "log_id": "9f",
        }
    finally:
        telemetry.reset()


def test_entra_ingestion_uses_the_named_managed_identity():
    from azure.identity import ManagedIdentityCredential

    assert isinstance(
        telemetry.entra_credential("ClientId=0f5c8e5a-7d6b-4d7e-9a4e-1c2b3d4e5f60;Authorization=AAD"),
        ManagedIdentityCredential,
    )
    assert telemetry.entra_credential("") is None  # key-based ingestion (not what the template sets up)


def test_indexing_the_app_loads_no_telemetry_package():
    """The distro costs about twice a cold `import azure.functions`: it must load with the first outcome only."""
    probe = (
        "import sys, function_app; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_audit_run_is_one_line_and_each_count_a_metric(sdk, caplog):
    logs, reader = sdk
    fields = {"opt_outs": 40, "recipients": 25, "honoured": 13, "not_honoured": 12, "dry_run": True, "clean": False}
    with caplog.at_level(logging.INFO, logger="optout"):
        telemetry.audit_run(logging.WARNING, fields, time.perf_counter())
    (line,) = [r.getMessage() for r in caplog.records if r.name == "optout"]
    assert line.startswith("audit ") and json.loads(line[len("audit ") :])["not_honoured"] == 12
    (exported,) = logs.get_finished_logs()
    assert exported.log_record.attributes["not_honoured"] == 12
    (point,) = points(reader, "optout.audit.not_honoured")
    assert (point.max, point.count, dict(point.attributes)) == (12, 1, {"function": "OptOutAudit", "dry_run": "true"})
    assert points(reader, "optout.audit.fixed") == []  # a count the run did not give is not invented
