"""Values from settings and arguments into Web API URLs (optout_core/domain/odata.py)."""

from urllib.parse import unquote

import pytest

from optout_core.domain.odata import equals, guid_literal, logical_name, string_literal


@pytest.mark.parametrize("char", list("$&+,/:;=?@"))
def test_every_character_the_filter_rows_page_lists_is_url_encoded_in_a_string_value(char: str) -> None:
    literal = string_literal(f"a{char}b")
    assert char not in literal
    assert unquote(literal) == f"'a{char}b'"


def test_a_single_quote_is_doubled_and_a_percent_sign_cannot_pass_for_an_escape() -> None:
    assert string_literal("O'Neil 100%") == "'O''Neil%20100%25'"
    assert unquote(string_literal("O'Neil 100%")) == "'O''Neil 100%'"


def test_text_beyond_ascii_is_sent_as_utf_8() -> None:
    assert unquote(string_literal("Abmeldung für Müller")) == "'Abmeldung für Müller'"


def test_equals_compares_a_column_with_an_escaped_string() -> None:
    assert equals("name", "a&b") == "name eq 'a%26b'"


def test_only_a_real_guid_is_an_id() -> None:
    assert guid_literal("{0E4F8C43-1D2A-4B6C-9F00-123456789ABC}") == "0e4f8c43-1d2a-4b6c-9f00-123456789abc"
    assert guid_literal("Opt-out bounce-handler v2-final-copy") is None


@pytest.mark.parametrize("name", ["contact", "cdi_emailcampaignlog", "new_x2"])
def test_a_logical_name_is_a_lower_case_identifier(name: str) -> None:
    assert logical_name(name) == name


@pytest.mark.parametrize("name", ["Contact", "contact')/x", "contact'", "", "1abc", "a b", "contact%27"])
def test_anything_else_is_no_logical_name(name: str) -> None:
    assert logical_name(name) is None
