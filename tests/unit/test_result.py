"""What the client's calls come to (optout_core.dataverse.result): one Attempt per operation, a Batch of them."""

import pytest

from optout_core.dataverse.errors import DataverseRejected, DataverseUnavailable
from optout_core.dataverse.result import Attempt, Batch


def test_an_attempts_value_is_had_and_its_error_raised():
    assert Attempt(7, requests=1).get() == 7
    with pytest.raises(DataverseUnavailable):
        Attempt(error=DataverseUnavailable("busy"), requests=3, attempts=3).get()


def test_a_conversion_keeps_the_counts_and_an_error_stays_the_error():
    failed = Attempt[int](error=DataverseUnavailable("busy"), requests=3, attempts=3)
    assert Attempt(2, requests=1).map(str) == Attempt("2", requests=1)
    assert failed.map(str).error is failed.error and failed.map(str).requests == 3


def test_an_answer_that_does_not_say_what_it_must_ends_the_attempt_refused():
    def refuse(value):
        raise DataverseRejected("Dataverse's answer named no created row")

    converted = Attempt("answer", requests=1).map(refuse)
    assert isinstance(converted.error, DataverseRejected) and converted.value is None and converted.requests == 1


def test_a_batch_lists_each_value_or_error_in_order():
    busy = DataverseUnavailable("busy")
    batch = Batch((Attempt({"a": 1}), Attempt(None), Attempt(error=busy)), requests=1)
    assert batch.rows == [{"a": 1}, None, busy]
    assert batch.map(bool).rows == [True, False, busy]
