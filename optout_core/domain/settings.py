"""App settings: read and validated once into one typed, immutable object.

Every customisation lives here rather than in code, so an upgrade never overwrites it. A bad value fails
fast with a :class:`~optout_core.domain.errors.SettingsError` that names the setting. Each setting is declared
once, with its default and its parser, in :mod:`optout_core.domain.settings_spec`; the settings of each function
(its queue, its activity types, its portal toggle) come from the function table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from optout_core.domain.consent_settings import ConsentSettings
from optout_core.domain.errors import SettingsError
from optout_core.domain.model import BOUNCE, FUNCTIONS, OPT_OUT, ROUTER, TIMERS, Function, Route, Timer
from optout_core.domain.policy import FailurePolicy
from optout_core.domain.retry import RetryPolicy
from optout_core.domain.setting_parsers import FALSE, TRUE, ActivityTypes, is_loopback_url, normalise_label
from optout_core.domain.settings_spec import SPEC, Setting, spec

__all__ = ["SPEC", "ActivityTypes", "Settings", "is_loopback_url", "normalise_label"]


@dataclass(frozen=True)
class Settings:
    """Every setting the app reads, validated. Build with :meth:`from_env`; the defaults live in the settings list."""

    functions: tuple[Function, ...]
    queues: Mapping[str, str]  # each function's queue setting -> its queue
    types: Mapping[str, ActivityTypes]  # each function's activity-type setting -> its types
    rejected_queue: str
    campaign_log_table: str
    campaign_log_entity_set: str
    expected_organization_id: str | None
    verify_campaign_log: bool
    activity_type_column: str
    user_opt_out_types: ActivityTypes
    recipient_columns: tuple[str, ...]
    bounce_detail_column: str
    opt_out_update: Mapping[str, Any]
    bounce_update: Mapping[str, Any] | None
    consent: ConsentSettings  # Journeys contact point consent; off unless purposes or topics
    dataverse_url: str | None
    dataverse_token: str | None = field(repr=False)
    azure_client_id: str | None
    dataverse_timeout: float
    dataverse_concurrency: int
    retry: RetryPolicy
    retry_after_cap: float
    protection_window: float
    retry_window: float
    opt_out_batch_budget: float
    # Read by the administrator's commands only (scope "admin" in SPEC).
    endpoint_connection_string: str | None = field(repr=False)
    endpoint_name: str
    concep_workflows: tuple[str, ...]
    disabled: frozenset[str]
    raw: Mapping[str, str] = field(repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], functions: tuple[Function, ...] = FUNCTIONS) -> Settings:
        """Read every setting from ``env`` (os.environ, or a dict in tests), applying defaults, for the function
        table ``functions``."""
        settings = spec(functions)
        raw = {s.name: _value(env, s.name, s.default) for s in settings}
        values = {s.name: _parsed(s, raw[s.name]) for s in settings}
        _check_together(values, functions)
        return cls(
            functions=functions,
            queues=MappingProxyType({f.queue_setting: values[f.queue_setting] for f in functions}),
            types=MappingProxyType({f.types_setting: values[f.types_setting] for f in functions if f.types_setting}),
            campaign_log_entity_set=values["CAMPAIGN_LOG_ENTITY_SET"] or values["CAMPAIGN_LOG_TABLE"] + "s",
            consent=ConsentSettings.parse(
                raw["CONSENT_PURPOSE_IDS"],
                raw["CONSENT_TOPIC_IDS"],
                raw["RECIPIENT_EMAIL_COLUMNS"],
                raw["CONSENT_REASON_DESCRIPTION"],
            ),
            retry=RetryPolicy(
                attempts=values["DATAVERSE_MAX_ATTEMPTS"],
                backoff=values["DATAVERSE_BACKOFF_SECONDS"],
                backoff_max=values["DATAVERSE_BACKOFF_MAX_SECONDS"],
                max_retry_after=values["DATAVERSE_MAX_RETRY_AFTER_SECONDS"],
            ),
            disabled=frozenset(f.name for f in functions if _toggle(env, f.name))
            | frozenset(t.name for t in TIMERS if _toggle(env, t.name, absent=t.off_by_default)),
            raw=MappingProxyType(raw),
            **{s.field: values[s.name] for s in settings if s.field},
        )

    def is_enabled(self, function: Function | Timer) -> bool:
        return function.name not in self.disabled

    def queue(self, function: Function) -> str:
        """The trigger queue of ``function``."""
        return self.queues[function.queue_setting]

    def function_for(self, route: Route) -> Function:
        """The function that does the work of ``route``."""
        return next(f for f in self.functions if f.route == route)

    def function_for_type(self, label: str | None, code: int | None) -> Function | None:
        """The function whose activity types list this one, if any (the lists never overlap)."""
        for function in self.functions:
            if function.types_setting and self.types[function.types_setting].matches(label, code):
                return function
        return None

    # The three functions of this app by name, for the admin commands, the local runner and the tests.
    @property
    def campaign_log_queue(self) -> str:
        return self.queue(ROUTER)

    @property
    def opt_out_queue(self) -> str:
        return self.queue(OPT_OUT)

    @property
    def bounce_queue(self) -> str:
        return self.queue(BOUNCE)

    @property
    def opt_out_types(self) -> ActivityTypes:
        return self.types[str(OPT_OUT.types_setting)]

    @property
    def bounce_types(self) -> ActivityTypes:
        return self.types[str(BOUNCE.types_setting)]

    @property
    def failure_policy(self) -> FailurePolicy:
        return FailurePolicy(retry=self.retry, window=self.retry_window, retry_after_cap=self.retry_after_cap)

    def effective(self) -> list[tuple[Setting, str]]:
        """Each setting with the value in force, secrets masked (for ``check``)."""
        shown = []
        for s in spec(self.functions):
            value = self.raw.get(s.name, s.default)
            if s.name.startswith("AzureWebJobs."):
                value = "true" if s.name.split(".")[1] in self.disabled else "false"
            elif s.secret and value:
                value = "***"
            shown.append((s, value))
        return shown


def _value(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or not str(value).strip() else str(value).strip()


def _parsed(setting: Setting, text: str) -> Any:
    """The setting's value; any error names the setting."""
    try:
        return setting.parse(setting.name, text)
    except SettingsError:
        raise
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{setting.name}: {exc}") from None
    except (RecursionError, MemoryError, OverflowError):
        # Whatever a parser missed, the error still names the setting and never shows a traceback.
        raise SettingsError(f"{setting.name}: the value is too large or nested too deeply") from None


def _toggle(env: Mapping[str, str], function_name: str, *, absent: bool = False) -> bool:
    # The portal writes AzureWebJobs.<name>.Disabled; Linux plans expose periods as underscores.
    for name in (f"AzureWebJobs.{function_name}.Disabled", f"AzureWebJobs_{function_name}_Disabled"):
        value = env.get(name)
        if value is None:
            continue
        text = str(value).strip().lower()
        if text in TRUE:
            return True
        if text not in FALSE:
            raise SettingsError(f"{name} must be true or false, not {value!r}")
        absent = False  # set to false: on (unless the other spelling says true)
    return absent


def _check_together(values: Mapping[str, Any], functions: tuple[Function, ...]) -> None:
    """The rules that span settings: no activity type on two routes, no queue used twice, a static token only
    for a local stand-in."""
    typed = [(f.types_setting, values[f.types_setting]) for f in functions if f.types_setting]
    _no_overlap([*typed, ("USER_OPT_OUT_ACTIVITY_TYPES", values["USER_OPT_OUT_ACTIVITY_TYPES"])])
    _distinct_queues([*(f.queue_setting for f in functions), "REJECTED_QUEUE"], values)
    url = values["DATAVERSE_URL"]
    if values["DATAVERSE_TOKEN"] and not (url and is_loopback_url(url)):
        raise SettingsError(
            "DATAVERSE_TOKEN is honoured only with a loopback DATAVERSE_URL (a local "
            "stand-in); remove it and let the managed identity sign in"
        )


def _no_overlap(named: list[tuple[str, ActivityTypes]]) -> None:
    for i, (name_a, a) in enumerate(named):
        for name_b, b in named[i + 1 :]:
            if shared := a.shared_with(b):
                raise SettingsError(
                    f"{name_a} and {name_b} both list {', '.join(shared)}; an activity type can have only one route"
                )


def _distinct_queues(names: list[str], values: Mapping[str, Any]) -> None:
    queues = [values[name] for name in names]
    if len(set(queues)) != len(queues):
        raise SettingsError(
            f"{', '.join(names[:-1])} and {names[-1]} must be {len(names)} different queues, not {', '.join(queues)}"
        )
