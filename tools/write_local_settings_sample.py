"""Rewrites local.settings.sample.json from optout_core.domain.settings.SPEC (run from the repository root)."""

import json
from pathlib import Path

from optout_core.domain.settings import SPEC

PLACEHOLDERS = {
    "DATAVERSE_URL": "https://<your-org>.crm.dynamics.com",
    "ServiceBusConnection__fullyQualifiedNamespace": "<your-namespace>.servicebus.windows.net",
}

values = {"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
meanings = {
    "FUNCTIONS_WORKER_RUNTIME": "Functions host: the worker language.",
    "AzureWebJobsStorage": "Functions host: storage for the host's own state (Azurite locally).",
}
for setting in SPEC:
    meanings[setting.name] = setting.meaning
    if setting.name == "ServiceBusConnection":  # a secret: never in a file that may be copied around
        meanings[setting.name] += " Leave it out when you use the namespace setting below."
        continue
    values[setting.name] = PLACEHOLDERS.get(setting.name, setting.default)

document = {"IsEncrypted": False, "Values": values, "Meanings": meanings}
Path("local.settings.sample.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
