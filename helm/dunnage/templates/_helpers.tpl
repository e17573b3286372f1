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
  verbs: [patch]
- apiGroups: [dunnage.io]
  resources: [modelservices/finalizers]   # owner references with blockOwnerDeletion
  verbs: [update]
# The autoscaling loop: watch policies (and read a learned policy's ConfigMap), report in their
# status, keep each ModelService's learned state in a ConfigMap (server-side apply: create, patch).
- apiGroups: [dunnage.io]
  resources: [autoscalingpolicies]
  verbs: [list, watch]
- apiGroups: [dunnage.io]
  resources: [autoscalingpolicies/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
# ...and leave a role Deployment that a HorizontalPodAutoscaler scales to it (kopf's index of them;
# the one rule the operator starts without, and then warns that it cannot check for HPAs).
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch]
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

{{- /* Leader election of one component (list . "extender"): only the holder of the Lease
       <fullname>-<component> in the release's namespace acts; the others stand by. */}}
{{- define "dunnage.leaderElection.check" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $values := index $root.Values $component -}}
{{- $election := $values.leaderElection -}}
{{- if and (gt (int $values.replicas) 1) (not $election.enabled) -}}
{{- fail (printf "%s.replicas > 1 needs %s.leaderElection.enabled: only one replica may act at a time" $component $component) -}}
{{- end -}}
{{- if $election.enabled -}}
{{- if le (int $election.leaseDuration) (int $election.renewDeadline) -}}
{{- fail (printf "%s.leaderElection.leaseDuration must be more than renewDeadline: a leader must give up before a standby may take over" $component) -}}
{{- end -}}
{{- if le (mul 10 (int $election.renewDeadline)) (mul 12 (int $election.retryPeriod)) -}}
{{- fail (printf "%s.leaderElection.renewDeadline must be more than 1.2 x retryPeriod" $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dunnage.leaderElection.args" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $election := (index $root.Values $component).leaderElection -}}
- --leader-elect
- --leader-elect-lease={{ include "dunnage.fullname" $root }}-{{ $component }}
- --leader-elect-namespace={{ $root.Release.Namespace }}
- --leader-elect-lease-duration={{ $election.leaseDuration }}
- --leader-elect-renew-deadline={{ $election.renewDeadline }}
- --leader-elect-retry-period={{ $election.retryPeriod }}
{{- end -}}

{{- define "dunnage.leaderElection.podName" -}}
- name: POD_NAME   # the candidate's name on the Lease
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
{{- end -}}

{{- /* The Deployment strategy: with leader election a new pod starts beside the old one (it
       stands by until the old one releases the Lease on SIGTERM); without, after it. */}}
{{- define "dunnage.leaderElection.strategy" -}}
{{- $root := index . 0 -}}
{{- if (index $root.Values (index . 1)).leaderElection.enabled -}}
type: RollingUpdate
rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
{{- else -}}
type: Recreate
{{- end -}}
{{- end -}}

{{- /* Its own Lease: create (which cannot be limited to a name), get and update it; and the
       Events it posts on it. */}}
{{- define "dunnage.leaderElection.rbac" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $name := printf "%s-%s" (include "dunnage.fullname" $root) $component -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}-lease
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dunnage.labels" $root | nindent 4 }}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [create]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    resourceNames: [{{ $name }}]
    verbs: [get, update]
  - apiGroups: [""]
    resources: [events]
    verbs: [create]   # "<candidate> became leader", on the Lease
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}-lease
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dunnage.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}-lease
subjects:
  - kind: ServiceAccount
    name: {{ include "dunnage.serviceAccount" (list $root $component) }}
    namespace: {{ $root.Release.Namespace }}
{{- end -}}

{{- /* With more than one replica, a PodDisruptionBudget keeps one running through voluntary
       disruptions (node drains): a standby is only useful if it is not drained with the
       leader. (list . "extender") */}}
{{- define "dunnage.replicasBudget" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- if gt (int (index $root.Values $component).replicas) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "dunnage.fullname" $root }}-{{ $component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dunnage.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{- include "dunnage.selector" (list $root $component) | nindent 6 }}
{{- end }}
{{- end -}}
