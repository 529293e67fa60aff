{{/*
The release's full name: the release name, or "<release>-routeiq-operator" when the release name
does not already contain the chart name. DNS-1123 labels are at most 63 characters.
*/}}
{{- define "routeiq-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the release namespace too, so two
namespaced installs with the same release name do not collide.
*/}}
{{- define "routeiq-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "routeiq-operator.fullname" .) -}}
{{- end -}}

{{- define "routeiq-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "routeiq-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "routeiq-operator.labels" -}}
{{ include "routeiq-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: routeiq
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "routeiq-operator.chart" . }}
{{- end -}}

{{- define "routeiq-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "routeiq-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository:tag@digest when a digest is given (the digest decides what runs). */}}
{{- define "routeiq-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- with .Values.image.digest -}}@{{ . }}{{- end -}}
{{- end -}}

{{/* The watched namespaces, sorted and de-duplicated; empty means cluster-wide. */}}
{{- define "routeiq-operator.watchNamespaces" -}}
{{- .Values.watchNamespaces | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/*
The operator's rules on namespaced resources: the same in the ClusterRole (cluster-wide mode) and
in each namespace's Role (namespaced mode). Secrets are read only (checksums of referenced
Secrets); the operator never writes them.
*/}}
{{- define "routeiq-operator.namespacedRules" -}}
- apiGroups: ["routeiq.io"]
  resources: ["routeiqgateways", "routingexperiments", "modelartifacts"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["routeiq.io"]
  resources: ["routeiqgateways/status", "routingexperiments/status", "modelartifacts/status"]
  verbs: ["patch", "update"]
# the gateway children's ownerReferences set blockOwnerDeletion, which clusters enforcing
# owner-reference permissions (OwnerReferencesPermissionEnforcement, OpenShift) only allow with this
- apiGroups: ["routeiq.io"]
  resources: ["routeiqgateways/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["serviceaccounts", "configmaps", "services"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: ["external-secrets.io"]
  resources: ["externalsecrets"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Cluster-scoped reads, needed in both modes. */}}
{{- define "routeiq-operator.clusterRules" -}}
# whether the ExternalSecret and ServiceMonitor CRDs exist
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# kopf's namespace discovery
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end -}}

{{- define "routeiq-operator.peeringVerbs" -}}
["get", "list", "watch", "patch"]
{{- end -}}
