// Every resource of optout, in one resource group (main.bicep creates the group and passes the parameters).
param environmentName string
param location string
param tags object
param principalId string
param dataverseUrl string
param alertEmail string
param pythonVersion string
param dataverseConcurrencyBudget int
param maximumInstanceCount int
param appSettingOverrides object
param campaignLogBacklogWindow string

var token = uniqueString(subscription().id, resourceGroup().id, environmentName)

// The queues and what the app does with each, generated from the function table (`./dev appsettings`).
var queueFile = loadJsonContent('queues.json')
var queueList = queueFile.queues

// ---- Dataverse concurrency: one budget, two derived numbers -------------------------------------------------
// Dataverse refuses more than 52 concurrent requests per application user. Flex Consumption scales each
// Service Bus function in its own group of instances (function:<NAME>), each group up to
// maximumInstanceCount, one worker process per instance; every process holds its requests in flight to
// DATAVERSE_MAX_CONCURRENCY (optout_core/dataverse/throttle.py). All three functions can call Dataverse (the
// router re-reads trimmed contexts). So, at most:
//   in flight = dataverseFunctionGroups × maximumInstanceCount × DATAVERSE_MAX_CONCURRENCY
//   DATAVERSE_MAX_CONCURRENCY = max(1, budget ÷ (dataverseFunctionGroups × maximumInstanceCount))
//   maxConcurrentCalls (per function, per instance) = max(DATAVERSE_MAX_CONCURRENCY, budget ÷ dataverseFunctionGroups)
// Flex's lowest instance cap is 40 per group, so the worst case is 3 × 40 × 1 = 120 > 52: Flex cannot express a
// cap below that. The budget is reached only when every group runs at its cap at once; beyond it Dataverse
// answers 429 and the app waits out Retry-After (it never loses work). Output: DATAVERSE_WORST_CASE_CONCURRENCY.
// maxConcurrentCalls is the budget's share per function, not the gate, so target-based scaling (instances =
// backlog ÷ per-instance concurrency) asks for fewer instances; invocations beyond the gate wait for a slot.
var dataverseFunctionGroups = queueFile.functionGroups // one per function of the table
var dataverseMaxConcurrency = max(1, dataverseConcurrencyBudget / (dataverseFunctionGroups * maximumInstanceCount))
var maxConcurrentCalls = max(dataverseMaxConcurrency, dataverseConcurrencyBudget / dataverseFunctionGroups)
var dataverseWorstCaseConcurrency = dataverseFunctionGroups * maximumInstanceCount * dataverseMaxConcurrency

// ---- Built-in roles (Azure RBAC role definition ids) ----------------------------------------------------------
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

// ---- Identity -------------------------------------------------------------------------------------------------
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${token}'
  location: location
  tags: tags
}

// ---- Storage: the host's state and the deployment package, identity only ----------------------------------------
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the Flex app reaches it over the public endpoint (no VNet in this template); Entra ID only, no keys
  // checkov:skip=CKV_AZURE_206: host state and the deployment package are rebuilt by azd deploy; LRS is enough
  // checkov:skip=CKV_AZURE_59: public network access stays on for the same reason as CKV_AZURE_35
  // checkov:skip=CKV2_AZURE_33: a private endpoint needs a VNet this template does not create
  // checkov:skip=CKV2_AZURE_1: Microsoft-managed keys: nothing in it is personal data
  // checkov:skip=CKV2_AZURE_38: soft delete of blobs is not needed for a rebuildable package
  // checkov:skip=CKV2_AZURE_40: shared key access is disabled (allowSharedKeyAccess: false); the check misreads it
  name: 'st${token}'
  // checkov:skip=CKV2_AZURE_41: no SAS is ever issued (shared keys are off)
  // checkov:skip=CKV_AZURE_43: checkov cannot evaluate the name: st plus uniqueString, 15 lower-case letters and digits
  // checkov:skip=CKV_AZURE_33: no queue service is used - Service Bus triggers need only blobs
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'app-package'
  properties: {
    publicAccess: 'None'
  }
}

resource storageBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// ---- Monitoring ------------------------------------------------------------------------------------------------
resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${token}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// ---- Service Bus ---------------------------------------------------------------------------------------------
resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: 'sb-${token}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    minimumTlsVersion: '1.2'
    // Local (SAS) auth stays on for one reason: Dataverse's service endpoint can only post with a SAS key. The one
    // rule that exists is dataverseSend below (Send, campaign-log only); the app itself uses Entra ID.
    disableLocalAuth: false
  }
}

// The queues, written by `python -m tools.appsettings` from the function table (optout_core/domain/model.py
// FUNCTIONS) into queues.json: each function's trigger queue (its name = the code's default), then rejected. Its
// properties follow from what the function is (tools/appsettings.py `queues`): a batch function's lock outlasts
// its batch time budget plus one request in flight, because the host does not renew a batch's locks; a work
// queue drops a second copy of a work item (MessageId <log id>:<route>) within a day; rejected keeps a message for
// a person (no time to live), and should one be set, expiry moves it to the dead-letter queue rather than away.
resource queues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for q in queueList: {
  parent: serviceBus
  name: q.name
  properties: {
    lockDuration: q.lockDuration
    maxDeliveryCount: 10
    defaultMessageTimeToLive: q.defaultMessageTimeToLive
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: q.requiresDuplicateDetection
    duplicateDetectionHistoryTimeWindow: q.duplicateDetectionHistoryTimeWindow
  }
}]

// Dataverse's key: Send only, on the router's queue (campaign-log) only. Its connection string goes to Key Vault,
// never to an output.
resource dataverseSend 'Microsoft.ServiceBus/namespaces/queues/authorizationRules@2024-01-01' = {
  parent: queues[queueFile.dataverseQueue]
  name: 'dataverse-send'
  properties: {
    rights: [
      'Send'
    ]
  }
}

// Least privilege, per queue, from queues.json: Receiver where a function is triggered (`receive`); Sender where
// the app writes (`send`: the router forwards to opt-out/bounce, whose functions put back what they could not
// write yet; every function keeps rejected and failed messages on rejected, which nothing receives from). Data
// Owner on the trigger queues only: the scale controller reads message counts through the management API, which
// needs Manage; with Listen only it falls back to estimates. No role on the namespace.
resource queueReceivers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in queueList: if (q.receive) {
  name: guid(queues[i].id, identity.id, roles.serviceBusDataReceiver)
  scope: queues[i]
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}]

resource queueSenders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in queueList: if (q.send) {
  name: guid(queues[i].id, identity.id, roles.serviceBusDataSender)
  scope: queues[i]
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
  }
}]

resource queueScaleOwners 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in queueList: if (q.receive) {
  name: guid(queues[i].id, identity.id, roles.serviceBusDataOwner)
  scope: queues[i]
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
  }
}]

// ---- Key Vault: Dataverse's Send-only connection string, never an output ---------------------------------------
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: public network access stays on so the operator can read the secret for `setup`; RBAC only
  // checkov:skip=CKV_AZURE_42: recoverable = soft delete (on) plus purge protection (off: see CKV_AZURE_110)
  // checkov:skip=CKV_AZURE_110: purge protection would keep the name locked after `azd down`, so `azd up` of the same environment fails; the secret is re-creatable (regenerate the rule's keys)
  // checkov:skip=CKV_AZURE_189: as CKV_AZURE_109
  // checkov:skip=CKV2_AZURE_32: a private endpoint needs a VNet this template does not create
  name: 'kv-${token}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource dataverseEndpointSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: the value lives as long as the rule's key; rotate with regenerateKeys and `azd provision`
  parent: vault
  name: 'dataverse-endpoint-connection-string'
  properties: {
    contentType: 'Service Bus connection string (Send, campaign-log): DATAVERSE_ENDPOINT_CONNECTION_STRING'
    value: dataverseSend.listKeys().primaryConnectionString
  }
}

// Whoever ran azd reads the secret to register Dataverse's service endpoint (python -m optout_core setup).
resource deployerSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(vault.id, principalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// ---- Function App (Flex Consumption) ---------------------------------------------------------------------------
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex needs always-ready instances, which this app does not need
  // checkov:skip=CKV_AZURE_212: Flex has no worker count; instances are set by maximumInstanceCount
  // checkov:skip=CKV_AZURE_211: FC1 is the only Flex SKU
  name: 'plan-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: no HTTP trigger, but azd deploy publishes over the public endpoint
  // checkov:skip=CKV_AZURE_17: no HTTP trigger: client certificates protect nothing here
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint to probe; Service Bus triggers only
  // checkov:skip=CKV_AZURE_221: as CKV_AZURE_222
  // checkov:skip=CKV_AZURE_212: Flex has no worker count to raise; instances follow the queues up to maximumInstanceCount
  name: 'func-${token}'
  location: location
  tags: union(tags, {
    'azd-service-name': 'optout'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Every setting the code reads, with the code's default (app-settings.json, written by `python -m tools.appsettings`
// from optout_core/domain/settings_spec.py), then the operator's overrides, then what this template wires up.
// Secrets are never app settings: Service Bus and Dataverse are reached with the identity.
// azd provision rewrites the whole set: keep a function switched off in appSettingOverrides, not only in the portal.
var generated = loadJsonContent('app-settings.json')
// The queue settings (each function's and REJECTED_QUEUE) name the queues above, from the same queues.json.
var templateSettings = union(queueFile.settings, {
  DATAVERSE_URL: dataverseUrl
  AZURE_CLIENT_ID: identity.properties.clientId
  DATAVERSE_MAX_CONCURRENCY: string(dataverseMaxConcurrency)
  ServiceBusConnection__fullyQualifiedNamespace: '${serviceBus.name}.servicebus.windows.net'
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identity.properties.clientId
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  AzureFunctionsJobHost__extensions__serviceBus__maxConcurrentCalls: string(maxConcurrentCalls)
})

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads this app-settings resource as a site configuration; none of these apply to an app without HTTP:
  // checkov:skip=CKV_AZURE_13: no HTTP trigger, so no App Service authentication to set
  // checkov:skip=CKV_AZURE_63: no HTTP trigger, so no HTTP logs
  // checkov:skip=CKV_AZURE_65: no HTTP trigger, so no detailed error pages
  // checkov:skip=CKV_AZURE_66: no HTTP trigger, so no failed request tracing
  // checkov:skip=CKV_AZURE_80: Python, not .NET
  // checkov:skip=CKV_AZURE_88: Flex Consumption deploys from a blob container, not Azure Files
  // checkov:skip=CKV_AZURE_222: set on the site (see there); app settings cannot hold it
  parent: site
  name: 'appsettings'
  properties: union(generated.defaults, appSettingOverrides, templateSettings)
  dependsOn: [
    storageBlobOwner
    metricsPublisher
    queues // the queue settings name them
  ]
}

// ---- Alerts -------------------------------------------------------------------------------------------------
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${token}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'optout'
    enabled: true
    emailReceivers: [
      {
        name: 'operations'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Service Bus metrics read 0 for an entity untouched for 2 hours: these fire early, within their window.
resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'optout-dead-letter'
  location: 'global'
  tags: tags
  properties: {
    description: 'A message reached a dead-letter queue: redrive it with `optout redrive --from deadletter:<queue>`.'
    severity: 1
    enabled: true
    // Not resolved by the metric: the message still waits until a person redrives it, and nothing receives from
    // rejected. The alert stays fired until an operator closes it.
    autoMitigate: false
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'deadLettered'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [for (q, i) in queueList: queues[i].name]
            }
          ]
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

resource rejectedAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'optout-rejected-waiting'
  location: 'global'
  tags: tags
  properties: {
    description: 'An opt-out or bounce is kept on the rejected queue: read its reason, fix, then `optout redrive --from rejected`.'
    severity: 2
    enabled: true
    // Not resolved by the metric: the message still waits until a person redrives it, and nothing receives from
    // rejected. The alert stays fired until an operator closes it.
    autoMitigate: false
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'rejectedActive'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                queues[queueFile.rejectedQueue].name
              ]
            }
          ]
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

// Never empty for a whole window = the oldest waiting event is at least that old: an opt-out not applied yet.
resource backlogAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'optout-campaign-log-backlog'
  location: 'global'
  tags: tags
  properties: {
    description: 'campaign-log has not been empty for the whole window: is CampaignLogRouter switched off or failing?'
    severity: 1
    enabled: true
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: campaignLogBacklogWindow
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'backlog'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Minimum'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                queues[queueFile.dataverseQueue].name
              ]
            }
          ]
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

// The outcome lines (optout_core/app/outcome.py): `outcome {json}`, the host's copy (it arrives even when the
// distro's ingestion fails; the distro's copy carries the custom dimensions), one row per line.
var outcomes = 'traces | where message startswith "outcome " and isempty(customDimensions.outcome) | extend o = parse_json(substring(message, 8))'

resource failedOrRejectedAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'optout-failed-or-rejected'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    description: 'An event ended failed or rejected in the last 15 minutes.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: '${outcomes} | where tostring(o.outcome) in ("failed", "rejected")'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource dataverseAuthAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'optout-dataverse-401-403'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    description: 'Dataverse answered 401 or 403: the application user, its role or the identity changed. `optout check --connect` says what to fix.'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where message matches regex "Dataverse answered 40[13]"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// The scheduled audit's one line per run (optout_core/app/telemetry.py audit_run): `audit {json}`, the host's copy.
var audits = 'traces | where message startswith "audit " and isempty(customDimensions.since) | extend a = parse_json(substring(message, 6))'

resource auditNotHonouredAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'optout-audit-not-honoured'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    description: 'OptOutAudit found opt-outs not honoured on their recipients (repaired when AUDIT_FIX is true), or could not read the campaign logs. Run `optout audit --since <date> --csv evidence.csv` to see which.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    // The audit runs at most a few times a day: each run's line falls in exactly one hourly window.
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: '${audits} | where toint(a.not_honoured) > 0 or isnotempty(a.error)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// ---- Workbook: outcomes, rejection reasons, latency, backlog, 429s ---------------------------------------------
resource workbook 'Microsoft.Insights/workbooks@2022-04-01' = {
  name: guid(resourceGroup().id, 'optout-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'optout operations'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: replace(loadTextContent('workbook.json'), '__SERVICEBUS_ID__', serviceBus.id)
  }
}

output functionAppName string = site.name
output serviceBusNamespace string = serviceBus.name
output keyVaultName string = vault.name
output dataverseEndpointSecretName string = dataverseEndpointSecret.name
output identityClientId string = identity.properties.clientId
output dataverseMaxConcurrency int = dataverseMaxConcurrency
output dataverseWorstCaseConcurrency int = dataverseWorstCaseConcurrency
