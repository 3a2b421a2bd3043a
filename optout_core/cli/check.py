"""``python -m optout_core check [--connect]``: prove a configuration before deploying it.

Validates every setting and prints its effective value (secrets masked). With ``--connect`` it signs
in and calls ``WhoAmI``, and says in administrator language what to fix when that fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from optout_core.cli.findings import Finding, error, ok
from optout_core.dataverse.errors import DataverseError, SignInFailed, advice, sign_in_advice
from optout_core.domain.errors import SettingsError
from optout_core.domain.retry import RetryPolicy
from optout_core.domain.settings import Settings

if TYPE_CHECKING:
    from optout_core.dataverse.client import DataverseClient


@dataclass(frozen=True)
class Diagnosis:
    ok: bool
    message: str


def check_settings(env: Mapping[str, str], out: TextIO) -> Settings | None:
    """Print each setting with the value in force; None (after printing why) when one is invalid."""
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"INVALID  {exc}", file=out)
        return None
    width = max(len(setting.name) for setting, _ in settings.effective())
    for setting, value in settings.effective():
        source = "set" if env.get(setting.name, "").strip() else "default"
        print(f"{setting.name.ljust(width)}  {value or '(empty)'}  [{source}]", file=out)
    print("OK       settings are valid", file=out)
    return settings


def connect(settings: Settings, credential: Any = None) -> Diagnosis:
    """Sign in to Dataverse and call WhoAmI once (no retries); translate any failure."""
    diagnosis, _, client = _connect(settings, credential)
    if client is not None:
        client.close()
    return diagnosis


def connect_findings(settings: Settings, credential: Any = None) -> tuple[list[Finding], list[dict[str, object]]]:
    """WhoAmI, then the configuration proved against the schema, privileges and registration
    (:mod:`optout_core.cli.schema_check`) on the same client and token: every finding, and the activity type's
    option → route table."""
    from optout_core.cli.schema_check import findings, read_facts

    diagnosis, who, client = _connect(settings, credential)
    if client is None or who is None or not diagnosis.ok:
        if client is not None:
            client.close()
        return [error("connect", diagnosis.message, "as the message says; the schema is checked once it passes")], []
    found = [ok("connect", diagnosis.message)]
    options: list[dict[str, object]] = []
    try:
        more, options = findings(settings, read_facts(client, settings, who))
        found += more
        if settings.consent.enabled:
            from optout_core.cli.consent_check import consent_findings

            found += consent_findings(client, settings)
    except DataverseError as exc:
        found.append(
            error("connect.read", f"reading the schema failed: {exc}", advice(exc.status, exc.code) or "retry")
        )
    finally:
        client.close()
    return found, options


def print_findings(
    findings: Sequence[Finding], options: Sequence[Mapping[str, object]], column: str, out: TextIO
) -> None:
    """``check --connect``'s report: each finding with its fix, then the option -> route table."""
    for finding in findings:
        print(f"{finding.severity.upper():<8} {finding.message}", file=out)
        if finding.fix:
            print(f"{'':<8}   fix: {finding.fix}", file=out)
    if options:
        print(f"\n{column} options and the route each gets:", file=out)
        for option in options:
            print(f"  {option['value']:>10}  {str(option['label']):<28} {option['route']}", file=out)


def _credential(settings: Settings) -> Any:
    from optout_core.dataverse.auth import dataverse_credential

    return dataverse_credential(settings)


def _client(settings: Settings, credential: Any) -> DataverseClient:
    from optout_core.dataverse.client import DataverseClient

    return DataverseClient(
        settings.dataverse_url or "",
        credential,
        retry=RetryPolicy(attempts=1),
        timeout=min(settings.dataverse_timeout, 15.0),
    )


def _connect(
    settings: Settings, credential: Any = None
) -> tuple[Diagnosis, dict[str, Any] | None, DataverseClient | None]:
    """The diagnosis, WhoAmI's answer and the client that got it (left open for more reads; None when signing
    in failed, and then closed)."""
    if not settings.dataverse_url:
        return (
            Diagnosis(
                False,
                "DATAVERSE_URL is not set: use your environment's URL, e.g. "
                "https://contoso.crm.dynamics.com (Power Platform admin center > Environments)",
            ),
            None,
            None,
        )
    try:
        credential = credential or _credential(settings)
    except SettingsError as exc:
        return Diagnosis(False, str(exc)), None, None
    client = _client(settings, credential)
    try:
        who = client.whoami()
        verification = _verification(client, settings)
    except Exception as exc:  # noqa: BLE001 — sign-in failures come from azure-identity/msal, typed loosely
        client.close()
        if isinstance(exc, SignInFailed):
            return Diagnosis(False, str(exc)), None, None
        if isinstance(exc, DataverseError):
            return Diagnosis(False, _explain_dataverse(exc, settings)), None, None
        return Diagnosis(False, sign_in_advice(exc)), None, None
    organization = str(who.get("OrganizationId", "")).lower()
    expected = settings.expected_organization_id
    if expected and organization != expected:
        return (
            Diagnosis(
                False,
                f"connected, but this environment's organisation id is {organization}, not "
                f"EXPECTED_ORGANIZATION_ID {expected}: every message would be rejected",
            ),
            who,
            client,
        )
    if verification is not None and not verification.ok:
        return verification, who, client
    connected = f"connected as application user {who.get('UserId')} to organisation {organization}"
    message = f"{connected}; {verification.message if verification else 'VERIFY_CAMPAIGN_LOG is off'}"
    return Diagnosis(True, message), who, client


def _verification(client: DataverseClient, settings: Settings) -> Diagnosis | None:
    """With VERIFY_CAMPAIGN_LOG on, the application user must be able to read the campaign log table (a read of a
    row that does not exist: 404 when readable, 403 without the Read privilege)."""
    if not settings.verify_campaign_log:
        return None
    [row] = client.read_rows(settings.campaign_log_entity_set, ["00000000-0000-0000-0000-000000000000"]).rows
    if isinstance(row, DataverseError):
        return Diagnosis(
            False,
            f"VERIFY_CAMPAIGN_LOG is on, but reading {settings.campaign_log_entity_set} failed: {row}; grant the "
            "application user's security role Read on the campaign log table (CAMPAIGN_LOG_ENTITY_SET)",
        )
    return Diagnosis(
        True, f"VERIFY_CAMPAIGN_LOG is on and the application user can read {settings.campaign_log_entity_set}"
    )


def _explain_dataverse(exc: DataverseError, settings: Settings) -> str:
    if exc.status is None:
        return (
            f"cannot reach {settings.dataverse_url} ({exc}): check DATAVERSE_URL (wrong URL or "
            "environment name) and the network path from the Function App"
        )
    if exc.status == 404:
        return f"{settings.dataverse_url} answered 404 for WhoAmI: DATAVERSE_URL is not a Dataverse environment root"
    hint = advice(exc.status, exc.code)
    if hint:
        return f"Dataverse answered {exc.status} to WhoAmI ({exc.code or 'no code'}): {hint}"
    return f"Dataverse answered {exc.status} to WhoAmI: {exc}"
