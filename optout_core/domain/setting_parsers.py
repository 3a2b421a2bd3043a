"""How one app setting's text becomes its value: one parser per kind of setting.

A parser takes the setting's name and its text (stripped, the default already applied) and returns the value, or
raises a :class:`~optout_core.domain.errors.SettingsError` that names the setting. The settings list
(:mod:`optout_core.domain.settings_spec`) gives each setting its parser.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from optout_core.domain.errors import SettingsError
from optout_core.domain.ids import normalise_guid
from optout_core.domain.redact import MAX_LABEL

Parser = Callable[[str, str], Any]  # (setting name, text) -> value

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/~]{0,259}")
_UPDATE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.@]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MAX_UPDATE = 32_768  # characters of an update's JSON: a few columns, far below an app setting's size
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def normalise_label(label: str) -> str:
    """Activity type labels match ignoring case, spaces, hyphens and underscores ("Group Opt-Out")."""
    # Only labels of a real label's size are cached: the cache holds at most 1,024 x MAX_LABEL characters.
    return _normalised(label) if len(label) <= MAX_LABEL else _normalise(label)


@functools.lru_cache(maxsize=1024)  # the same few labels arrive over and over
def _normalised(label: str) -> str:
    return _normalise(label)


def _normalise(label: str) -> str:
    return re.sub(r"[\s\-_]+", "", label).casefold()


@dataclass(frozen=True)
class ActivityTypes:
    """A configured list of activity types: normalised labels and integer option codes."""

    labels: frozenset[str] = frozenset()
    codes: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str, setting: str = "activity types", *, required: bool = False) -> ActivityTypes:
        """A ``;``-list of labels and option codes. Blank entries (``a;;b``, a trailing ``;``) are skipped;
        an entry whose label normalises to nothing (``" - "``, ``"_"``) can never match and is refused,
        and so is a ``required`` list left without any entry. Errors name ``setting``."""
        labels, codes = set(), set()
        for entry in (part.strip() for part in text.split(";")):
            if not entry:
                continue
            if re.fullmatch(r"-?\d+", entry):
                codes.add(int(entry))
            elif normalised := normalise_label(entry):
                labels.add(normalised)
            else:
                raise SettingsError(
                    f"{setting}: {entry!r} is not an activity type: labels match ignoring case, spaces, "
                    "hyphens and underscores, so it matches nothing; list labels or option codes"
                )
        if required and not labels and not codes:
            raise SettingsError(
                f"{setting} must list at least one activity type (a label or an option code), not {text!r}"
            )
        return cls(frozenset(labels), frozenset(codes))

    def matches(self, label: str | None, code: int | None) -> bool:
        return (code is not None and code in self.codes) or (
            label is not None and normalise_label(label) in self.labels
        )

    def shared_with(self, other: ActivityTypes) -> list[str]:
        """The entries both lists hold, as text."""
        return sorted(map(str, (self.labels & other.labels) | (self.codes & other.codes)))


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def text(name: str, value: str) -> str:
    """Free text, as written."""
    return value


def optional_text(name: str, value: str) -> str | None:
    return value or None


def names(name: str, value: str) -> tuple[str, ...]:
    """A ``;``-list of names, blanks skipped."""
    return tuple(n.strip() for n in value.split(";") if n.strip())


def boolean(name: str, value: str) -> bool:
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, not {value!r}")


def queue(name: str, value: str) -> str:
    if not _QUEUE.fullmatch(value):
        raise SettingsError(f"{name} must be a Service Bus queue name, not {value!r}")
    return value


def identifier(name: str, value: str) -> str:
    """A Dataverse name as written (an entity set keeps its case)."""
    if not _IDENTIFIER.fullmatch(value):
        raise SettingsError(f"{name} must be a Dataverse logical name (letters, digits, _), not {value!r}")
    return value


def optional_identifier(name: str, value: str) -> str | None:
    return identifier(name, value) if value else None


def logical_name(name: str, value: str) -> str:
    """A Dataverse logical name, lower-case as the Web API spells it."""
    return identifier(name, value).lower()


def logical_names(name: str, value: str) -> tuple[str, ...]:
    return tuple(logical_name(name, column) for column in names(name, value))


def optional_guid(name: str, value: str) -> str | None:
    if not value:
        return None
    guid = normalise_guid(value)
    if guid is None:
        raise SettingsError(f"{name} must be a GUID (8-4-4-4-12 hexadecimal digits), not {value!r}")
    return guid


def number(*, minimum: float, integer: bool = False, above: bool = False) -> Parser:
    """A finite number of at least ``minimum`` (more than it with ``above``; a whole one with ``integer``)."""

    def parse(name: str, value: str) -> float | int:
        try:
            result = int(value) if integer else float(value)
        except ValueError:
            raise SettingsError(f"{name} must be a {'whole ' if integer else ''}number, not {value!r}") from None
        if not math.isfinite(result):
            raise SettingsError(f"{name} must be a finite number, not {value!r}")
        if result < minimum or (above and result == minimum):
            raise SettingsError(f"{name} must be {'more than' if above else 'at least'} {minimum}, not {value!r}")
        return result

    return parse


def activity_types(*, required: bool) -> Parser:
    def parse(name: str, value: str) -> ActivityTypes:
        return ActivityTypes.parse(value, name, required=required)

    return parse


def dataverse_url(name: str, value: str) -> str | None:
    if not value:
        return None
    if "@" in value:
        # user:password@host would put a credential in every place the URL is shown (check, connection errors);
        # the value is never echoed. Dataverse signs in with a bearer token, never with URL credentials.
        raise SettingsError(
            f"{name} must not carry a user name or password (user:password@); the app signs in with its identity"
        )
    url = value.rstrip("/")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - a port that is not a number raises ValueError here, not later
    except ValueError:
        raise SettingsError(f"{name} has a port that is not a number") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(f"{name} must look like https://<org>.crm.dynamics.com, not {value!r}")
    if parts.path not in ("", "/"):
        raise SettingsError(
            f"{name} is the environment root (https://<org>.crm.dynamics.com), without a path such as /api/data: "
            f"{value!r}"
        )
    if parts.scheme == "http" and not is_loopback_url(url):
        raise SettingsError(f"{name} must use https (plain http is allowed only for loopback stand-ins)")
    return url


def update(*, required: bool, placeholders: tuple[str, ...] = ()) -> Parser:
    """A JSON object of columns to PATCH onto the recipient; string values may hold ``placeholders``."""

    def parse(name: str, value: str) -> Mapping[str, Any] | None:
        if not value:
            if required:
                raise SettingsError(f"{name} must be a JSON object of columns to set")
            return None
        if len(value) > MAX_UPDATE:
            raise SettingsError(f"{name} is {len(value)} characters; an update is at most {MAX_UPDATE}")
        try:
            document = json.loads(value)
        except RecursionError:
            raise SettingsError(f"{name} is nested too deeply to be an update of columns") from None
        except ValueError as exc:
            raise SettingsError(f"{name} is not valid JSON ({exc})") from None
        if not isinstance(document, dict) or not document:
            raise SettingsError(f"{name} must be a non-empty JSON object of columns to set")
        for key, column_value in document.items():
            _check_column(name, key, column_value, placeholders)
        return MappingProxyType(document)

    return parse


def _check_column(name: str, column: str, value: Any, placeholders: tuple[str, ...]) -> None:
    """One column of an update: a column name; ``{…}`` only as a known placeholder; ``donot…`` only true.

    ``{"donotbulkemail": false}`` (or null) in OPT_OUT_UPDATE would be PATCHed and recorded as *applied* while
    allowing the very mail the recipient opted out of; in BOUNCE_UPDATE it would re-allow mail to a recipient
    whose address bounced."""
    if not _UPDATE_KEY.fullmatch(column):
        raise SettingsError(f"{name}: {column!r} is not a column name")
    if isinstance(value, (dict, list)):
        # A column holds one value; a nested object would be a deep insert of another record, never an opt-out.
        raise SettingsError(
            f"{name}: {column} must be set to text, a number, true, false or null, not a JSON {type(value).__name__}"
        )
    if placeholders and isinstance(value, str):
        unknown = set(_PLACEHOLDER.findall(value)) - set(placeholders)
        if unknown:
            known = ", ".join("{" + p + "}" for p in placeholders)
            raise SettingsError(f"{name}: unknown placeholder(s) {sorted(unknown)}; use {known}")
    if column.casefold().startswith("donot") and value is not True:
        raise SettingsError(
            f"{name} sets {column} to {json.dumps(value)}: every donot… column it names must be set to true "
            "(anything else would allow mail optout exists to stop)"
        )
