#!/bin/sh
# azd hook: prints the next step. azd passes the template's outputs as environment variables; no secret is
# among them: the Dataverse endpoint's connection string stays in Key Vault and is read only when needed.
cat <<MSG

optout is provisioned in resource group ${AZURE_RESOURCE_GROUP}, Function App ${AZURE_FUNCTION_APP_NAME}.
Dataverse requests in flight per worker process: ${DATAVERSE_MAX_CONCURRENCY} (worst case across all instances: ${DATAVERSE_WORST_CASE_CONCURRENCY}).

Next: register the Dataverse service endpoint (Send-only key on the campaign-log queue, kept in Key Vault):

  export DATAVERSE_URL=${DATAVERSE_URL:-https://<your-org>.crm.dynamics.com}
  export DATAVERSE_ENDPOINT_CONNECTION_STRING="\$(az keyvault secret show --vault-name ${AZURE_KEY_VAULT_NAME} \\
      --name ${DATAVERSE_ENDPOINT_SECRET_NAME} --query value -o tsv)"
  ./dev optout setup
  ./dev optout check --connect

The secret: Key Vault ${AZURE_KEY_VAULT_NAME}, secret ${DATAVERSE_ENDPOINT_SECRET_NAME} (you hold Key Vault Secrets User).
Alerts go to the action group's address; the workbook is "optout operations" in the resource group.
MSG
