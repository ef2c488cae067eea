{{/* Names: 55 characters at most, leaving room for the "-metrics" of a Service's name. */}}
{{- define "auth0-m2m-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 55 | trimSuffix "-" }}
{{- end }}

{{- define "auth0-m2m-proxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "auth0-m2m-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auth0-m2m-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "auth0-m2m-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "auth0-m2m-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The proxy's pods, as the Services, the PDB and the ServiceMonitor select them. */}}
{{- define "auth0-m2m-proxy.podSelectorLabels" -}}
{{ include "auth0-m2m-proxy.selectorLabels" . }}
app.kubernetes.io/component: proxy
{{- end }}

{{- define "auth0-m2m-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "auth0-m2m-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* config.json's text: config.json as given, or the object as JSON; "" when there is none. */}}
{{- define "auth0-m2m-proxy.configJson" -}}
{{- $json := .Values.config.json }}
{{- if kindIs "string" $json }}
{{- $json }}
{{- else if $json }}
{{- toPrettyJson $json }}
{{- end }}
{{- end }}

{{/* The Secret the chart makes when none is named, and the one the files come from. */}}
{{- define "auth0-m2m-proxy.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secret" (include "auth0-m2m-proxy.fullname" .)) }}
{{- end }}

{{/*
The secret files under /run/secrets/auth0-m2m-proxy, as YAML: file name -> its key in the
Secret. The chart's own Secret has keys of the files' names.
*/}}
{{- define "auth0-m2m-proxy.secretFiles" -}}
{{- $secrets := .Values.secrets }}
{{- $files := dict }}
{{- if $secrets.existingSecret }}
{{- $_ := set $files "mgmt-client-secret" $secrets.mgmtClientSecretKey }}
{{- with $secrets.redisUrlKey }}{{ $_ := set $files "redis-url" . }}{{ end }}
{{- with $secrets.webhookTokenKey }}{{ $_ := set $files "webhook-token" . }}{{ end }}
{{- else }}
{{- if $secrets.mgmtClientSecret }}{{ $_ := set $files "mgmt-client-secret" "mgmt-client-secret" }}{{ end }}
{{- if $secrets.redisUrl }}{{ $_ := set $files "redis-url" "redis-url" }}{{ end }}
{{- if $secrets.webhookToken }}{{ $_ := set $files "webhook-token" "webhook-token" }}{{ end }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{- define "auth0-m2m-proxy.sentinelPasswordSecret" -}}
{{- if and .Values.redis.enabled (eq .Values.redis.mode "sentinel") }}
{{- .Values.redis.sentinelPasswordSecret.name }}
{{- end }}
{{- end }}

{{/*
The AUTH0_PROXY_* variables the chart sets itself (the config file, the secret files, Redis), as
YAML: name -> value. config.env may not set them too.
*/}}
{{- define "auth0-m2m-proxy.chartEnv" -}}
{{- $env := dict }}
{{- $dir := "/run/secrets/auth0-m2m-proxy" }}
{{- if include "auth0-m2m-proxy.configJson" . }}
{{- $_ := set $env "AUTH0_PROXY_CONFIG" "/etc/auth0-m2m-proxy/config.json" }}
{{- end }}
{{- $files := include "auth0-m2m-proxy.secretFiles" . | fromYaml }}
{{- if hasKey $files "mgmt-client-secret" }}
{{- $_ := set $env "AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET_FILE" (printf "%s/mgmt-client-secret" $dir) }}
{{- end }}
{{- if hasKey $files "redis-url" }}
{{- $_ := set $env "AUTH0_PROXY_PROXY_CACHE_REDIS_URL_FILE" (printf "%s/redis-url" $dir) }}
{{- end }}
{{- if hasKey $files "webhook-token" }}
{{- $_ := set $env "AUTH0_PROXY_EVENTS_WEBHOOK_TOKEN_FILE" (printf "%s/webhook-token" $dir) }}
{{- end }}
{{- with .Values.redis }}
{{- if .enabled }}
{{- $_ := set $env "AUTH0_PROXY_PROXY_CACHE_TYPE" "redis" }}
{{- $_ := set $env "AUTH0_PROXY_PROXY_CACHE_REDIS_MODE" .mode }}
{{- with .url }}{{ $_ := set $env "AUTH0_PROXY_PROXY_CACHE_REDIS_URL" . }}{{ end }}
{{- if eq .mode "sentinel" }}
{{- $_ := set $env "AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINELS" (toJson .sentinels) }}
{{- $_ := set $env "AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINEL_SERVICE" .sentinelService }}
{{- if .sentinelPasswordSecret.name }}
{{- $_ := set $env "AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINEL_PASSWORD_FILE" (printf "%s/sentinel-password" $dir) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* What the schema cannot say: values that contradict each other, or a secret in the open. */}}
{{- define "auth0-m2m-proxy.validate" -}}
{{- $chartEnv := include "auth0-m2m-proxy.chartEnv" . | fromYaml }}
{{- range $name, $_ := .Values.config.env }}
{{- range $chartName, $_ := $chartEnv }}
{{- if eq (trimSuffix "_FILE" $name) (trimSuffix "_FILE" $chartName) }}
{{- fail (printf "config.env.%s: the chart sets %s itself (from secrets, redis or config.json); set one" $name $chartName) }}
{{- end }}
{{- end }}
{{- end }}
{{- with include "auth0-m2m-proxy.configJson" . }}
{{- $config := fromJson . }}
{{- if hasKey $config "Error" }}
{{- fail (printf "config.json is not a JSON object: %s" $config.Error) }}
{{- end }}
{{- if hasKey ($config.events | default dict) "webhook_token" }}
{{- fail "config.json: events.webhook_token would be in a ConfigMap; put it in secrets" }}
{{- end }}
{{- if hasKey ($config.auth0 | default dict) "mgmt_client_secret" }}
{{- fail "config.json: auth0.mgmt_client_secret would be in a ConfigMap; put it in secrets" }}
{{- end }}
{{- if regexMatch "://[^/]*@" (($config.proxy | default dict).cache_redis_url | default "") }}
{{- fail "config.json: proxy.cache_redis_url holds a password and would be in a ConfigMap; put it in secrets" }}
{{- end }}
{{- end }}
{{- if regexMatch "://[^/]*@" .Values.redis.url }}
{{- fail "redis.url holds a password; put the URL in secrets.redisUrl or secrets.redisUrlKey" }}
{{- end }}
{{- $urlSecret := hasKey (include "auth0-m2m-proxy.secretFiles" . | fromYaml) "redis-url" }}
{{- if and .Values.redis.url $urlSecret }}
{{- fail "the Redis URL is both in redis.url and in secrets; set one" }}
{{- end }}
{{- if and .Values.redis.enabled (ne .Values.redis.mode "sentinel") (not .Values.redis.url) (not $urlSecret) }}
{{- fail (printf "redis.mode %s needs redis.url, secrets.redisUrl or secrets.redisUrlKey" .Values.redis.mode) }}
{{- end }}
{{- end }}
