#!/usr/bin/env bash
# The local stack on fixed loopback ports, under target/services/:
#   PostgreSQL 55432 (scram password auth; demo schema in `citadel`, model request log in
#   `citadel_requests`), Prometheus 59090 (scraping every service below), three model backends
#   58101-58103 (testkit's OpenAI-compatible fixture: model-a, model-b, model-c), the Qdrant fixture
#   (REST 56333, gRPC 56334, API key) and the gateway (nginx) 58080 in front of the model backends.
#   Alertmanager 59093 (no gossip; every alert to the webhook 127.0.0.1:59095/alerts, where the
#   alert drill listens while it runs) and the Pushgateway 59091; Prometheus evaluates the
#   `citadel` rules every second and sends alerts to that Alertmanager. A fault proxy
#   (`citadel-itest proxy`, HTTP mode) 58113 in front of model-c, with its control API 58190:
#   the gateway's `/drill/` route reaches model-c only through it (the fault drills' target).
# Usage: scripts/services.sh up|down|status|env      (idempotent; `up` prints the env it exports)
# Secrets (Postgres password, Qdrant API key) live in files under target/services/; only their
# paths are printed. CITADEL_FIXTURES_BIN may name an already built citadel-itest-fixtures binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROOT="$PWD/target/services"
PG_PORT=55432 PROM_PORT=59090 GW_PORT=58080
PG_USER=citadel PG_DB=citadel PG_REQUESTS_DB=citadel_requests
MODEL_PORTS=(58101 58102 58103) MODEL_IDS=(model-a model-b model-c)
MODELS="llama-3-8b,mistral-7b,text-embedding-small"
QDRANT_HTTP_PORT=56333 QDRANT_GRPC_PORT=56334
AM_PORT=59093 PUSHGW_PORT=59091 WEBHOOK_PORT=59095
FAULT_PROXY_PORT=58113 FAULT_CONTROL_PORT=58190

# The stack's fixed ports lie in Linux's ephemeral range (32768-60999): a busy machine (load
# tests open thousands of client connections) can hand one of them to an outgoing connection,
# and the service then cannot bind ("address already in use"). As root, reserve them so the
# kernel never picks them as ephemeral ports (best effort; explicit binds are unaffected).
reserve_ports() {
  local file=/proc/sys/net/ipv4/ip_local_reserved_ports
  [ "$(id -u)" -eq 0 ] && [ -w "$file" ] || return 0
  local want="$PG_PORT,$QDRANT_HTTP_PORT-$QDRANT_GRPC_PORT,$GW_PORT,${MODEL_PORTS[0]}-${MODEL_PORTS[2]}"
  want="$want,$FAULT_PROXY_PORT,$FAULT_CONTROL_PORT,$PUSHGW_PORT-$WEBHOOK_PORT"
  local have; have=$(cat "$file")
  echo "${have:+$have,}$want" > "$file" 2>/dev/null || true
}

pid_alive() { [ -f "$1" ] && kill -0 "$(head -1 "$1")" 2>/dev/null; }

wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "$what did not become ready within ${secs}s" >&2; return 1; fi
    sleep 0.2
  done
}

http_ok() { # url
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  head -1 <&3 | grep -q ' 200 '
  local rc=$?; exec 3<&- 3>&-; return $rc
}

http_post_ok() { # port path: POST with an empty body, succeeds on a 200
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'POST %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n' "$2" >&3
  head -1 <&3 | grep -q ' 200 '
  local rc=$?; exec 3<&- 3>&-; return $rc
}

# Writes stdin to file $1; when it changed and the service on port $2 runs (pid file $3), asks
# it to reload its config (POST /-/reload), so `up` on a running stack picks up a new config.
write_config() { # file port pidfile
  local new; new=$(cat)
  if [ -f "$1" ] && [ "$(cat "$1")" = "$new" ]; then return 0; fi
  printf '%s\n' "$new" > "$1"
  if pid_alive "$3"; then
    http_post_ok "$2" /-/reload || { echo "reloading $1 on 127.0.0.1:$2 failed" >&2; return 1; }
  fi
}

port_free() { # port: fails, naming the port, when something already listens there
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port 127.0.0.1:$1 is already in use by a process this stack did not start" \
      "(another checkout's stack? stop it with its scripts/services.sh down)" >&2
    return 1
  fi
}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

random_secret() { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-24}"; }

psql_citadel() { # database, psql args...
  local db=$1; shift
  PGPASSWORD="$(cat "$ROOT/postgres/password")" psql -X -h 127.0.0.1 -p $PG_PORT -U "$PG_USER" -d "$db" "$@"
}

ensure_database() { # name
  psql_citadel postgres -tAq -c "SELECT 1 FROM pg_database WHERE datname='$1'" | grep -q 1 \
    || psql_citadel postgres -q -c "CREATE DATABASE $1" >/dev/null
}

pg_up() {
  local dir="$ROOT/postgres" data="$ROOT/postgres/data"
  if pid_alive "$data/postmaster.pid"; then return 0; fi
  port_free $PG_PORT
  mkdir -p "$dir"
  if [ ! -f "$dir/password" ]; then
    random_secret 20 > "$dir/password"
  fi
  chmod 0755 "$ROOT" "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$dir"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    local pwfile="$dir/pwfile"
    cp "$dir/password" "$pwfile"; [ "$(id -u)" -eq 0 ] && chown postgres "$pwfile"
    as_pg "$(pg_bin initdb)" -D "$data" -U "$PG_USER" --auth=scram-sha-256 --pwfile="$pwfile" \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    rm -f "$pwfile"
  fi
  mkdir -p "$dir/sock"; [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir/sock"
  as_pg "$(pg_bin pg_ctl)" -D "$data" -l "$dir/postgres.log" -w -t 30 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir/sock" start >/dev/null \
    || { tail -20 "$dir/postgres.log" >&2; return 1; }
  ensure_database "$PG_DB"
  ensure_database "$PG_REQUESTS_DB"
  # The demo schema the database tester validates (idempotent, one transaction).
  psql_citadel "$PG_DB" -q -v ON_ERROR_STOP=1 -1 -f config/database/demo_schema.sql >/dev/null
}

fixtures_bin() {
  if [ -n "${CITADEL_FIXTURES_BIN:-}" ]; then echo "$CITADEL_FIXTURES_BIN"; return 0; fi
  cargo build --quiet -p citadel-itest-testkit --features fixtures-bin --bin citadel-itest-fixtures >&2
  echo "$PWD/target/debug/citadel-itest-fixtures"
}

citadel_bin() {
  if [ -n "${CITADEL_BIN:-}" ]; then echo "$CITADEL_BIN"; return 0; fi
  cargo build --quiet -p citadel-itest --bin citadel-itest >&2
  echo "$PWD/target/debug/citadel-itest"
}

# The fault proxy between the gateway's /drill/ route and model-c (HTTP mode, so HTTP and SSE
# faults apply), with its REST control API; no fault is active until a drill adds one.
fault_proxy_up() {
  local dir="$ROOT/fault-proxy" bin
  mkdir -p "$dir"
  if pid_alive "$dir/pid"; then return 0; fi
  port_free $FAULT_PROXY_PORT; port_free $FAULT_CONTROL_PORT
  bin=$(citadel_bin)
  nohup "$bin" proxy --listen "127.0.0.1:$FAULT_PROXY_PORT" --upstream "127.0.0.1:${MODEL_PORTS[2]}" \
    --mode http --control "127.0.0.1:$FAULT_CONTROL_PORT" >"$dir/proxy.log" 2>&1 &
  echo $! > "$dir/pid"
  wait_for "fault proxy control on 127.0.0.1:$FAULT_CONTROL_PORT" 30 http_ok $FAULT_CONTROL_PORT /faults \
    || { tail -20 "$dir/proxy.log" >&2; return 1; }
}

models_up() {
  local dir="$ROOT/models" bin i port id
  mkdir -p "$dir"
  # The request log's URL carries the password: it goes to a file, never to a command line.
  ( umask 077
    printf 'postgres://%s:%s@127.0.0.1:%s/%s\n' "$PG_USER" "$(cat "$ROOT/postgres/password")" \
      "$PG_PORT" "$PG_REQUESTS_DB" > "$dir/database_url" )
  bin=$(fixtures_bin)
  for i in 0 1 2; do
    port=${MODEL_PORTS[$i]} id=${MODEL_IDS[$i]}
    pid_alive "$dir/$id.pid" && continue
    port_free "$port"
    nohup "$bin" models --port "$port" --backend-id "$id" --models "$MODELS" \
      --ttft 20ms --itl 2ms --seed $((i + 1)) --database-url "file:$dir/database_url" \
      >"$dir/$id.log" 2>&1 &
    echo $! > "$dir/$id.pid"
  done
  for i in 0 1 2; do
    wait_for "model backend ${MODEL_IDS[$i]} on 127.0.0.1:${MODEL_PORTS[$i]}" 15 http_ok "${MODEL_PORTS[$i]}" /health \
      || { tail -20 "$dir/${MODEL_IDS[$i]}.log" >&2; return 1; }
  done
}

qdrant_up() {
  local dir="$ROOT/qdrant" bin
  if pid_alive "$dir/pid"; then return 0; fi
  port_free $QDRANT_HTTP_PORT; port_free $QDRANT_GRPC_PORT
  mkdir -p "$dir"
  [ -f "$dir/api_key" ] || ( umask 077; random_secret 32 > "$dir/api_key" )
  bin=$(fixtures_bin)
  nohup "$bin" qdrant --http-port $QDRANT_HTTP_PORT --grpc-port $QDRANT_GRPC_PORT \
    --api-key "file:$dir/api_key" >"$dir/qdrant.log" 2>&1 &
  echo $! > "$dir/pid"
  wait_for "qdrant fixture on 127.0.0.1:$QDRANT_HTTP_PORT" 15 http_ok $QDRANT_HTTP_PORT /readyz \
    || { tail -20 "$dir/qdrant.log" >&2; return 1; }
}

alertmanager_up() {
  local dir="$ROOT/alertmanager"
  mkdir -p "$dir/data"
  # Everything goes to one webhook; nothing listens there unless the alert drill runs (then
  # Alertmanager retries and logs the refused connection, which is harmless).
  write_config "$dir/alertmanager.yml" $AM_PORT "$dir/pid" <<YAML
route:
  receiver: webhook
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: webhook
    webhook_configs:
      - url: 'http://127.0.0.1:$WEBHOOK_PORT/alerts'
        send_resolved: true
YAML
  if pid_alive "$dir/pid"; then return 0; fi
  port_free $AM_PORT
  nohup prometheus-alertmanager --config.file="$dir/alertmanager.yml" --storage.path="$dir/data" \
    --web.listen-address="127.0.0.1:$AM_PORT" --web.external-url="http://127.0.0.1:$AM_PORT" \
    --cluster.listen-address= >"$dir/alertmanager.log" 2>&1 &
  echo $! > "$dir/pid"
  wait_for "alertmanager on 127.0.0.1:$AM_PORT" 30 http_ok $AM_PORT /-/ready \
    || { tail -20 "$dir/alertmanager.log" >&2; return 1; }
}

pushgateway_up() {
  local dir="$ROOT/pushgateway"
  if pid_alive "$dir/pid"; then return 0; fi
  port_free $PUSHGW_PORT
  mkdir -p "$dir"
  # Pushes are kept in memory (an empty persistence file; Debian's default is under /var/lib).
  nohup prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSHGW_PORT" --persistence.file= \
    >"$dir/pushgateway.log" 2>&1 &
  echo $! > "$dir/pid"
  wait_for "pushgateway on 127.0.0.1:$PUSHGW_PORT" 30 http_ok $PUSHGW_PORT /-/ready \
    || { tail -20 "$dir/pushgateway.log" >&2; return 1; }
}

prom_up() {
  local dir="$ROOT/prometheus"
  mkdir -p "$dir/data" "$dir/rules"
  # Alerting rules for the alert drill and the model backends, and one recording rule.
  write_config "$dir/rules/citadel.yml" $PROM_PORT "$dir/pid" <<'YAML'
groups:
  - name: citadel
    rules:
      - alert: ModelBackendDown
        expr: up{job="models"} == 0
        for: 30s
        labels:
          severity: critical
        annotations:
          summary: 'model backend {{ $labels.instance }} is down'
      - alert: CitadelItestDrill
        expr: citadel_itest_drill_condition > 0
        for: 2s
        labels:
          severity: none
        annotations:
          summary: 'alert drill {{ $labels.drill }} (pushed by citadel-itest)'
      - alert: Watchdog
        expr: vector(1)
        labels:
          severity: none
        annotations:
          summary: 'always firing: proves the alerting pipeline works end to end'
  - name: citadel_recording
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
YAML
  write_config "$dir/prometheus.yml" $PROM_PORT "$dir/pid" <<YAML
global:
  scrape_interval: 5s
  evaluation_interval: 1s
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$AM_PORT']
rule_files:
  - $dir/rules/citadel.yml
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:$PROM_PORT']
  - job_name: models
    static_configs:
      - targets: ['127.0.0.1:${MODEL_PORTS[0]}', '127.0.0.1:${MODEL_PORTS[1]}', '127.0.0.1:${MODEL_PORTS[2]}']
  - job_name: qdrant
    authorization:
      type: Bearer
      credentials_file: $ROOT/qdrant/api_key
    static_configs:
      - targets: ['127.0.0.1:$QDRANT_HTTP_PORT']
  - job_name: alertmanager
    static_configs:
      - targets: ['127.0.0.1:$AM_PORT']
  - job_name: pushgateway
    honor_labels: true
    scrape_interval: 1s
    static_configs:
      - targets: ['127.0.0.1:$PUSHGW_PORT']
YAML
  if pid_alive "$dir/pid"; then return 0; fi
  port_free $PROM_PORT
  nohup prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --web.enable-lifecycle \
    >"$dir/prometheus.log" 2>&1 &
  echo $! > "$dir/pid"
  wait_for "prometheus on 127.0.0.1:$PROM_PORT" 30 http_ok $PROM_PORT /-/ready \
    || { tail -20 "$dir/prometheus.log" >&2; return 1; }
}

gw_up() {
  local dir="$ROOT/gateway"
  if pid_alive "$dir/nginx.pid"; then return 0; fi
  port_free $GW_PORT
  mkdir -p "$dir/logs" "$dir/tmp"
  local user_line=""; [ "$(id -u)" -eq 0 ] && user_line="user root;"
  cat > "$dir/nginx.conf" <<CONF
$user_line
worker_processes 1;
daemon on;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log $dir/logs/access.log;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  upstream models {
    server 127.0.0.1:${MODEL_PORTS[0]} max_fails=1 fail_timeout=5s;
    server 127.0.0.1:${MODEL_PORTS[1]} max_fails=1 fail_timeout=5s;
    server 127.0.0.1:${MODEL_PORTS[2]} max_fails=1 fail_timeout=5s;
    keepalive 16;
  }
  # model-c through the fault proxy, listed twice so one failed attempt is retried once.
  upstream drill {
    server 127.0.0.1:$FAULT_PROXY_PORT max_fails=0;
    server 127.0.0.1:$FAULT_PROXY_PORT max_fails=0;
    keepalive 4;
  }
  server {
    listen 127.0.0.1:$GW_PORT;
    # Like Citadel's gateway, bodies over 1 MiB get an OpenAI-format 413, not nginx's HTML page.
    client_max_body_size 1m;
    error_page 413 = @openai_413;
    location @openai_413 { default_type application/json; return 413 '{"error":{"message":"Request body too large.","type":"invalid_request_error","param":null,"code":"request_too_large"}}'; }
    location = /health { default_type application/json; return 200 '{"status":"ok"}'; }
    location / {
      proxy_pass http://models;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 60s;
      proxy_connect_timeout 2s;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 3;
    }
    # The fault drills' route (config/local.yaml, section faults): a 502 is retried once, the backend
    # has 2 s to answer (504 after), and a failing backend gets an OpenAI-format 503 with
    # Retry-After instead of nginx's HTML page.
    location /drill/ {
      proxy_pass http://drill/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 2s;
      proxy_connect_timeout 2s;
      proxy_next_upstream error http_502;
      proxy_next_upstream_tries 2;
      proxy_intercept_errors on;
      error_page 502 503 = @drill_fallback;
    }
    location @drill_fallback {
      default_type application/json;
      add_header Retry-After 5 always;
      return 503 '{"error":{"message":"The model backend is unavailable; try again shortly.","type":"server_error","param":null,"code":"backend_unavailable"}}';
    }
  }
}
CONF
  local nginx_bin; nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
    || { tail -20 "$dir/logs/error.log" >&2; return 1; }
  wait_for "gateway on 127.0.0.1:$GW_PORT" 15 http_ok $GW_PORT /health
}

# Prometheus has scraped every active target once and evaluated its recording rule: until then
# its API answers "health": "unknown" and empty queries, which checks would read as failures.
prom_http() { # path: the body of GET path on Prometheus
  exec 4<>"/dev/tcp/127.0.0.1/$PROM_PORT" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$1" >&4
  timeout 2 cat <&4; local rc=$?; exec 4<&- 4>&-; return $rc
}
prom_scraped_all() {
  local body
  body=$(prom_http '/api/v1/targets?state=active') || return 1
  grep -q '"status":"success"' <<<"$body" && ! grep -q '"health":"unknown"' <<<"$body" || return 1
  body=$(prom_http '/api/v1/query?query=job:up:sum') || return 1
  grep -q '"result":\[{' <<<"$body"
}

print_env() {
  cat <<ENV
export CITADEL_PG_HOST=127.0.0.1
export CITADEL_PG_PORT=$PG_PORT
export CITADEL_PG_USER=$PG_USER
export CITADEL_PG_DATABASE=$PG_DB
export CITADEL_PG_PASSWORD_FILE=$ROOT/postgres/password
export CITADEL_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT
export CITADEL_ALERTMANAGER_URL=http://127.0.0.1:$AM_PORT
export CITADEL_PUSHGATEWAY_URL=http://127.0.0.1:$PUSHGW_PORT
export CITADEL_FAULT_PROXY_CONTROL_URL=http://127.0.0.1:$FAULT_CONTROL_PORT
export CITADEL_ALERT_WEBHOOK_URL=http://127.0.0.1:$WEBHOOK_PORT/alerts
export CITADEL_GATEWAY_URL=http://127.0.0.1:$GW_PORT
export CITADEL_MODEL_URLS=http://127.0.0.1:${MODEL_PORTS[0]},http://127.0.0.1:${MODEL_PORTS[1]},http://127.0.0.1:${MODEL_PORTS[2]}
export CITADEL_REQUESTS_DATABASE=$PG_REQUESTS_DB
export CITADEL_QDRANT_URL=http://127.0.0.1:$QDRANT_HTTP_PORT
export CITADEL_QDRANT_GRPC_URL=http://127.0.0.1:$QDRANT_GRPC_PORT
export CITADEL_QDRANT_API_KEY_FILE=$ROOT/qdrant/api_key
ENV
}

stop_pidfile() { # pidfile: TERM, wait up to 10s, then KILL
  pid_alive "$1" || return 0
  local pid; pid=$(head -1 "$1")
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
  rm -f "$1"
}

down() {
  local data="$ROOT/postgres/data"
  if pid_alive "$data/postmaster.pid"; then as_pg "$(pg_bin pg_ctl)" -D "$data" -m fast -w stop >/dev/null || true; fi
  stop_pidfile "$ROOT/prometheus/pid"
  stop_pidfile "$ROOT/alertmanager/pid"
  stop_pidfile "$ROOT/pushgateway/pid"
  stop_pidfile "$ROOT/gateway/nginx.pid"
  stop_pidfile "$ROOT/fault-proxy/pid"
  local id
  for id in "${MODEL_IDS[@]}"; do stop_pidfile "$ROOT/models/$id.pid"; done
  stop_pidfile "$ROOT/qdrant/pid"
}

status() {
  local rc=0
  pid_alive "$ROOT/postgres/data/postmaster.pid" && echo "postgres   up   127.0.0.1:$PG_PORT" || { echo "postgres   down"; rc=1; }
  pid_alive "$ROOT/prometheus/pid" && echo "prometheus up   127.0.0.1:$PROM_PORT" || { echo "prometheus down"; rc=1; }
  pid_alive "$ROOT/alertmanager/pid" && echo "alertmanager up 127.0.0.1:$AM_PORT (webhook 127.0.0.1:$WEBHOOK_PORT/alerts)" || { echo "alertmanager down"; rc=1; }
  pid_alive "$ROOT/pushgateway/pid" && echo "pushgateway up  127.0.0.1:$PUSHGW_PORT" || { echo "pushgateway down"; rc=1; }
  pid_alive "$ROOT/gateway/nginx.pid" && echo "gateway    up   127.0.0.1:$GW_PORT" || { echo "gateway    down"; rc=1; }
  local i
  for i in 0 1 2; do
    pid_alive "$ROOT/models/${MODEL_IDS[$i]}.pid" && echo "${MODEL_IDS[$i]}    up   127.0.0.1:${MODEL_PORTS[$i]}" \
      || { echo "${MODEL_IDS[$i]}    down"; rc=1; }
  done
  pid_alive "$ROOT/fault-proxy/pid" && echo "fault-proxy up  127.0.0.1:$FAULT_PROXY_PORT -> model-c (control 127.0.0.1:$FAULT_CONTROL_PORT)" \
    || { echo "fault-proxy down"; rc=1; }
  pid_alive "$ROOT/qdrant/pid" && echo "qdrant     up   127.0.0.1:$QDRANT_HTTP_PORT (REST) 127.0.0.1:$QDRANT_GRPC_PORT (gRPC)" \
    || { echo "qdrant     down"; rc=1; }
  return $rc
}

case "${1:-}" in
  up)
    ensure_packages
    mkdir -p "$ROOT"
    reserve_ports
    pg_up; models_up; fault_proxy_up; qdrant_up; alertmanager_up; pushgateway_up; prom_up; gw_up
    wait_for "prometheus's first scrape of every target" 30 prom_scraped_all
    status >&2
    print_env ;;
  down) down; status >&2 || true ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
