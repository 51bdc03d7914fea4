{{/*
Names. Knative appends a revision suffix to Service names, so keep the prefix short.
*/}}
{{- define "salesmart.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "salesmart.fullname" -}}
{{- /* Knative refuses Service names that are not DNS-1035 labels: fail before the
migration hook runs, not after. fullnameOverride's own pattern already holds. */}}
{{- if and (not .Values.fullnameOverride) (not (regexMatch "^[a-z]" .Release.Name)) }}
{{- fail (printf "release name %q must start with a lowercase letter: the Knative Services' names (<release>-salesmart-<function>) must be DNS-1035 labels; or set fullnameOverride" .Release.Name) }}
{{- end }}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- /* Release names may hold dots; the Services' names (DNS-1035 labels) may not. */}}
{{- $release := .Release.Name | replace "." "-" }}
{{- if contains $name $release }}
{{- $release | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" $release $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "salesmart.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "salesmart.selectorLabels" -}}
app.kubernetes.io/name: {{ include "salesmart.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "salesmart.labels" -}}
helm.sh/chart: {{ include "salesmart.chart" . }}
{{ include "salesmart.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: salesmart
{{- end }}

{{/* An image reference: (list IMAGE-BLOCK TAG) gives repository:TAG, and @digest when the
block pins one (the tag then only documents it; the digest decides what runs). */}}
{{- define "salesmart.imageRef" -}}
{{- $image := index . 0 -}}
{{- $ref := printf "%s:%s" $image.repository (index . 1) -}}
{{- if $image.digest }}{{ $ref = printf "%s@%s" $ref $image.digest }}{{ end -}}
{{- $ref }}
{{- end }}

{{/* The tag of the serving image: image.tag, else the chart's appVersion. */}}
{{- define "salesmart.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The migration image's tag: its own, else the serving image's, so one --set image.tag
upgrades the schema and the code together. */}}
{{- define "salesmart.migrationImageTag" -}}
{{- default (include "salesmart.imageTag" .) .Values.migration.image.tag }}
{{- end }}

{{- define "salesmart.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "salesmart.fullname" .) }}
{{- end }}
{{- end }}

{{- define "salesmart.configMapName" -}}
{{- printf "%s-config" (include "salesmart.fullname" .) }}
{{- end }}

{{/* The pipeline configuration text mounted as SALESMART_CONFIG. */}}
{{- define "salesmart.pipelineConfig" -}}
{{- if .Values.pipelineConfig }}
{{- /* Broken YAML would surface only as a failed migration hook or crash-looping pods. */}}
{{- $parsed := fromYaml .Values.pipelineConfig }}
{{- if and (eq (len $parsed) 1) (hasKey $parsed "Error") (kindIs "string" (get $parsed "Error")) }}
{{- fail "pipelineConfig could not be parsed as a YAML mapping of settings" }}
{{- else if not $parsed }}
{{- fail "pipelineConfig is empty or not a YAML mapping of settings (leave it unset for the defaults)" }}
{{- end }}
{{- .Values.pipelineConfig }}
{{- else }}
{{- .Files.Get "files/pipeline_config.yaml" }}
{{- end }}
{{- end }}

{{/* Where the ConfigMap is mounted, and the file SALESMART_CONFIG names. */}}
{{- define "salesmart.configDir" -}}/etc/salesmart{{- end }}
{{- define "salesmart.configPath" -}}/etc/salesmart/pipeline_config.yaml{{- end }}
{{- define "salesmart.googleCredentialsDir" -}}/var/run/secrets/google{{- end }}
{{- define "salesmart.postgresTlsDir" -}}/var/run/secrets/postgres{{- end }}

{{/* The PostgreSQL CA certificate's mount and volume (postgresTls.caSecret; callers check it). */}}
{{- define "salesmart.postgresCaMount" -}}
- name: postgres-ca
  mountPath: {{ include "salesmart.postgresTlsDir" . }}
  readOnly: true
{{- end }}
{{- define "salesmart.postgresCaVolume" -}}
- name: postgres-ca
  secret:
    secretName: {{ .Values.postgresTls.caSecret }}
    items:
      - key: {{ .Values.postgresTls.caKey }}
        path: {{ .Values.postgresTls.caKey }}
{{- end }}

{{/* What each function needs from the outside: the PostgreSQL URL or BigQuery. */}}
{{- define "salesmart.functionNeeds" -}}
token: database
trends_bq: bigquery
trends_pg: database
dashboard: database
{{- end }}

{{/* The Knative Service name of a function: <fullname>-<function with "-" for "_">. */}}
{{- define "salesmart.serviceName" -}}
{{- $root := index . 0 -}}
{{- $function := index . 1 -}}
{{- printf "%s-%s" (include "salesmart.fullname" $root) ($function | replace "_" "-") }}
{{- end }}

{{/* One environment variable read from the salesmart Secret: (list root ENV_NAME keyField secretName). */}}
{{- define "salesmart.secretEnv" -}}
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ index . 3 }}
      key: {{ index $root.Values.secrets.keys (index . 2) }}
{{- end }}

{{/* A Kubernetes quantity (250m, 1.5, 512Mi; the schema's forms) as a plain number. */}}
{{- define "salesmart.quantity" -}}
{{- if kindIs "string" . -}}
{{- $number := regexFind "^[0-9]*[.]?[0-9]*" . -}}
{{- $factors := dict "" 1 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 -}}
{{- mulf (float64 $number) (get $factors (trimPrefix $number .)) -}}
{{- else -}}
{{- float64 . -}}
{{- end -}}
{{- end }}

{{/* Stop with a reason where a request exceeds its limit: (list "where" resources).
Kubernetes refuses such a pod only after the install, and the Service never gets Ready. */}}
{{- define "salesmart.checkResources" -}}
{{- $where := index . 0 -}}
{{- $resources := index . 1 | default dict -}}
{{- $limits := $resources.limits | default dict -}}
{{- range $resource, $request := ($resources.requests | default dict) -}}
{{- if hasKey $limits $resource -}}
{{- $limit := index $limits $resource -}}
{{- if gt (include "salesmart.quantity" $request | float64) (include "salesmart.quantity" $limit | float64) -}}
{{- fail (printf "%s.resources: requests.%s (%v) exceeds limits.%s (%v); Kubernetes refuses such a pod" $where $resource $request $resource $limit) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- /*
A function's values checked beyond what values.schema.json can say (list NAME FN VALUES):
each failure names the value and why. Renders nothing.
*/}}
{{- define "salesmart.checkFunction" -}}
{{- $name := index . 0 -}}
{{- $fn := index . 1 -}}
{{- $values := index . 2 -}}
{{- /* Variables a function's env may not set: Knative's own, and the chart's (from other
values: workers, threads, timeoutSeconds, environment, secrets, bigquery). */ -}}
{{- $knativeEnv := list "PORT" "K_SERVICE" "K_CONFIGURATION" "K_REVISION" -}}
{{- $chartEnv := list "FUNCTION_TARGET" "FUNCTION_SOURCE" "FUNCTION_SIGNATURE_TYPE" "SALESMART_ENV" "SALESMART_CONFIG" "WORKERS" "THREADS" "CLOUD_RUN_TIMEOUT_SECONDS" "SALESMART_REQUEST_DEADLINE_SECONDS" "SALESMART_JWT_SECRET" "SALESMART_PII_KEY" "SALESMART_DATABASE_URL" "SALESMART_BQ_PROJECT" "SALESMART_BQ_LOCATION" "GOOGLE_APPLICATION_CREDENTIALS" -}}
{{- range $key, $value := $fn.env -}}
{{- if and (kindIs "float64" $value) (or (ge $value 9007199254740992.0) (le $value -9007199254740992.0)) -}}
{{- fail (printf "functions.%s.env.%s: a number this large loses digits in a values file (Helm reads it as a float); quote it" $name $key) -}}
{{- end -}}
{{- if has $key $knativeEnv -}}
{{- fail (printf "functions.%s.env.%s: Knative sets this variable itself" $name $key) -}}
{{- else if eq $key "HOST" -}}
{{- fail (printf "functions.%s.env.HOST: the image listens on every address (0.0.0.0), for Knative's queue-proxy and probes; it cannot be changed" $name) -}}
{{- else if has $key $chartEnv -}}
{{- fail (printf "functions.%s.env.%s: the chart sets this variable from its own values (workers, threads, timeoutSeconds, environment, secrets, bigquery); set those instead" $name $key) -}}
{{- else if and (hasSuffix "_FILE" $key) (has (trimSuffix "_FILE" $key) (list "SALESMART_JWT_SECRET" "SALESMART_PII_KEY" "SALESMART_DATABASE_URL")) -}}
{{- fail (printf "functions.%s.env.%s: the chart sets %s from secrets (on every function that uses it), and that variable wins over the file; name the Secret in secrets instead" $name $key (trimSuffix "_FILE" $key)) -}}
{{- end -}}
{{- end -}}
{{- $as := $fn.autoscaling -}}
{{- $min := int $as.minScale -}}
{{- $max := int $as.maxScale -}}
{{- if and (gt $max 0) (gt $min $max) -}}
{{- fail (printf "functions.%s.autoscaling: minScale (%d) must not exceed maxScale (%d); maxScale 0 means unlimited" $name $min $max) -}}
{{- end -}}
{{- if and (hasKey $as "initialScale") (eq (int $as.initialScale) 0) (not $values.allowZeroInitialScale) -}}
{{- fail (printf "functions.%s.autoscaling: initialScale 0 needs the cluster's allow-zero-initial-scale (config-autoscaler) and allowZeroInitialScale: true; Knative refuses it otherwise" $name) -}}
{{- end -}}
{{- if and (gt $max 0) (hasKey $as "initialScale") (gt (int $as.initialScale) $max) -}}
{{- fail (printf "functions.%s.autoscaling: initialScale (%d) must not exceed maxScale (%d)" $name (int $as.initialScale) $max) -}}
{{- end -}}
{{- $concurrency := int $fn.containerConcurrency -}}
{{- $workers := int $fn.workers -}}
{{- if and (gt $concurrency 0) (gt $workers $concurrency) -}}
{{- fail (printf "functions.%s: workers (%d) must not exceed containerConcurrency (%d): each worker serves at least one request" $name $workers $concurrency) -}}
{{- end -}}
{{- $_ := include "salesmart.threads" (list $name $fn) -}}
{{- if and (gt $concurrency 0) (eq (toString $as.metric) "concurrency") (gt (float64 $as.target) (float64 $concurrency)) -}}
{{- fail (printf "functions.%s.autoscaling: target (%v) must not exceed containerConcurrency (%d): Knative would cap it there" $name $as.target $concurrency) -}}
{{- end -}}
{{- /* Unlimited: the autoscaler's aim stands in for the limit, below the threads as it would be. */ -}}
{{- if and (eq $concurrency 0) (eq (toString $as.metric) "concurrency") (ge (float64 $as.target) (float64 (mul $workers (int (include "salesmart.threads" (list $name $fn)))))) -}}
{{- fail (printf "functions.%s.autoscaling: target (%v) must be below workers x threads (%d) when containerConcurrency is 0 (unlimited): a pod aimed at that many requests would queue them behind its threads, and the health probes need one more" $name $as.target (mul $workers (int (include "salesmart.threads" (list $name $fn))))) -}}
{{- end -}}
{{- with $fn.probes.readiness -}}
{{- if and (not .periodSeconds) (or .timeoutSeconds .failureThreshold) -}}
{{- fail (printf "functions.%s.probes.readiness: timeoutSeconds and failureThreshold need periodSeconds of 1 or more; Knative refuses them with periodSeconds 0 (its own aggressive probing)" $name) -}}
{{- end -}}
{{- end -}}
{{- include "salesmart.checkResources" (list (printf "functions.%s" $name) $fn.resources) -}}
{{- end }}

{{- /*
gunicorn's THREADS of a function (list NAME FN): its own value, else one thread per worker
beyond its share of containerConcurrency. The kubelet's probes reach the container
directly, not through Knative's concurrency limit, and must not wait behind requests held
up by a slow warehouse (or the pod is restarted for being slow).
*/}}
{{- define "salesmart.threads" -}}
{{- $name := index . 0 -}}
{{- $fn := index . 1 -}}
{{- $concurrency := int $fn.containerConcurrency -}}
{{- $workers := int $fn.workers -}}
{{- if $fn.threads -}}
{{- $threads := int $fn.threads -}}
{{- if and (gt $concurrency 0) (le (mul $workers $threads) $concurrency) -}}
{{- fail (printf "functions.%s: workers x threads (%d) must exceed containerConcurrency (%d): the requests Knative sends take that many, and the health probes need one more" $name (mul $workers $threads) $concurrency) -}}
{{- end -}}
{{- $threads -}}
{{- else if gt $concurrency 0 -}}
{{- add1 (div (add $concurrency $workers -1) $workers) -}}
{{- else -}}
{{- fail (printf "functions.%s: containerConcurrency 0 (unlimited) needs an explicit threads value for gunicorn" $name) -}}
{{- end -}}
{{- end }}

{{/* A postgresql:// URL after its scheme and user info, as libpq reads it (the URL trimmed
first, as common.pg.parse_dsn does): the user info ends at its first "@" before any "/". */}}
{{- define "salesmart.urlAfterUserinfo" -}}
{{- $rest := regexReplaceAll "^[^:]*://" (trim .) "" -}}
{{- $authority := regexReplaceAll "/.*$" $rest "" -}}
{{- if contains "@" $authority -}}
{{- trimPrefix (printf "%s@" (regexReplaceAll "@.*$" $authority "")) $rest -}}
{{- else -}}
{{- $rest -}}
{{- end -}}
{{- end }}

{{/* A URL's query as libpq finds it: after the user info (whose password may hold "?"). */}}
{{- define "salesmart.urlQuery" -}}
{{- $after := include "salesmart.urlAfterUserinfo" . -}}
{{- if contains "?" $after }}{{ regexReplaceAll "^[^?]*[?]" $after "" }}{{ end -}}
{{- end }}

{{/* The bytes of the password in a postgresql:// URL once its %XX escapes are decoded, read
as the functions read it (libpq's parser): after the user info's first ":", and a password= in
the query replaces it. "-1": an "@" left in the host or database, which the functions refuse
(a password's "@" not written %40). */}}
{{- define "salesmart.urlPasswordBytes" -}}
{{- $url := trim . -}}
{{- $rest := regexReplaceAll "^[^:]*://" $url "" -}}
{{- $authority := regexReplaceAll "/.*$" $rest "" -}}
{{- $password := "" -}}
{{- if contains "@" $authority -}}
{{- $userinfo := regexReplaceAll "@.*$" $authority "" -}}
{{- if contains ":" $userinfo }}{{ $password = regexReplaceAll "^[^:]*:" $userinfo "" }}{{ end -}}
{{- end -}}
{{- $after := include "salesmart.urlAfterUserinfo" $url -}}
{{- $query := include "salesmart.urlQuery" $url -}}
{{- range $pair := splitList "&" $query }}
{{- if hasPrefix "password=" $pair }}{{ $password = trimPrefix "password=" $pair }}{{ end -}}
{{- end -}}
{{- if contains "@" (regexReplaceAll "[?].*$" $after "") -}}
-1
{{- else -}}
{{- sub (len $password) (mul 2 (len (regexFindAll "%[0-9A-Fa-f]{2}" $password -1))) -}}
{{- end -}}
{{- end }}

{{/* A TLS file a database URL names must be one the pods have: the system's CA store
(sslrootcert=system) or the CA certificate postgresTls mounts. The chart mounts nothing else
(no client certificate), and a function refuses to start on a file that is not there. Read
as libpq reads the query: the last of a repeated key wins, "/" may be written %2F.
(list root FIELD URL) */}}
{{- define "salesmart.checkTlsFiles" -}}
{{- $root := index . 0 -}}
{{- $field := index . 1 -}}
{{- $query := include "salesmart.urlQuery" (index . 2) -}}
{{- $mounted := "" -}}
{{- with $root.Values.postgresTls.caSecret }}
{{- $mounted = printf "%s/%s" (include "salesmart.postgresTlsDir" $root) $root.Values.postgresTls.caKey }}
{{- end }}
{{- $files := dict }}
{{- range $pair := splitList "&" $query }}
{{- $parts := splitn "=" 2 $pair }}
{{- $key := $parts._0 }}
{{- if contains "%" $key }}
{{- fail (printf "secrets.%s: write its query's parameter names without %%-escapes (%s), as the chart checks them by name" $field $key) }}
{{- end }}
{{- if and (has $key (list "sslrootcert" "sslcert" "sslkey" "sslcrl")) (contains "%" (regexReplaceAll "%2[Ff]" ($parts._1 | default "") "")) }}
{{- fail (printf "secrets.%s: write %s's file name without %%-escapes (but %%2F), as the chart checks it" $field $key) }}
{{- end }}
{{- if has $key (list "sslrootcert" "sslcert" "sslkey" "sslcrl") }}
{{- $_ := set $files $key (regexReplaceAll "%2[Ff]" ($parts._1 | default "") "/") }}
{{- end }}
{{- end }}
{{- range $key, $value := $files }}
{{- if and $value (not (and (eq $key "sslrootcert") (or (eq $value "system") (eq $value $mounted)))) }}
{{- fail (printf "secrets.%s names %s=%s, a file the pods do not have: the chart mounts only a CA certificate, at %s/KEY with postgresTls.caSecret and postgresTls.caKey (no client certificate)" $field $key $value (include "salesmart.postgresTlsDir" $root)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A chart-created Secret's database URLs, refused as the functions and the migration Job
refuse them when they start (the install would succeed and every pod fail): a TLS file the
pods do not have; outside dev a password under 32 bytes, and for the functions none at all
(the migration Job takes none: .pgpass, IAM). */}}
{{- define "salesmart.checkDatabaseUrls" -}}
{{- $secrets := .Values.secrets -}}
{{- range $field := list "databaseUrl" "migrationDatabaseUrl" }}
{{- if regexMatch "[\\x00-\\x1f\\x7f]" (trim (index $secrets $field | default "")) }}
{{- fail (printf "secrets.%s has a control character inside (a line end?): the functions refuse it" $field) }}
{{- end }}
{{- if eq (include "salesmart.urlPasswordBytes" (index $secrets $field | default "")) "-1" }}
{{- fail (printf "secrets.%s has an \"@\" in its host or database name: in the user name or password, @ : / # ? %% must be percent-encoded (%%40 %%3A %%2F %%23 %%3F %%25)" $field) }}
{{- end }}
{{- end }}
{{- with $secrets.databaseUrl }}
{{- include "salesmart.checkTlsFiles" (list $ "databaseUrl" .) }}
{{- $bytes := include "salesmart.urlPasswordBytes" . | atoi }}
{{- if lt $bytes 32 }}
{{- fail (printf "secrets.databaseUrl has %s: the functions refuse a database password under 32 bytes outside SALESMART_ENV=dev (percent-encode it in the URL)" (ternary (printf "a password of only %d bytes" $bytes) "no password" (gt $bytes 0))) }}
{{- end }}
{{- end }}
{{- with $secrets.migrationDatabaseUrl }}
{{- include "salesmart.checkTlsFiles" (list $ "migrationDatabaseUrl" .) }}
{{- $bytes := include "salesmart.urlPasswordBytes" . | atoi }}
{{- if and (gt $bytes 0) (lt $bytes 32) }}
{{- fail (printf "secrets.migrationDatabaseUrl has a password of only %d bytes: the migration Job refuses a database password under 32 bytes outside SALESMART_ENV=dev" $bytes) }}
{{- end }}
{{- end }}
{{- end }}
