"""Writes every file derived from the app's settings list (optout_core/domain/settings_spec.py, with the
function table's settings):

* infra/app-settings.json, which the Bicep template (infra/resources.bicep) loads, so every setting the code reads
  reaches the Function App with the code's own default;
* local.settings.sample.json, every setting with its default and meaning, for Core Tools runs;
* the settings table of README.md, between its ``settings-table`` markers.

    python -m tools.appsettings          (or ./dev appsettings)

tests/unit/test_infra.py and tests/unit/test_settings.py fail, naming this command, when a file and the code
disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optout_core.domain.settings_spec import SPEC, Setting

COMMAND = "python -m tools.appsettings"
ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "infra" / "app-settings.json"
SAMPLE = ROOT / "local.settings.sample.json"
README = ROOT / "README.md"
TABLE_START = "<!-- settings-table: written by ./dev appsettings from optout_core/domain/settings_spec.py -->"
TABLE_END = "<!-- /settings-table -->"

# Values shown in local.settings.sample.json instead of the default, for settings that have none that works.
PLACEHOLDERS = {
    "DATAVERSE_URL": "https://<your-org>.crm.dynamics.com",
    "ServiceBusConnection__fullyQualifiedNamespace": "<your-namespace>.servicebus.windows.net",
}
# What Core Tools itself needs in local.settings.json (the code does not read these).
HOST_VALUES = {
    "FUNCTIONS_WORKER_RUNTIME": ("python", "Functions host: the worker language."),
    "AzureWebJobsStorage": (
        "UseDevelopmentStorage=true",
        "Functions host: storage for the host's own state (Azurite locally).",
    ),
}

# Settings whose value the template takes from what it creates or from its parameters (infra/resources.bicep,
# `templateSettings`), with the reason. Every other non-secret setting gets the code's default.
FROM_TEMPLATE: dict[str, str] = {
    "CAMPAIGN_LOG_QUEUE": "the name of the queue the template creates",
    "OPT_OUT_QUEUE": "the name of the queue the template creates",
    "BOUNCE_QUEUE": "the name of the queue the template creates",
    "REJECTED_QUEUE": "the name of the queue the template creates",
    "DATAVERSE_URL": "parameter dataverseUrl",
    "AZURE_CLIENT_ID": "the user-assigned identity: DefaultAzureCredential signs in to Dataverse with it",
    "DATAVERSE_MAX_CONCURRENCY": "derived from parameter dataverseConcurrencyBudget (see the formula)",
    "ServiceBusConnection__fullyQualifiedNamespace": "the namespace the template creates",
    "ServiceBusConnection__credential": "managedidentity: the triggers and the sender use the identity",
    "ServiceBusConnection__clientId": "the user-assigned identity",
}

# Platform settings the template also sets; the code does not read them (not in SPEC).
PLATFORM: dict[str, str] = {
    "AzureWebJobsStorage__credential": "host storage through the identity, no shared key",
    "AzureWebJobsStorage__clientId": "the user-assigned identity",
    "AzureWebJobsStorage__blobServiceUri": "host storage: blob only (Service Bus triggers need no queues/tables)",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "where the host and optout_core/app/telemetry.py send telemetry",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra ID ingestion (the component refuses keys)",
    "AzureFunctionsJobHost__extensions__serviceBus__maxConcurrentCalls": (
        "host.json override: per-function concurrency derived from dataverseConcurrencyBudget"
    ),
}


def document(spec: Sequence[Setting] = SPEC) -> dict[str, Any]:
    """The content of infra/app-settings.json for ``spec``."""
    return {
        "generatedBy": f"{COMMAND} - do not edit; regenerate after changing optout_core/domain/settings_spec.py",
        "defaults": {
            s.name: s.default for s in spec if s.scope == "app" and not s.secret and s.name not in FROM_TEMPLATE
        },
        "fromTemplate": sorted(FROM_TEMPLATE),
        # Secrets never become app settings: Service Bus and Dataverse are reached with the managed identity.
        "secretsLeftOut": sorted(s.name for s in spec if s.secret),
        # Read only by the administrator's commands (setup, check) on their own machine.
        "adminOnly": sorted(s.name for s in spec if s.scope == "admin"),
    }


def render(spec: Sequence[Setting] = SPEC) -> str:
    return json.dumps(document(spec), indent=2, ensure_ascii=False) + "\n"


def sample(spec: Sequence[Setting] = SPEC) -> str:
    """local.settings.sample.json: every setting with its default (a placeholder where none works) and meaning.
    A connection string is a secret: it is described, never given a value in a file that may be copied around."""
    values = {name: value for name, (value, _) in HOST_VALUES.items()}
    meanings = {name: meaning for name, (_, meaning) in HOST_VALUES.items()}
    for setting in spec:
        meanings[setting.name] = setting.meaning
        if setting.name == "ServiceBusConnection":
            meanings[setting.name] += " Leave it out when you use the namespace setting below."
            continue
        values[setting.name] = PLACEHOLDERS.get(setting.name, setting.default)
    document = {"IsEncrypted": False, "Values": values, "Meanings": meanings}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def readme_table(spec: Sequence[Setting] = SPEC) -> str:
    """The README's settings table (markdown), markers included."""
    rows = [TABLE_START, "| setting | default | meaning | example |", "| --- | --- | --- | --- |"]
    for s in spec:
        default = _code(s.default) if s.default else "*(empty)*"
        example = _code(s.example) if s.example else ""
        meaning = s.meaning.replace("|", "\\|")
        rows.append(f"| `{s.name}` | {default} | {meaning} | {example} |".replace(" |  |", " | |"))
    rows.append(TABLE_END)
    return "\n".join(rows)


def _code(value: str) -> str:
    return f"`{value.replace('|', '\\|')}`"


def with_readme_table(readme: str, spec: Sequence[Setting] = SPEC) -> str:
    """``readme`` with the text between its settings-table markers replaced."""
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)
    if len(pattern.findall(readme)) != 1:
        raise SystemExit(f"README.md needs exactly one settings table between {TABLE_START} and {TABLE_END}")
    return pattern.sub(lambda _: readme_table(spec), readme)


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    SAMPLE.write_text(sample(), encoding="utf-8")
    README.write_text(with_readme_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    for path in (OUTPUT, SAMPLE, README):
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
