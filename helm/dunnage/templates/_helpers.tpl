{{/* Names: <release>-dunnage (or the release name if it already contains "dunnage"). */}}
{{- define "dunnage.fullname" -}}
{{- if contains "dunnage" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-dunnage" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dunnage.labels" -}}
app.kubernetes.io/name: dunnage
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: include "dunnage.selector" (list . "operator") */}}
{{- define "dunnage.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: dunnage
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "dunnage.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "dunnage.schedulerImage" -}}
{{- $tag := .Values.scheduler.image.tag | default (regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version) -}}
{{- printf "%s:%s" .Values.scheduler.image.repository $tag -}}
{{- end -}}

{{- define "dunnage.extenderURL" -}}
{{- printf "http://%s-extender.%s.svc:%d" (include "dunnage.fullname" .) .Release.Namespace (int .Values.extender.port) -}}
{{- end -}}

{{/* Pod-level settings shared by every component. */}}
{{- define "dunnage.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount name of one component. */}}
{{- define "dunnage.serviceAccount" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "dunnage.fullname" $root) (index . 1) -}}
{{- end -}}

{{- /* What the operator does in the namespaces it serves: read ModelServices and write their
       status and kopf's annotations; server-side apply (create + patch) and prune (delete) the
       role Deployments, Services and PodDisruptionBudgets; post Events; kopf peering. */}}
{{- define "dunnage.operatorNamespacedRules" -}}
- apiGroups: [dunnage.io]
  resources: [modelservices]
  verbs: [get, list, watch, patch]
- apiGroups: [dunnage.io]
  resources: [modelservices/status]
  verbs: [get, patch]
- apiGroups: [dunnage.io]
  resources: [modelservices/finalizers]   # owner references with blockOwnerDeletion
  verbs: [update]
# The autoscaling loop: read policies (and a learned policy's ConfigMap), report in their status.
- apiGroups: [dunnage.io]
  resources: [autoscalingpolicies]
  verbs: [get]
- apiGroups: [dunnage.io]
  resources: [autoscalingpolicies/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
