{{/* vim: set filetype=mustache: */}}

{{- define "grantflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: the release name when it already contains the chart name,
else "<release>-<chart>". Component suffixes (-extauthz, -operator, -redis) follow, so it is
kept at 40 characters to leave room for them within the 63 of a DNS label.
*/}}
{{- define "grantflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "grantflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "grantflow.extauthz.fullname" -}}
{{- printf "%s-extauthz" (include "grantflow.fullname" .) }}
{{- end }}

{{- define "grantflow.operator.fullname" -}}
{{- printf "%s-operator" (include "grantflow.fullname" .) }}
{{- end }}

{{- define "grantflow.redis.fullname" -}}
{{- printf "%s-redis" (include "grantflow.fullname" .) }}
{{- end }}

{{/* Labels of every resource; call with (dict "ctx" $ "component" "extauthz"). */}}
{{- define "grantflow.labels" -}}
helm.sh/chart: {{ include "grantflow.chart" .ctx }}
{{ include "grantflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: grantflow
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "extauthz"). */}}
{{- define "grantflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grantflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference; call with (dict "image" .Values.x.image "ctx" $). */}}
{{- define "grantflow.image" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion | toString }}
{{- $repo := .image.repository }}
{{- if .image.registry }}{{ $repo = printf "%s/%s" .image.registry .image.repository }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{- define "grantflow.extauthz.serviceAccountName" -}}
{{- if .Values.extauthz.serviceAccount.create }}
{{- default (include "grantflow.extauthz.fullname" .) .Values.extauthz.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.extauthz.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "grantflow.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "grantflow.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "grantflow.operator.leaseName" -}}
{{- default (include "grantflow.operator.fullname" .) .Values.operator.leaseName }}
{{- end }}

{{- define "grantflow.webhook.secretName" -}}
{{- printf "%s-webhook-tls" (include "grantflow.fullname" .) }}
{{- end }}

{{/* The in-cluster DNS name of the in-chart Redis Service. */}}
{{- define "grantflow.redis.host" -}}
{{- printf "%s.%s.svc" (include "grantflow.redis.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "grantflow.redis.internal.secretName" -}}
{{- default (include "grantflow.redis.fullname" .) .Values.redis.internal.existingSecret }}
{{- end }}

{{/*
Where GRANTFLOW_REDIS_URL comes from: a dict {name, key} of a Secret, or nothing when the
URLs are plain values (external.urls) or the store is memory.
*/}}
{{- define "grantflow.redis.urlSecret" -}}
{{- if eq .Values.store.type "redis" }}
{{- if eq .Values.redis.mode "internal" }}
{{- dict "name" (include "grantflow.redis.internal.secretName" .) "key" "redis-url" | toJson }}
{{- else if .Values.redis.external.existingSecret }}
{{- dict "name" .Values.redis.external.existingSecret "key" .Values.redis.external.existingSecretKey | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The Secret with the CA certificate(s) of a TLS Redis (redis.external.tls.caSecret), or
nothing. Mounted at the directory of "grantflow.redis.caFile" in extauthz and the operator.
*/}}
{{- define "grantflow.redis.caSecret" -}}
{{- if and (eq .Values.store.type "redis") (eq .Values.redis.mode "external") }}
{{- .Values.redis.external.tls.caSecret }}
{{- end }}
{{- end }}

{{/*
Where the Redis CA certificate is mounted (GRANTFLOW_REDIS_CA_FILE). In extauthz this is
inside the ConfigMap's mount; the kubelet makes the mount point (Kubernetes 1.10+).
*/}}
{{- define "grantflow.redis.caDir" -}}
/etc/grantflow/redis-ca
{{- end }}

{{- define "grantflow.redis.caFile" -}}
{{- printf "%s/ca.crt" (include "grantflow.redis.caDir" .) }}
{{- end }}

{{/* The Redis CA: the container's volumeMounts entry; call with the root context. */}}
{{- define "grantflow.redis.caVolumeMount" -}}
- name: redis-ca
  mountPath: {{ include "grantflow.redis.caDir" . }}
  readOnly: true
{{- end }}

{{/* The Redis CA: the pod's volumes entry (only the CA key of the Secret). */}}
{{- define "grantflow.redis.caVolume" -}}
- name: redis-ca
  secret:
    secretName: {{ include "grantflow.redis.caSecret" . }}
    items:
      - {key: {{ .Values.redis.external.tls.caSecretKey | quote }}, path: ca.crt}
{{- end }}

{{/* true when the store is Redis Cluster. */}}
{{- define "grantflow.redis.cluster" -}}
{{- and (eq .Values.store.type "redis") (eq .Values.redis.mode "external") .Values.redis.external.cluster }}
{{- end }}

{{/*
The extauthz configuration file: the user's `config` (null keys left out) plus what the chart
decides (listen addresses, store, plain Redis URLs). Keys are those of extauthz's Options.
*/}}
{{- define "grantflow.extauthz.config" -}}
{{- $config := dict }}
{{- range $key, $value := .Values.config }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $config $key $value }}
{{- end }}
{{- end }}
{{- if not (or (hasKey $config "jwks_url") (hasKey $config "oidc_discovery_url")) }}
{{- $_ := set $config "oidc_discovery_url" "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration" }}
{{- end }}
{{- $listen := .Values.extauthz.listenAddress }}
{{- if contains ":" $listen }}{{ $listen = printf "[%s]" $listen }}{{ end }}
{{- $_ := set $config "grpc_addr" (printf "%s:%d" $listen (int .Values.extauthz.ports.grpc)) }}
{{- $_ := set $config "admin_addr" (printf "%s:%d" $listen (int .Values.extauthz.ports.admin)) }}
{{- $_ := set $config "store" .Values.store.type }}
{{- if eq .Values.store.type "embedded" }}
{{- $_ := set $config "data_dir" (include "grantflow.extauthz.dataDir" .) }}
{{- end }}
{{- if eq .Values.store.type "redis" }}
{{- if and (eq .Values.redis.mode "external") (not .Values.redis.external.existingSecret) }}
{{- $_ := set $config "redis_url" .Values.redis.external.urls }}
{{- end }}
{{- $_ := set $config "redis_cluster" (eq (include "grantflow.redis.cluster" .) "true") }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
A probe: the user's settings, plus the chart's handler when they name none.
Call with (dict "probe" .Values.x.readinessProbe "handler" (dict "httpGet" ...)).
*/}}
{{- define "grantflow.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if not (or $probe.grpc $probe.httpGet $probe.tcpSocket $probe.exec) }}
{{- $probe = merge $probe .handler }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
topologySpreadConstraints with the component's labelSelector and matchLabelKeys added where
missing. Call with (dict "constraints" [...] "ctx" $ "component" "extauthz").
*/}}
{{- define "grantflow.topologySpread" -}}
{{- $out := list }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not $c.labelSelector }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "grantflow.selectorLabels" (dict "ctx" $.ctx "component" $.component) | fromYaml)) }}
{{- end }}
{{- if not (hasKey $c "matchLabelKeys") }}
{{- $_ := set $c "matchLabelKeys" (list "pod-template-hash") }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
Checks across values that the schema cannot express clearly. Rendered (as nothing) by
templates/validate.yaml, so every install and `helm template` runs them.
*/}}
{{- define "grantflow.validate" -}}
{{- $v := .Values }}
{{- $audiences := $v.config.audiences | default list }}
{{- if not $audiences }}
{{- fail "config.audiences is required: the audience(s) of your API's access tokens, e.g. --set 'config.audiences={api://contoso-admin-portal}'" }}
{{- end }}
{{- $tenants := $v.config.allowed_tenants | default list }}
{{- if and (not $tenants) (not $v.allowAllTenants) }}
{{- fail "config.allowed_tenants is required: Entra ID signs every tenant's tokens with the same keys, so without it a token of any Entra tenant is accepted. List your tenant ids, e.g. --set 'config.allowed_tenants={72f988bf-86f1-41af-91ab-2d7cd011db47}', or set allowAllTenants=true to accept every tenant on purpose" }}
{{- end }}
{{- if and $tenants $v.allowAllTenants }}
{{- fail "set either config.allowed_tenants or allowAllTenants=true, not both" }}
{{- end }}
{{- if and $v.config.jwks_url $v.config.oidc_discovery_url }}
{{- fail "set either config.jwks_url or config.oidc_discovery_url, not both" }}
{{- end }}
{{- if or (eq $v.store.type "memory") (eq $v.store.type "embedded") }}
{{- $t := $v.store.type }}
{{- if gt (int $v.extauthz.replicaCount) 1 }}
{{- fail (printf "store.type %s keeps sessions inside one process: extauthz.replicaCount must be 1 (is %d). Use store.type redis for more replicas." $t (int $v.extauthz.replicaCount)) }}
{{- end }}
{{- if $v.extauthz.autoscaling.enabled }}
{{- fail (printf "store.type %s keeps sessions inside one process: extauthz.autoscaling.enabled needs store.type redis" $t) }}
{{- end }}
{{- if $v.operator.enabled }}
{{- fail (printf "store.type %s is invisible to the operator (another process): set operator.enabled=false, or use store.type redis" $t) }}
{{- end }}
{{- end }}
{{- if and (eq $v.store.type "redis") (eq $v.redis.mode "external") }}
{{- if not (or $v.redis.external.urls $v.redis.external.existingSecret) }}
{{- fail "redis.mode external needs redis.external.urls or redis.external.existingSecret" }}
{{- end }}
{{- range $v.redis.external.urls }}
{{- if regexMatch "^rediss?://[^/]*@" . }}
{{- fail "redis.external.urls must not carry credentials (they would be stored in a ConfigMap): put the URL in a Secret and set redis.external.existingSecret" }}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.redis.external.tls.caSecret }}
{{- if ne $v.store.type "redis" }}
{{- fail (printf "redis.external.tls.caSecret is the CA of a TLS Redis, but store.type %s uses no Redis: leave caSecret empty" $v.store.type) }}
{{- end }}
{{- if eq $v.redis.mode "internal" }}
{{- fail "redis.external.tls.caSecret is for an external Redis over TLS: the in-chart Redis (redis.mode internal) has no TLS. Set redis.mode=external with rediss:// URLs, or leave caSecret empty" }}
{{- end }}
{{- /* With existingSecret the URLs are out of sight; the binaries refuse a CA with redis:// at start. */}}
{{- if not $v.redis.external.existingSecret }}
{{- range $v.redis.external.urls }}
{{- if not (hasPrefix "rediss://" .) }}
{{- fail (printf "redis.external.tls.caSecret needs rediss:// (TLS) URLs, but redis.external.urls has %s: the CA certificate only verifies TLS connections. Use rediss://, or leave caSecret empty" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.extauthz.autoscaling.enabled }}
{{- if gt (int $v.extauthz.autoscaling.minReplicas) (int $v.extauthz.autoscaling.maxReplicas) }}
{{- fail "extauthz.autoscaling.minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- end }}
{{- range $name, $pdb := dict "extauthz" $v.extauthz.podDisruptionBudget "operator" $v.operator.podDisruptionBudget }}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.maxUnavailable)) (not (kindIs "invalid" $pdb.minAvailable)) }}
{{- fail (printf "%s.podDisruptionBudget: set maxUnavailable or minAvailable, not both" $name) }}
{{- end }}
{{- end }}
{{- if and $v.istio.enabled (not $v.istio.authorizationPolicies) }}
{{- fail "istio.enabled renders istio.authorizationPolicies, which is empty: list the workloads to protect" }}
{{- end }}
{{- range $v.istio.authorizationPolicies }}
{{- if and (not .selector) (not .targetRefs) (eq (.namespace | default $.Release.Namespace) $.Release.Namespace) }}
{{- fail (printf "istio.authorizationPolicies %s: without selector or targetRefs it would cover extauthz itself (namespace %s), whose own checks would then loop; select the workloads to protect" .name $.Release.Namespace) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The webhook Service's DNS names (the serving certificate's subject alternative names). */}}
{{- define "grantflow.webhook.dnsNames" -}}
{{- $svc := include "grantflow.operator.fullname" . }}
{{- list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson }}
{{- end }}

{{/*
The webhook's CA and serving certificate when the chart makes them (no cert-manager): those
of the installed release when its Secret has them (so an upgrade keeps them), else new ones.
YAML {caCert, tlsCert, tlsKey}.
*/}}
{{- define "grantflow.webhook.certs" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "grantflow.webhook.secretName" .) }}
{{- if and $secret $secret.data (index $secret.data "ca.crt") (index $secret.data "tls.crt") (index $secret.data "tls.key") }}
caCert: {{ index $secret.data "ca.crt" | b64dec | quote }}
tlsCert: {{ index $secret.data "tls.crt" | b64dec | quote }}
tlsKey: {{ index $secret.data "tls.key" | b64dec | quote }}
{{- else }}
{{- $days := int .Values.operator.webhook.certValidityDays }}
{{- $ca := genCA (printf "%s-webhook-ca" (include "grantflow.fullname" .)) $days }}
{{- $dnsNames := include "grantflow.webhook.dnsNames" . | fromJsonArray }}
{{- $cert := genSignedCert (first $dnsNames) nil $dnsNames $days $ca }}
caCert: {{ $ca.Cert | quote }}
tlsCert: {{ $cert.Cert | quote }}
tlsKey: {{ $cert.Key | quote }}
{{- end }}
{{- end }}

{{/* The embedded store's data folder inside the extauthz container (its volume's mount). */}}
{{- define "grantflow.extauthz.dataDir" -}}
/var/lib/grantflow
{{- end }}

{{/* The PersistentVolumeClaim of the embedded store. */}}
{{- define "grantflow.extauthz.dataClaim" -}}
{{- .Values.store.embedded.persistence.existingClaim | default (printf "%s-data" (include "grantflow.extauthz.fullname" .)) }}
{{- end }}

{{/*
An alert's `for` and labels (severity, then prometheusRule.alertLabels).
Call with (dict "alert" <prometheusRule.alerts.X> "rule" <prometheusRule>).
*/}}
{{- define "grantflow.alertMeta" -}}
for: {{ .alert.for }}
labels:
  severity: {{ .alert.severity | quote }}
  {{- with .rule.alertLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
