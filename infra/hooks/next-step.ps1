# azd hook (Windows): the same next step as next-step.sh. No secret is printed.
Write-Host ""
Write-Host "optout is provisioned in resource group $env:AZURE_RESOURCE_GROUP, Function App $env:AZURE_FUNCTION_APP_NAME."
Write-Host "Dataverse requests in flight per worker process: $env:DATAVERSE_MAX_CONCURRENCY (worst case: $env:DATAVERSE_WORST_CASE_CONCURRENCY)."
Write-Host ""
Write-Host "Next: register the Dataverse service endpoint (Send-only key on the campaign-log queue, kept in Key Vault):"
Write-Host "  `$env:DATAVERSE_ENDPOINT_CONNECTION_STRING = az keyvault secret show --vault-name $env:AZURE_KEY_VAULT_NAME --name $env:DATAVERSE_ENDPOINT_SECRET_NAME --query value -o tsv"
Write-Host "  python -m optout_core setup"
Write-Host "  python -m optout_core check --connect"
