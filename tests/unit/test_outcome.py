"""The outcome log line (optout_core.app.outcome): one JSON line per message, record ids only."""

import pytest

from optout_core.app.outcome import OutcomeRecord
from optout_core.app.redrive import shown
from optout_core.app.settle import rejected_copy
from optout_core.domain.model import Outcome
from optout_core.domain.settings import Settings
from optout_core.servicebus.envelopes import InboundMessage


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
