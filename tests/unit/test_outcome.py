"""The outcome log line (optout_core.app.outcome): one JSON line per message, record ids only."""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optout_core.app import telemetry
from optout_core.app.outcome import CONNECTION_STRING, OutcomeRecord, log_outcome
from optout_core.app.redrive import shown
from optout_core.app.settle import rejected_copy
from optout_core.domain.model import Outcome
from optout_core.domain.settings import Settings
from optout_core.servicebus.envelopes import InboundMessage

ROOT = Path(__file__).resolve().parents[2]


def test_the_line_holds_ids_and_drops_empty_fields():
    line = OutcomeRecord("BulkEmailOptOut", Outcome.APPLIED, log_id="5c1e", recipient="contact/a1").line()
    assert (
        line == '{"dataverse_requests": 0, "duration_ms": 0.0, "function": "BulkEmailOptOut", "log_id": "5c1e", '
        '"outcome": "applied", "recipient": "contact/a1"}'
    )


def test_an_email_address_quoted_from_a_message_never_reaches_the_line():
    record = OutcomeRecord(
        "CampaignLogRouter",
        Outcome.IGNORED,
        activity_type="Spam jane.doe+x@mail.example.co.uk",
        reason="activity type 'Spam jane.doe+x@mail.example.co.uk' is not an opt-out or bounce type",
    )
    line = record.line()
    assert "@" not in line and line.count("<email address>") == 2


@pytest.mark.parametrize(
    "quoted",
    ["o'brien@example.com", '"jane doe"@example.com', "jane@[10.0.0.1]", "jane@intranet"],
)
def test_a_dataverse_error_quoting_the_recipient_is_masked_whole(quoted):
    record = OutcomeRecord("BulkEmailOptOut", Outcome.REJECTED, reason=f"400: the value {quoted} is not valid")
    line = record.line()
    assert "@" not in line and "brien" not in line and "jane" not in line


def test_the_kept_message_carries_its_reason_masked_and_bounded():
    msg = InboundMessage(body=b"{}", message_id="m1")
    copy = rejected_copy(msg, "refused jane@[10.0.0.1] " * 500, "BulkEmailOptOut", Settings.from_env({}))
    reason = str(copy.application_properties["rejected_reason"])
    assert "jane" not in reason and len(reason) <= 1000


def test_redrive_shows_a_kept_reason_masked():
    assert "jane" not in shown('refused "jane doe"@example.com')


def test_a_copy_changes_only_what_it_names_and_refuses_unknown_fields():
    record = OutcomeRecord("BulkEmailOptOut", Outcome.ROUTED, log_id="5c1e", delivery_count=2)
    copy = record.but(outcome=Outcome.APPLIED, reason="done")
    assert copy == dataclasses.replace(record, outcome=Outcome.APPLIED, reason="done") and copy is not record
    assert record.outcome is Outcome.ROUTED and record.reason is None  # the original stays as it was
    with pytest.raises(TypeError, match="no field colour"):
        record.but(colour="red")
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.reason = "changed"  # type: ignore[misc]


def test_the_fields_are_the_records_own_with_outcomes_as_text_and_the_duration_rounded():
    record = OutcomeRecord("BounceDetail", Outcome.APPLIED, route=None, delivery_count=1, duration_ms=1.23456)
    fields = record.fields()
    assert fields == {
        "function": "BounceDetail",
        "outcome": "applied",
        "delivery_count": 1,
        "dataverse_requests": 0,
        "duration_ms": 1.23,
    }
    assert type(fields["outcome"]) is str


def test_a_line_the_logger_drops_is_not_even_written(monkeypatch):
    def unwritten(self):
        raise AssertionError("the line was built")

    monkeypatch.setattr(logging.getLogger("optout"), "level", logging.WARNING)
    telemetry.use(None)
    try:
        monkeypatch.setattr(OutcomeRecord, "fields", unwritten)
        record = log_outcome(OutcomeRecord("BulkEmailOptOut", Outcome.APPLIED), time.perf_counter())
        assert record.duration_ms >= 0
        with pytest.raises(AssertionError, match="was built"):  # a warning is on: its line is written
            log_outcome(OutcomeRecord("BulkEmailOptOut", Outcome.REJECTED), time.perf_counter())
    finally:
        telemetry.reset()


_CHILD = """
import json, sys, time
import function_app
from optout_core.app.outcome import OutcomeRecord, log_outcome
log_outcome(OutcomeRecord("BulkEmailOptOut", "applied"), time.perf_counter())
print(json.dumps("optout_core.app.telemetry" in sys.modules))
"""


@pytest.mark.parametrize("configured", [False, True])
def test_the_telemetry_module_loads_only_where_application_insights_is_configured(configured):
    env = {k: v for k, v in os.environ.items() if k != CONNECTION_STRING}
    if configured:  # the distro may be missing here: the module still loads, and says so
        env[CONNECTION_STRING] = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    child = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(child.stdout.splitlines()[-1]) is configured
