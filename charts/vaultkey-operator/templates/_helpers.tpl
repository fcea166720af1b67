{{/* Chart name, or nameOverride. */}}
{{- define "vaultkey-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: fullnameOverride, else the release name when it contains the
chart name, else <release>-<chart>; at most 63 characters.
*/}}
{{- define "vaultkey-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vaultkey-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vaultkey-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vaultkey-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vaultkey-operator.labels" -}}
helm.sh/chart: {{ include "vaultkey-operator.chart" . }}
{{ include "vaultkey-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vaultkey-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vaultkey-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vaultkey-operator.leaseName" -}}
{{- default (include "vaultkey-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "vaultkey-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Rules on VaultKeys, Events and Secrets, granted cluster-wide (ClusterRole) or in each watched
namespace (Role). Only what src/controller.rs does; every rule says why.
*/}}
{{- define "vaultkey-operator.rules" -}}
# The controller lists and watches VaultKeys (its informer); get, for reads by name, exposes
# nothing that list does not.
- apiGroups: ["vaultkey.dev"]
  resources: ["vaultkeys"]
  verbs: ["get", "list", "watch"]
# The finalizer vaultkey.dev/cleanup is added and removed with a JSON patch on the VaultKey; the
# operator never creates, replaces or deletes VaultKeys.
- apiGroups: ["vaultkey.dev"]
  resources: ["vaultkeys"]
  verbs: ["patch"]
# Status (Ready condition, versions, rotation state) is written by server-side apply.
- apiGroups: ["vaultkey.dev"]
  resources: ["vaultkeys/status"]
  verbs: ["patch"]
# Setting finalizers through the finalizers subresource; needed where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: ["vaultkey.dev"]
  resources: ["vaultkeys/finalizers"]
  verbs: ["update"]
# Created, Rotated, Imported, Deleted and warning events about VaultKeys: the recorder creates an
# event, then patches it as a series when it repeats. It never reads events back.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# spec.publish: the ConfigMap holding the key's ids and public part, read by name (get) and
# written by server-side apply (patch; create when it does not exist yet). Never list, watch,
# update or delete: a ConfigMap the VaultKey does not own is only read, and owned ones go with
# their VaultKey through the garbage collector.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
{{- if .Values.rbac.importSecrets }}
# spec.import.secretRef: the key material is read with a get by name from the VaultKey's own
# namespace. Never list or watch: the operator sees only the Secrets that VaultKeys name.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.namespaceIdentities }}
# spec.identity.serviceAccountName: the ServiceAccount a VaultKey names is read by name from the
# VaultKey's own namespace for its azure.workload.identity/client-id and tenant-id annotations.
# Never list or watch.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
# ... and a short-lived token of it is requested (TokenRequest, audience
# api://AzureADTokenExchange) to exchange at Azure AD. RBAC cannot limit the audience or the
# ServiceAccount: this lets the operator mint tokens for any ServiceAccount where it is granted,
# hence opt-in (rbac.namespaceIdentities) and best combined with watchNamespaces.
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
{{- end }}
{{- end }}

{{/*
The credential setups that can work, for the install-time failure when none is chosen.
*/}}
{{- define "vaultkey-operator.credentialChoices" -}}
Choose one credential setup (chart README, "Azure credentials"):
  - workload identity, token mounted by the chart (any cluster whose service-account issuer is
    federated with the identity):
      --set azure.workloadIdentity.clientId=<client id>,azure.workloadIdentity.tenantId=<tenant id>
  - workload identity through the Azure Workload Identity webhook (AKS --enable-workload-identity):
      --set azure.workloadIdentity.webhook=true,azure.workloadIdentity.clientId=<client id>
  - managed identity (the node's or VM's identity, through IMDS):
      --set azure.credential=managed-identity[,azure.managedIdentityClientId=<client id>]
  - client secret (a service principal):
      --set azure.credential=client-secret,azure.clientSecretName=<Secret with AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET>
{{- end }}

{{/*
True when the chart itself mounts the workload identity token and sets its environment.
*/}}
{{- define "vaultkey-operator.chartToken" -}}
{{- if and (eq .Values.azure.credential "workload-identity") (not .Values.azure.workloadIdentity.webhook) }}true{{ end }}
{{- end }}
