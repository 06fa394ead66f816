{{/* Name of every object. */}}
{{- define "podhose.fullname" -}}
{{- default "podhose-forwarder" .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podhose.namespace" -}}
{{- .Values.namespace.name -}}
{{- end -}}

{{- define "podhose.serviceAccountName" -}}
{{- default (include "podhose.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The labels k8s/ gives its objects (the selector label first), then Helm's own. */}}
{{- define "podhose.labels" -}}
app.kubernetes.io/name: {{ include "podhose.fullname" . }}
app.kubernetes.io/part-of: podhose
{{ include "podhose.helmLabels" . }}
{{- end -}}

{{- define "podhose.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "podhose.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podhose.fullname" . }}
{{- end -}}

{{- define "podhose.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/*
A setting as the forwarder reads it: text. Whole numbers print without an exponent (YAML
numbers reach templates as float64: 33554432 would print as 3.3554432e+07), lists join
with commas, booleans print true/false.
*/}}
{{- define "podhose.settingValue" -}}
{{- $v := . -}}
{{- if kindIs "slice" $v -}}
{{- join "," $v -}}
{{- else if and (kindIs "float64" $v) (eq $v (floor $v)) -}}
{{- int64 $v -}}
{{- else -}}
{{- toString $v -}}
{{- end -}}
{{- end -}}

{{/* routes as PODHOSE_ROUTES: GLOB=STREAM,GLOB=STREAM */}}
{{- define "podhose.routes" -}}
{{- $pairs := list -}}
{{- range . -}}
{{- $pairs = append $pairs (printf "%s=%s" .namespaces .deliveryStream) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Why the checkov checks below do not apply (the same annotations as k8s/daemonset.yaml). */}}
{{- define "podhose.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_23=The forwarder runs as root (uid 0) to read kubelet's root-owned 0640 log files; it keeps no capability, cannot escalate and has a read-only root filesystem
checkov.io/skip2: CKV_K8S_40=Runs as uid 0 on purpose (see CKV_K8S_23); a high UID could not read the node's container logs
checkov.io/skip3: CKV_K8S_43=The image is built by each user from forwarder/Dockerfile; its digest goes in kustomization.yaml's images entry or the chart's image.digest
{{- if .Values.podMetadata.enabled }}
checkov.io/skip4: CKV_K8S_38=The pod-metadata watch lists the node's pods with the service-account token
{{- end }}
{{- end -}}
