"""Text that leaves the app: bounded first, then every email address masked, in linear time.

Reasons and labels quote what a message or Dataverse said, so they can carry an address (a forged activity
type, an error quoting the value it refused). Every place where text leaves the app — the outcome line, the
kept message's ``rejected_reason``, the CLI's output — passes it through :func:`redact`.

The scan is linear: each ``@`` looks left only as far as the previous ``@`` and right only as far as the next,
so no character is examined more than a few times (a regular expression with nested ``+`` around ``@``
backtracks quadratically on a long run of word characters).
"""

from __future__ import annotations

MASK = "<email address>"
MAX_REASON = 1000  # Service Bus application properties share a 64 KB header budget
MAX_LABEL = 256  # longer than any Dataverse label a person types; a forged one is cut before anything reads it

# RFC 5322 atext plus the dot: what an unquoted local part is made of (Unicode letters and digits too, RFC 6531).
_LOCAL_SYMBOLS = frozenset("!#$%&'*+-/=?^_`{|}~.")
_DOMAIN_SYMBOLS = frozenset("-.")
_QUOTED_LOCAL_MAX = 66  # a quoted local part is at most 64 characters plus its quotes (RFC 5321 4.5.3.1.1)
_LITERAL_MAX = 64  # an address literal such as [IPv6:…] is short


def _local_char(ch: str) -> bool:
    return ch.isalnum() or ch in _LOCAL_SYMBOLS


def _domain_char(ch: str) -> bool:
    return ch.isalnum() or ch in _DOMAIN_SYMBOLS or ch == "_"


def _left(text: str, at: int, floor: int) -> int:
    """Where the local part ending just before ``text[at]`` starts (``at`` when there is none)."""
    if at > floor and text[at - 1] == '"':  # "jane doe"@example.com
        start = text.rfind('"', max(floor, at - _QUOTED_LOCAL_MAX), at - 1)
        if start >= 0:
            return start
    start = at
    while start > floor and _local_char(text[start - 1]):
        start -= 1
    return start


def _right(text: str, at: int, ceiling: int) -> int:
    """Where the domain starting just after ``text[at]`` ends (``at + 1`` when there is none)."""
    end = at + 1
    if end < ceiling and text[end] == "[":  # jane@[10.0.0.1]
        close = text.find("]", end, min(ceiling, end + _LITERAL_MAX))
        if close >= 0:
            return close + 1
    while end < ceiling and _domain_char(text[end]):
        end += 1
    while end > at + 1 and text[end - 1] in _DOMAIN_SYMBOLS:  # a sentence's full stop is not the domain's
        end -= 1
    return end


def mask_emails(text: str) -> str:
    """``text`` with every email address replaced by ``<email address>``: quoted local parts, address
    literals and dotless domains (``jane@intranet``) included. Errs towards masking: ``a@b`` is masked."""
    if "@" not in text:
        return text
    parts: list[str] = []
    done = 0  # text[:done] is already in parts
    at = text.find("@")
    while at >= 0:
        following = text.find("@", at + 1)
        ceiling = len(text) if following < 0 else following
        start, end = _left(text, at, done), _right(text, at, ceiling)
        if start < at and (end > at + 1 or end == len(text)):  # "jane@" at the very end: a cut address
            if text[start] == "'" and end < len(text) and text[end] == "'":  # 'jane@example.com' in an error
                start += 1
            parts += [text[done:start], MASK]
            done = end
        at = text.find("@", max(end, at + 1)) if end > at + 1 else following
    parts.append(text[done:])
    return "".join(parts)


def cap(text: str, limit: int) -> str:
    """At most ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(text: str, limit: int = MAX_REASON) -> str:
    """``text`` as it may leave the app: cut to a bounded size first (so the masking's work is bounded too),
    addresses masked, then cut to ``limit``. An address cut in half by the first cut is still masked: a
    dotless domain counts."""
    if len(text) <= limit and "@" not in text:  # most ids and labels: nothing to cut or mask
        return text
    return cap(mask_emails(text[: 2 * limit]), limit)
