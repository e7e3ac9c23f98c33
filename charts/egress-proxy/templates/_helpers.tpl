{{/* The prefix of every object's name: the release name, or release-chart. */}}
{{- define "egress-proxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "egress-proxy.operator" -}}
{{- printf "%s-operator" (include "egress-proxy.fullname" .) -}}
{{- end -}}

{{- define "egress-proxy.webhookService" -}}
{{- printf "%s-webhook" (include "egress-proxy.fullname" .) -}}
{{- end -}}

{{- define "egress-proxy.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "egress-proxy.fullname" .) -}}
{{- end -}}

{{- define "egress-proxy.labels" -}}
app.kubernetes.io/name: egress-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "egress-proxy.selector" -}}
app.kubernetes.io/name: egress-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
