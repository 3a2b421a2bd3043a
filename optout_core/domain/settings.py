"""App settings: read and validated once into one typed, immutable object.

Every customisation lives here rather than in code, so an upgrade never overwrites it. A bad value fails
fast with a :class:`~optout_core.domain.errors.SettingsError` that names the setting. :data:`SPEC` is the single
list of settings: ``local.settings.sample.json`` and ``python -m optout_core check`` are derived from it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, overload
from urllib.parse import urlsplit

from optout_core.domain.consent import ConsentSettings
from optout_core.domain.errors import SettingsError
from optout_core.domain.ids import normalise_guid
from optout_core.domain.model import FUNCTIONS, Function
from optout_core.domain.policy import FailurePolicy
from optout_core.domain.redact import MAX_LABEL
from optout_core.domain.retry import RetryPolicy
from optout_core.domain.settings_spec import BOUNCE_PLACEHOLDERS, SPEC, Setting

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UPDATE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.@]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


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


@dataclass(frozen=True)
class Settings:
    """Every setting the app reads, validated. Build with :meth:`from_env`."""

    campaign_log_queue: str = "campaign-log"
    opt_out_queue: str = "opt-out"
    bounce_queue: str = "bounce"
    rejected_queue: str = "rejected"
    campaign_log_table: str = "concep_emailcampaignlog"
    campaign_log_entity_set: str = "concep_emailcampaignlogs"
    expected_organization_id: str | None = None
    verify_campaign_log: bool = False
    activity_type_column: str = "concep_activitytype"
    opt_out_types: ActivityTypes = ActivityTypes()
    bounce_types: ActivityTypes = ActivityTypes()
    user_opt_out_types: ActivityTypes = ActivityTypes()
    recipient_columns: tuple[str, ...] = ()
    bounce_detail_column: str = "concep_bouncereason"
    opt_out_update: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"donotbulkemail": True}))
    bounce_update: Mapping[str, Any] | None = None
    consent: ConsentSettings = ConsentSettings()  # Journeys contact point consent; off unless purposes or topics
    dataverse_url: str | None = None
    dataverse_token: str | None = field(default=None, repr=False)
    azure_client_id: str | None = None
    dataverse_timeout: float = 30.0
    dataverse_concurrency: int = 8
    retry: RetryPolicy = RetryPolicy()
    retry_after_cap: float = 300.0
    retry_window: float = 259200.0
    opt_out_batch_budget: float = 60.0
    # Read by the administrator's commands only (scope "admin" in SPEC).
    endpoint_connection_string: str | None = field(default=None, repr=False)
    endpoint_name: str = "optout campaign log"
    concep_workflows: tuple[str, ...] = ()
    disabled: frozenset[str] = frozenset()
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every setting from ``env`` (os.environ, or a dict in tests), applying defaults."""
        raw = {s.name: _value(env, s.name, s.default) for s in SPEC}
        # Without an opt-out type every opt-out would be ignored; the other two lists may be emptied with ";".
        opt_out = ActivityTypes.parse(raw["OPT_OUT_ACTIVITY_TYPES"], "OPT_OUT_ACTIVITY_TYPES", required=True)
        bounce = ActivityTypes.parse(raw["BOUNCE_ACTIVITY_TYPES"], "BOUNCE_ACTIVITY_TYPES")
        user = ActivityTypes.parse(raw["USER_OPT_OUT_ACTIVITY_TYPES"], "USER_OPT_OUT_ACTIVITY_TYPES")
        _no_overlap(
            ("OPT_OUT_ACTIVITY_TYPES", opt_out),
            ("BOUNCE_ACTIVITY_TYPES", bounce),
            ("USER_OPT_OUT_ACTIVITY_TYPES", user),
        )
        queues = [raw[name] for name in ("CAMPAIGN_LOG_QUEUE", "OPT_OUT_QUEUE", "BOUNCE_QUEUE", "REJECTED_QUEUE")]
        if len(set(queues)) != len(queues):
            raise SettingsError(
                "CAMPAIGN_LOG_QUEUE, OPT_OUT_QUEUE, BOUNCE_QUEUE and REJECTED_QUEUE must be four "
                f"different queues, not {', '.join(queues)}"
            )
        url = _dataverse_url(raw["DATAVERSE_URL"])
        token = raw["DATAVERSE_TOKEN"] or None
        if token and not (url and is_loopback_url(url)):
            raise SettingsError(
                "DATAVERSE_TOKEN is honoured only with a loopback DATAVERSE_URL (a local "
                "stand-in); remove it and let the managed identity sign in"
            )
        return cls(
            campaign_log_queue=_queue(raw, "CAMPAIGN_LOG_QUEUE"),
            opt_out_queue=_queue(raw, "OPT_OUT_QUEUE"),
            bounce_queue=_queue(raw, "BOUNCE_QUEUE"),
            rejected_queue=_queue(raw, "REJECTED_QUEUE"),
            campaign_log_table=_identifier(raw, "CAMPAIGN_LOG_TABLE").lower(),
            campaign_log_entity_set=(
                _identifier(raw, "CAMPAIGN_LOG_ENTITY_SET")
                if raw["CAMPAIGN_LOG_ENTITY_SET"]
                else raw["CAMPAIGN_LOG_TABLE"].lower() + "s"
            ),
            expected_organization_id=_optional_guid(raw, "EXPECTED_ORGANIZATION_ID"),
            verify_campaign_log=_boolean(raw, "VERIFY_CAMPAIGN_LOG"),
            activity_type_column=_identifier(raw, "ACTIVITY_TYPE_COLUMN").lower(),
            opt_out_types=opt_out,
            bounce_types=bounce,
            user_opt_out_types=user,
            recipient_columns=tuple(
                _identifier({"RECIPIENT_COLUMNS": c.strip()}, "RECIPIENT_COLUMNS").lower()
                for c in raw["RECIPIENT_COLUMNS"].split(";")
                if c.strip()
            ),
            bounce_detail_column=_identifier(raw, "BOUNCE_DETAIL_COLUMN").lower(),
            opt_out_update=_never_allowing("OPT_OUT_UPDATE", _update(raw, "OPT_OUT_UPDATE", required=True)),
            bounce_update=_never_allowing("BOUNCE_UPDATE", _update(raw, "BOUNCE_UPDATE", required=False)),
            consent=ConsentSettings.parse(
                raw["CONSENT_PURPOSE_IDS"],
                raw["CONSENT_TOPIC_IDS"],
                raw["RECIPIENT_EMAIL_COLUMNS"],
                raw["CONSENT_REASON_DESCRIPTION"],
            ),
            dataverse_url=url,
            dataverse_token=token,
            azure_client_id=raw["AZURE_CLIENT_ID"] or None,
            dataverse_timeout=_number(raw, "DATAVERSE_TIMEOUT_SECONDS", minimum=0.1),
            dataverse_concurrency=int(_number(raw, "DATAVERSE_MAX_CONCURRENCY", minimum=1, integer=True)),
            retry=RetryPolicy(
                attempts=int(_number(raw, "DATAVERSE_MAX_ATTEMPTS", minimum=1, integer=True)),
                backoff=_number(raw, "DATAVERSE_BACKOFF_SECONDS", minimum=0),
                backoff_max=_number(raw, "DATAVERSE_BACKOFF_MAX_SECONDS", minimum=0),
                max_retry_after=_number(raw, "DATAVERSE_MAX_RETRY_AFTER_SECONDS", minimum=0),
            ),
            retry_after_cap=_number(raw, "DATAVERSE_RETRY_AFTER_CAP_SECONDS", minimum=0),
            retry_window=_number(raw, "DATAVERSE_RETRY_WINDOW_SECONDS", minimum=0),
            opt_out_batch_budget=_number(raw, "OPT_OUT_BATCH_BUDGET_SECONDS", minimum=1),
            endpoint_connection_string=raw["DATAVERSE_ENDPOINT_CONNECTION_STRING"] or None,
            endpoint_name=raw["DATAVERSE_ENDPOINT_NAME"].strip() or "optout campaign log",
            concep_workflows=tuple(n.strip() for n in raw["CONCEP_WORKFLOWS"].split(";") if n.strip()),
            disabled=frozenset(f.name for f in FUNCTIONS if _toggle(env, f.name)),
            raw=MappingProxyType(raw),
        )

    def is_enabled(self, function: Function) -> bool:
        return function.name not in self.disabled

    def queue(self, function: Function) -> str:
        """The trigger queue of ``function``."""
        return {
            "CAMPAIGN_LOG_QUEUE": self.campaign_log_queue,
            "OPT_OUT_QUEUE": self.opt_out_queue,
            "BOUNCE_QUEUE": self.bounce_queue,
        }[function.queue_setting]

    @property
    def failure_policy(self) -> FailurePolicy:
        return FailurePolicy(retry=self.retry, window=self.retry_window, retry_after_cap=self.retry_after_cap)

    def effective(self) -> list[tuple[Setting, str]]:
        """Each setting with the value in force, secrets masked (for ``check``)."""
        shown = []
        for s in SPEC:
            value = self.raw.get(s.name, s.default)
            if s.name.startswith("AzureWebJobs."):
                value = "true" if s.name.split(".")[1] in self.disabled else "false"
            elif s.secret and value:
                value = "***"
            shown.append((s, value))
        return shown


def is_loopback_url(url: str) -> bool:
    import ipaddress

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _value(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or not str(value).strip() else str(value).strip()


def _toggle(env: Mapping[str, str], function_name: str) -> bool:
    # The portal writes AzureWebJobs.<name>.Disabled; Linux plans expose periods as underscores.
    for name in (f"AzureWebJobs.{function_name}.Disabled", f"AzureWebJobs_{function_name}_Disabled"):
        value = env.get(name)
        if value is None:
            continue
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text not in _FALSE:
            raise SettingsError(f"{name} must be true or false, not {value!r}")
    return False


def _boolean(raw: Mapping[str, str], name: str) -> bool:
    text = raw[name].strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, not {raw[name]!r}")


def _queue(raw: Mapping[str, str], name: str) -> str:
    value = raw[name]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-/~]{0,259}", value):
        raise SettingsError(f"{name} must be a Service Bus queue name, not {value!r}")
    return value


def _identifier(raw: Mapping[str, str], name: str) -> str:
    value = raw[name]
    if not _IDENTIFIER.fullmatch(value):
        raise SettingsError(f"{name} must be a Dataverse logical name (letters, digits, _), not {value!r}")
    return value


def _optional_guid(raw: Mapping[str, str], name: str) -> str | None:
    if not raw[name]:
        return None
    guid = normalise_guid(raw[name])
    if guid is None:
        raise SettingsError(f"{name} must be a GUID, not {raw[name]!r}")
    return guid


def _number(raw: Mapping[str, str], name: str, *, minimum: float, integer: bool = False) -> float:
    try:
        value = int(raw[name]) if integer else float(raw[name])
    except ValueError:
        raise SettingsError(f"{name} must be a {'whole ' if integer else ''}number, not {raw[name]!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, not {raw[name]!r}")
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {raw[name]!r}")
    return value


@overload
def _update(raw: Mapping[str, str], name: str, *, required: Literal[True]) -> Mapping[str, Any]: ...
@overload
def _update(raw: Mapping[str, str], name: str, *, required: Literal[False]) -> Mapping[str, Any] | None: ...
def _update(raw: Mapping[str, str], name: str, *, required: bool) -> Mapping[str, Any] | None:
    text = raw[name]
    if not text:
        if required:
            raise SettingsError(f"{name} must be a JSON object of columns to set")
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(value, dict) or not value:
        raise SettingsError(f"{name} must be a non-empty JSON object of columns to set")
    for key, column_value in value.items():
        if not _UPDATE_KEY.fullmatch(key):
            raise SettingsError(f"{name}: {key!r} is not a column name")
        if isinstance(column_value, str):
            unknown = set(_PLACEHOLDER.findall(column_value)) - set(BOUNCE_PLACEHOLDERS)
            if unknown and name == "BOUNCE_UPDATE":
                raise SettingsError(
                    f"{name}: unknown placeholder(s) {sorted(unknown)}; "
                    f"use {', '.join('{' + p + '}' for p in BOUNCE_PLACEHOLDERS)}"
                )
    return MappingProxyType(value)


def _never_allowing[U: (Mapping[str, Any], Mapping[str, Any] | None)](name: str, update: U) -> U:
    """An update whose ``donot…`` columns are all set to true, or a SettingsError naming the column.

    ``{"donotbulkemail": false}`` (or null) in OPT_OUT_UPDATE would be PATCHed and recorded as *applied* while
    allowing the very mail the recipient opted out of; in BOUNCE_UPDATE it would re-allow mail to a recipient
    whose address bounced."""
    for column, value in (update or {}).items():
        if column.casefold().startswith("donot") and value is not True:
            raise SettingsError(
                f"{name} sets {column} to {json.dumps(value)}: every donot… column it names must be set to true "
                "(anything else would allow mail optout exists to stop)"
            )
    return update


def _dataverse_url(text: str) -> str | None:
    if not text:
        return None
    url = text.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(f"DATAVERSE_URL must look like https://<org>.crm.dynamics.com, not {text!r}")
    if parts.path not in ("", "/"):
        raise SettingsError(
            "DATAVERSE_URL is the environment root (https://<org>.crm.dynamics.com), "
            f"without a path such as /api/data: {text!r}"
        )
    if parts.scheme == "http" and not is_loopback_url(url):
        raise SettingsError("DATAVERSE_URL must use https (plain http is allowed only for loopback stand-ins)")
    return url


def _no_overlap(*named: tuple[str, ActivityTypes]) -> None:
    for i, (name_a, a) in enumerate(named):
        for name_b, b in named[i + 1 :]:
            shared = sorted(map(str, (a.labels & b.labels) | (a.codes & b.codes)))
            if shared:
                raise SettingsError(
                    f"{name_a} and {name_b} both list {', '.join(shared)}; an activity type can have only one route"
                )
