"""What a Web API answer means (optout_core.dataverse.errors): transient or permanent, the Retry-After to honour,
and the administrator's advice."""

import logging

import pytest

from optout_core.dataverse.errors import (
    DataverseRejected,
    DataverseUnavailable,
    advice,
    from_answer,
    retry_after_seconds,
    sign_in_advice,
)


@pytest.mark.parametrize("value, seconds", [("7", 7.0), ("0", 0.0), ("2.5", 2.5), ("300", 300.0)])
def test_a_retry_after_within_the_cap_is_honoured_in_full(value, seconds):
    assert retry_after_seconds({"Retry-After": value}, cap=300) == seconds


@pytest.mark.parametrize("value", ["10000000000", "1e300", "301", "Fri, 01 Jan 2100 00:00:00 GMT"])
def test_a_retry_after_beyond_the_cap_is_treated_as_the_cap_and_logged(value, caplog):
    with caplog.at_level(logging.WARNING, logger="optout.dataverse"):
        assert retry_after_seconds({"Retry-After": value}, cap=300) == 300
    assert "clamped to 300 s" in caplog.text and value[:20] in caplog.text


@pytest.mark.parametrize("value", ["inf", "1e400", "-inf", "nan", "-5", "soon", "Fri, 99 Foo 2100"])
def test_a_non_finite_negative_or_unreadable_retry_after_means_the_normal_back_off_and_is_logged(value, caplog):
    with caplog.at_level(logging.WARNING, logger="optout.dataverse"):
        assert retry_after_seconds({"Retry-After": value}, cap=300) is None
    assert "normal back-off" in caplog.text


def test_a_429_carries_its_clamped_retry_after_and_is_transient():
    error = from_answer(429, {"Retry-After": "10000000000"}, b"", retry_after_cap=300)
    assert isinstance(error, DataverseUnavailable) and error.retry_after == 300 and error.failure.transient


def test_a_400_is_permanent_with_the_web_api_code_and_message():
    body = b'{"error":{"code":"0x0","message":"Could not find a property named \'x_nope\'"}}'
    error = from_answer(400, {"x-ms-service-request-id": "req-1"}, body)
    assert isinstance(error, DataverseRejected) and not error.failure.transient
    assert error.code == "0x0" and "x_nope" in str(error) and error.request_id == "req-1"


def test_advice_names_what_an_administrator_changes():
    assert "application user" in advice(403, "0x80072560")
    assert "security role" in advice(403, "0x80040220")
    assert advice(400, "0x0") == ""


def test_sign_in_advice_names_the_aadsts_code_never_more_than_the_first_line():
    assert "expired" in sign_in_advice(RuntimeError("AADSTS7000222: The provided client secret keys are expired."))
    assert sign_in_advice(RuntimeError("first line\nsecond line")).endswith("first line")
