"""Writes infra/app-settings.json from the app's settings list (run from the repository root).

    python -m tools.appsettings          (or ./dev appsettings)

The Bicep template (infra/resources.bicep) loads that file, so every setting the code reads reaches the
Function App with the code's own default: one source of truth, optout_core/domain/settings_spec.py.
tests/unit/test_infra.py fails, naming this command, when the file and the code disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optout_core.domain.settings_spec import SPEC

COMMAND = "python -m tools.appsettings"
OUTPUT = Path(__file__).resolve().parent.parent / "infra" / "app-settings.json"

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


def document() -> dict[str, Any]:
    """The content of infra/app-settings.json for the current SPEC."""
    return {
        "generatedBy": f"{COMMAND} - do not edit; regenerate after changing optout_core/domain/settings_spec.py",
        "defaults": {
            s.name: s.default for s in SPEC if s.scope == "app" and not s.secret and s.name not in FROM_TEMPLATE
        },
        "fromTemplate": sorted(FROM_TEMPLATE),
        # Secrets never become app settings: Service Bus and Dataverse are reached with the managed identity.
        "secretsLeftOut": sorted(s.name for s in SPEC if s.secret),
        # Read only by the administrator's commands (setup, check) on their own machine.
        "adminOnly": sorted(s.name for s in SPEC if s.scope == "admin"),
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}")


if __name__ == "__main__":
    main()
