"""Server-driven paging of collection queries, as Microsoft Learn's "Page results using OData" describes it
(``MicrosoftDocs/powerapps-docs`` ``powerapps-docs/developer/data-platform/webapi/query/page-results.md``):

* without ``Prefer: odata.maxpagesize`` a page holds up to 5,000 rows; with it, at most N (1 to 5,000): the answer
  then says ``Preference-Applied: odata.maxpagesize=N``; a larger preference is ignored (5,000, nothing applied);
* when more rows match, ``@odata.nextLink`` is the request's own URL with a ``$skiptoken`` added: a paging cookie
  naming the page number and the first and last primary key of the page (the page's rows are in primary key
  order); the next page holds the rows after that last key, so rows created or deleted meanwhile shift nothing;
* ``$top`` is ignored when ``odata.maxpagesize`` is given, and applies (without paging) otherwise.

The stand-in orders keys as text (SQL Server orders ``uniqueidentifier`` by its bytes: a different, equally stable
order). Its cookie has Dataverse's shape (an outer ``cookie`` with ``pagenumber``, ``pagingcookie`` and
``istracking``); clients must treat it as opaque either way.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from itertools import dropwhile, islice
from typing import Any
from urllib.parse import quote, unquote

from optout_dev.standin.responses import Response, error
from optout_dev.standin.schema import Table

MAX_PAGE = 5000  # also the size of a page when no preference is given
_PREFERENCE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)")
_COOKIE = re.compile(r'<cookie pagenumber="(\d+)" pagingcookie="([^"]*)" istracking="False" />')
_SAFE = "'()=,$@/:"  # a $filter stays readable in the link, as Dataverse writes it
_LAST = re.compile(r'last="\{([0-9a-fA-F-]{36})\}"')


@dataclass(frozen=True)
class Page:
    rows: list[tuple[str, Any]]  # (primary key, item) of this page
    next_link: str | None
    headers: tuple[tuple[str, str], ...]  # Preference-Applied when the preference was honoured


@dataclass(frozen=True)
class Position:
    """Where the page a request asks for starts: its number, and the last key of the page before (None: the first
    page). Rows are matched when each page is asked for, so a row created, deleted or changed meanwhile counts as
    it is then."""

    number: int
    after: str | None


def page_size(headers: Message) -> int | None:
    """The ``odata.maxpagesize`` preference when it is honoured (1..5,000), else None."""
    match = _PREFERENCE.search(headers.get("Prefer") or "")
    if match is None:
        return None
    size = int(match.group(1))
    return size if 1 <= size <= MAX_PAGE else None


def position(query: Mapping[str, list[str]]) -> Position | Response:
    """The page ``$skiptoken`` asks for (the first without one); a 400 for a token this service did not issue."""
    if "$skiptoken" not in query:
        return Position(1, None)
    cookie = _COOKIE.fullmatch(query["$skiptoken"][-1])
    key = _LAST.search(unquote(cookie.group(2))) if cookie else None
    if cookie is None or key is None:
        return error(400, "0x80060888", "The $skiptoken is not a paging cookie this service issued.")
    return Position(int(cookie.group(1)), key.group(1).lower())


def following(keys: Sequence[str], at: Position) -> Sequence[str]:
    """The ``keys`` (in order) after ``at``'s last key: where a page's candidates start, found by bisection rather
    than by reading every row before them."""
    return keys if at.after is None else keys[bisect_right(keys, at.after) :]


def paginate(
    matching: Iterable[tuple[str, Any]],
    at: Position,
    query: Mapping[str, list[str]],
    headers: Message,
    url: str,
    table: Table,
) -> Page:
    """The page at ``at`` of ``matching`` (the matching rows as (primary key, item), in key order; those up to
    ``at.after`` are passed over). Only the page and one row more are drawn from ``matching``, so a caller may
    match rows as they are drawn: a page costs its own rows, not the table's. ``url`` is the collection's URL; the
    next link is it with the request's own query options and a ``$skiptoken``."""
    preferred = page_size(headers)
    size = preferred or MAX_PAGE
    after = at.after
    rows = matching if after is None else dropwhile(lambda item: item[0] <= after, matching)
    drawn = list(islice(rows, size + 1))
    page = drawn[:size]
    applied = (("Preference-Applied", f"odata.maxpagesize={preferred}"),) if preferred else ()
    if len(drawn) <= size:
        return Page(page, None, applied)
    number = at.number
    first, last = page[0][0].upper(), page[-1][0].upper()
    inner = f'<cookie page="{number}"><{table.primary_key} last="{{{last}}}" first="{{{first}}}" /></cookie>'
    token = f'<cookie pagenumber="{number + 1}" pagingcookie="{quote(inner, safe="")}" istracking="False" />'
    options = [
        f"{name}={quote(value, safe=_SAFE)}"
        for name, values in query.items()
        if name != "$skiptoken"
        for value in values
    ]
    return Page(page, f"{url}?{'&'.join([*options, f'$skiptoken={quote(token, safe="=")}'])}", applied)
