"""The outcome log line (optout_core.app.outcome): one JSON line per message, record ids only."""

from optout_core.app.outcome import OutcomeRecord
from optout_core.domain.model import Outcome


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
