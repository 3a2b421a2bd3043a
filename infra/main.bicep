// optout on Azure: `azd up` provisions everything below into one resource group; `azd down` removes it.
// Plain resource declarations only (no registry modules): they can be read and checked without Azure.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name: names the resource group and tags every resource.')
param environmentName string

@minLength(1)
// The regions that offer Flex Consumption, as the official azd sample lists them (its canary region left out):
// a wrong region fails at once, not at site creation. tests/contracts/facts/azure/flex-regions.json cites it.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@description('Azure region for every resource (one that offers Flex Consumption).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of whoever runs azd (AZURE_PRINCIPAL_ID): may read the Dataverse endpoint secret.')
param principalId string = ''

@description('Dataverse environment URL, e.g. https://contoso.crm.dynamics.com (DATAVERSE_URL).')
param dataverseUrl string = ''

@description('Address that receives the alerts.')
param alertEmail string

@allowed([
  '3.12'
  '3.13'
])
@description('Python version of the Function App (azd: OPTOUT_PYTHON_VERSION; not PYTHON_VERSION, which Python images set to a full version such as 3.13.11).')
param pythonVersion string = '3.13'

@minValue(1)
@description('Dataverse concurrent requests the app may use for its application user (service protection: 52).')
param dataverseConcurrencyBudget int = 52

@minValue(40)
@maxValue(1000)
@description('Flex Consumption instance cap, per function group (40 is the lowest the platform accepts).')
param maximumInstanceCount int = 40

@description('Extra app settings (e.g. EXPECTED_ORGANIZATION_ID, AzureWebJobs.BounceDetail.Disabled); win over the code defaults.')
param appSettingOverrides object = {}

@allowed([
  'PT15M'
  'PT30M'
  'PT1H'
])
@description('How long campaign-log may hold waiting messages before the backlog alert fires.')
param campaignLogBacklogWindow string = 'PT30M'

var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'optout-resources'
  scope: rg
  params: {
    environmentName: environmentName
    location: location
    tags: tags
    principalId: principalId
    dataverseUrl: dataverseUrl
    alertEmail: alertEmail
    pythonVersion: pythonVersion
    dataverseConcurrencyBudget: dataverseConcurrencyBudget
    maximumInstanceCount: maximumInstanceCount
    appSettingOverrides: appSettingOverrides
    campaignLogBacklogWindow: campaignLogBacklogWindow
  }
}

// azd keeps these in .azure/<env>/.env; the hooks print the next step from them. No secret among them.
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output SERVICEBUS_NAMESPACE string = resources.outputs.serviceBusNamespace
output AZURE_KEY_VAULT_NAME string = resources.outputs.keyVaultName
output DATAVERSE_ENDPOINT_SECRET_NAME string = resources.outputs.dataverseEndpointSecretName
output AZURE_CLIENT_ID string = resources.outputs.identityClientId
output DATAVERSE_MAX_CONCURRENCY int = resources.outputs.dataverseMaxConcurrency
output DATAVERSE_WORST_CASE_CONCURRENCY int = resources.outputs.dataverseWorstCaseConcurrency
