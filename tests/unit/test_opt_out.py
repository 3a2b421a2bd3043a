"""How one recipient's opt-out write ended (optout_core.app.opt_out.RecipientWrite), as the failure policy reads it."""

from optout_core.app.opt_out import RecipientWrite, _recipient_write
from optout_core.dataverse.client import Written
from optout_core.dataverse.errors import DataverseRejected, DataverseUnavailable
from optout_core.dataverse.result import Attempt
from optout_core.domain.consent import Tally


def test_a_failed_recipient_write_ends_with_its_own_tries():
    busy = DataverseUnavailable("Dataverse answered 503")
    write = _recipient_write(Attempt[Written](error=busy, requests=3, attempts=3), None)
    failed = write.failed("donotbulkemail")
    assert failed is not None and failed.error is busy and failed.attempts == 3


def test_a_failed_consent_write_ends_restated_with_the_tries_of_the_consent_operation():
    refused = DataverseRejected("Dataverse answered 403 (0x80040220: no privilege)", status=403)
    consent = Attempt[object](error=refused, requests=2, attempts=1)
    write = _recipient_write(Attempt(Written(), requests=2, attempts=0), consent)
    assert write == RecipientWrite(True, None, refused, 0, 1)
    failed = write.failed("donotbulkemail")
    assert failed is not None and failed.attempts == 1 and isinstance(failed.error, DataverseRejected)
    assert str(failed.error).startswith("wrote donotbulkemail, but the consent write failed: Dataverse answered 403")
    assert failed.error.status == 403 and failed.error is not refused


def test_a_written_recipient_with_its_consent_tally_has_no_failure():
    write = _recipient_write(Attempt(Written(), requests=1), Tally(addresses=1, created=1))
    assert write.failed("donotbulkemail") is None and write.consent == Tally(addresses=1, created=1)
