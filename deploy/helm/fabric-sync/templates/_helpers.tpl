{{/* Chart name. */}}
{{- define "fabric-sync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: the release name if it holds the chart name. */}}
{{- define "fabric-sync.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "fabric-sync.labels" -}}
{{ include "fabric-sync.selectorLabels" . }}
app.kubernetes.io/part-of: fabric-sync
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{- define "fabric-sync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fabric-sync.name" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fabric-sync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fabric-sync.configMapName" -}}
{{- default (printf "%s-config" (include "fabric-sync.fullname" .)) .Values.configMap.name -}}
{{- end -}}

{{- define "fabric-sync.ufmSecretName" -}}
{{- default (printf "%s-ufm" (include "fabric-sync.fullname" .)) .Values.ufmSecret.name -}}
{{- end -}}

{{/* The controller's ServiceAccount, ClusterRole and ClusterRoleBinding; the admission
     policies' parameter is that ClusterRoleBinding (admission-policies.yaml). */}}
{{- define "fabric-sync.controllerName" -}}
{{- printf "%s-controller" (include "fabric-sync.fullname" .) -}}
{{- end -}}
