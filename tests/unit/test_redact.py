"""Text leaving the app (optout_core.domain.redact): bounded, every address masked, in linear time."""

import pytest

from optout_core.domain.redact import MASK, MAX_REASON, mask_emails, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("refused jane.doe+x@mail.example.co.uk", f"refused {MASK}"),
        ("contact o'brien@example.com refused", f"contact {MASK} refused"),  # atext: the apostrophe too
        ('"jane doe"@example.com was refused', f"{MASK} was refused"),  # a quoted local part
        ("jane@[10.0.0.1] bounced", f"{MASK} bounced"),  # an address literal
        ("jane@[IPv6:2001:db8::1]", MASK),
        ("jane@intranet bounced", f"{MASK} bounced"),  # a dotless domain
        ("write to jane@example.com.", f"write to {MASK}."),  # the full stop is the sentence's
        ("value 'jane@example.com' is not valid", f"value '{MASK}' is not valid"),
        ("straße@exämple.de", MASK),  # internationalised (RFC 6531)
        ("reason cut at jane@", f"reason cut at {MASK}"),  # an address cut after its @ by a length cap
        ("a@b and c@d", f"{MASK} and {MASK}"),
    ],
)
def test_every_form_of_address_is_masked(text, expected):
    assert mask_emails(text) == expected


@pytest.mark.parametrize("text", ["no address here", "a @ b", "@home", "@@@", "100% sure", ""])
def test_text_without_an_address_is_unchanged(text):
    assert mask_emails(text) == text


class CountingStr(str):
    """A str that counts how often a character is read by index: the masking's work, without a clock."""

    reads = 0

    def __getitem__(self, key):  # type: ignore[override]
        CountingStr.reads += 1
        return str.__getitem__(self, key)


@pytest.mark.parametrize(
    "hostile",
    [
        "a" * 20_000 + "@",  # a long local part: a backtracking pattern rescans it from every start
        "a." * 10_000 + "@" + "b." * 10_000,
        "a@" * 10_000,
        '"' * 20_000 + "@x",
        "x@[" * 10_000,
    ],
)
def test_masking_reads_each_character_a_bounded_number_of_times(hostile):
    CountingStr.reads = 0
    mask_emails(CountingStr(hostile))
    assert CountingStr.reads <= 4 * len(hostile)


def test_redact_bounds_the_text_before_and_after_masking():
    body = ("jane@example.com " * 40_000)[: 512 * 1024]
    shown = redact(body)
    assert len(shown) <= MAX_REASON and "@" not in shown and shown.startswith(MASK)


def test_redact_masks_an_address_its_own_cut_splits():
    text = "x" * (MAX_REASON - 10) + " jane.doe@example.com"
    assert "jane" not in redact(text)
