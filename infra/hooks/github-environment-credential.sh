#!/bin/sh
# Adds the federated credential that .github/workflows/deploy.yml signs in with. Run once, after
# `azd pipeline config`, as someone who may edit the pipeline's app registration:
#   sh infra/hooks/github-environment-credential.sh <owner>/<repo> <client-id>
# <client-id> is the repository variable AZURE_CLIENT_ID that `azd pipeline config` set. Its credentials cover
# branches and pull requests; the deploy job runs in the GitHub environment `production`, and a job in an
# environment gets a token whose subject names the environment instead (GitHub: OIDC subject claims). Running it
# again changes nothing.
set -eu
repo=${1:?usage: sh infra/hooks/github-environment-credential.sh <owner>/<repo> <client-id>}
client_id=${2:?usage: sh infra/hooks/github-environment-credential.sh <owner>/<repo> <client-id>}
environment=production  # deploy.yml: jobs.deploy.environment
subject="repo:${repo}:environment:${environment}"
issuer=https://token.actions.githubusercontent.com
audience=api://AzureADTokenExchange

existing=$(az ad app federated-credential list --id "$client_id" --query "[?subject=='${subject}'] | length(@)" -o tsv)
if [ "$existing" != "0" ]; then
  echo "federated credential for ${subject} already exists"
  exit 0
fi
az ad app federated-credential create --id "$client_id" --parameters "{
  \"name\": \"github-environment-${environment}\",
  \"issuer\": \"${issuer}\",
  \"subject\": \"${subject}\",
  \"audiences\": [\"${audience}\"],
  \"description\": \"deploy.yml runs in the GitHub environment ${environment}\"
}" >/dev/null
echo "created federated credential for ${subject}"
