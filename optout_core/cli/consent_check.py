"""``check --connect`` for the consent write (CONSENT_PURPOSE_IDS / CONSENT_TOPIC_IDS): is Customer Insights –
Journeys' consent table there, does every configured purpose and topic exist, and may the application user read
the address columns and create and update consent records? Only asked when the feature is on (docs/consent.md)."""

from __future__ import annotations

from optout_core.cli.findings import Finding, error, ok
from optout_core.cli.schema import GLOBAL, RECIPIENT_TABLES, SchemaReader, Table, needed_names, shortfalls
from optout_core.cli.schema_check import app_user_id, no_application_user
from optout_core.dataverse.client import DataverseClient
from optout_core.dataverse.errors import DataverseError
from optout_core.domain.consent import TABLE, ConsentType, Scope, scopes
from optout_core.domain.settings import Settings

_ROLE = "the application user's security role (README, Dataverse set-up: the least-privilege role)"


def consent_findings(client: DataverseClient, settings: Settings) -> list[Finding]:
    """What ``check --connect`` reports about the consent write; one ``ok`` when it is off."""
    consent = settings.consent
    if not consent.enabled:
        return [ok("consent.off", "CONSENT_PURPOSE_IDS and CONSENT_TOPIC_IDS are empty: no consent records written")]
    reader = SchemaReader(client)
    try:
        table = reader.table(TABLE)
        if table is None:
            return [
                error(
                    "consent.table_missing",
                    f"the contact point consent table {TABLE} does not exist in this environment",
                    "install Customer Insights - Journeys (real-time journeys), or empty CONSENT_PURPOSE_IDS and "
                    "CONSENT_TOPIC_IDS",
                )
            ]
        findings = [ok("consent.table", f"the contact point consent table {TABLE} exists")]
        findings += [_scope(client, scope) for scope in scopes(consent)]
        recipients = {name: reader.table(name) for name in RECIPIENT_TABLES}
        findings += _address_columns(recipients, consent.address_columns)
        user = app_user_id(client, settings, client.whoami())
        if user is None:
            findings.append(no_application_user(settings, "consent.app_user_missing"))
        else:
            findings.append(_privileges(reader, user, table, recipients, scopes(consent)))
    except DataverseError as exc:
        return [error("consent.unreadable", f"checking the consent write failed: {exc}", f"grant {_ROLE} Read on it")]
    return findings


def _scope(client: DataverseClient, scope: Scope) -> Finding:
    kind = "purpose" if scope.kind is ConsentType.PURPOSE else "topic"
    setting = "CONSENT_PURPOSE_IDS" if scope.kind is ConsentType.PURPOSE else "CONSENT_TOPIC_IDS"
    found = client.get(f"{scope.entity_set}({scope.id})?$select={scope.table}id", missing_ok=True)
    if found is None:
        return error(
            f"consent.{kind}_missing",
            f"{setting} names {kind} {scope.id}, which does not exist in this environment",
            f"copy the id from Customer Insights - Journeys > Settings > Compliance > the profile's consent {kind}s "
            "(the end of its URL)",
        )
    return ok(f"consent.{kind}", f"{kind} {scope.id} exists")


def _address_columns(recipients: dict[str, Table | None], columns: tuple[str, ...]) -> list[Finding]:
    findings = []
    for name, table in recipients.items():
        for column in columns:
            found = table.columns.get(column) if table is not None else None
            if found is None:
                findings.append(
                    error(
                        "consent.address_column_missing",
                        f"RECIPIENT_EMAIL_COLUMNS names {column}, which {name} does not have",
                        "list only address columns every recipient table has (emailaddress1, emailaddress2, ...)",
                    )
                )
            elif not found.readable:
                findings.append(
                    error(
                        "consent.address_column_unreadable",
                        f"{name}.{column} cannot be read",
                        "choose another column in RECIPIENT_EMAIL_COLUMNS",
                    )
                )
    if not findings:
        findings.append(ok("consent.address_columns", f"{', '.join(columns)} exist on {', '.join(recipients)}"))
    return findings


def _privileges(
    reader: SchemaReader,
    user: str,
    table: Table,
    recipients: dict[str, Table | None],
    scopes: tuple[Scope, ...],
) -> Finding:
    """Read, Write and Append on the consent table at organisation depth (the records of an address may have been
    made by anyone: Customer Insights - Journeys, an import), Create at any depth (the app owns what it creates);
    AppendTo on the purpose and topic tables and Read on the recipients, at organisation depth too."""
    needs: list[tuple[Table | None, str, str]] = [(table, kind, GLOBAL) for kind in ("Read", "Write", "Append")]
    needs.append((table, "Create", "Basic"))
    for name in sorted({scope.table for scope in scopes}):
        needs.append((reader.privileges_only(name), "AppendTo", GLOBAL))
    needs += [(recipient, "Read", GLOBAL) for recipient in recipients.values()]
    missing = shortfalls(reader.privilege_depths(user, needed_names(needs)), needs)
    if missing:
        return error(
            "consent.privileges_missing",
            f"application user {user}: {'; '.join(short.describe() for short in missing)}",
            f"give them in {_ROLE} at the depth named",
        )
    return ok("consent.privileges", f"application user {user} may read addresses and create and update consent records")
