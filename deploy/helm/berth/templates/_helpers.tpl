{{- define "berth.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "berth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "berth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth.secretName" -}}
{{- .Values.secret.existingSecret | default (include "berth.fullname" .) -}}
{{- end -}}

{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "berth.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The secrets, as BERTH_* variables (the same in the replicas and the migration Job). */}}
{{- define "berth.secretEnv" -}}
- name: BERTH_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "berth.secretName" . }}, key: {{ .Values.secret.keys.secretKey }}}
- name: BERTH_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ include "berth.secretName" . }}, key: {{ .Values.secret.keys.databaseURL }}}
- name: BERTH_STORAGE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "berth.secretName" . }}, key: {{ .Values.secret.keys.s3AccessKey }}, optional: true}
- name: BERTH_STORAGE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "berth.secretName" . }}, key: {{ .Values.secret.keys.s3SecretKey }}, optional: true}
- name: BERTH_NOTIFICATIONS_SMTP_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "berth.secretName" . }}, key: {{ .Values.secret.keys.smtpPassword }}, optional: true}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The port of a listen address (HOST:PORT or :PORT). */}}
{{- define "berth.port" -}}
{{- . | splitList ":" | last -}}
{{- end -}}
