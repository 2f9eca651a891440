#!/usr/bin/env bash
# Load harness: rategate (memory store, Redis store) against nginx as a plain reverse proxy to the
# same upstream, all in one run, so that every figure is a ratio within that run.
#
#   bash benches/load/run.sh                    # everything (about 10 minutes on 2 cores)
#   REPS=1 DURATION=3 SCENARIOS="allowed rejected" bash benches/load/run.sh   # a quick look
#   SCENARIOS="allowed rejected tls" TARGETS="nginx memory" bash benches/load/run.sh   # TLS and h2
#
# What it does, in order: installs wrk, nginx-light and redis-server (and h2load, from
# nghttp2-client, for the HTTP/2 scenarios) with apt-get when missing;
# builds rategate in release; starts a fast upstream (nginx answering `return 200`), redis-server,
# nginx as a plain reverse proxy (keep-alive pool to the upstream, X-Forwarded-* set, access log
# off), rategate with the memory store and rategate with the Redis store; warms each up; then, REPS
# times, drives every scenario on every target with wrk at each connection count for DURATION
# seconds (interleaved, so drift from other load on the machine hits every target alike); and
# prints medians as ratios to nginx. Last, the 1M-distinct-clients run against the memory store
# measures RSS growth for each bound in MILLION_KEYS.
#
# Only loopback addresses are used; every wrk run is bounded in time; every process started here
# is stopped on exit (by its pid).
#
# Environment (defaults in brackets):
#   DURATION [5]        seconds per measured wrk run
#   REPS [3]            repetitions (the median is reported)
#   CONNS ["8 64"]      wrk connection counts
#   WRK_THREADS [2]     wrk threads
#   SCENARIOS ["allowed rejected three clients10k million"]; add `tls` for the four TLS
#                       scenarios below (about 4 more minutes), `cluster` for the Redis Cluster
#                       row: a 1-master and a 3-master cluster (no replicas), one gateway each
#                       (route `clients`, 1 policy keyed by the client), CLUSTER_CLIENTS distinct
#                       clients at CLUSTER_CONNS connections, interleaved REPS times; reports
#                       checks per second of each, their ratio and each master's share of the
#                       script calls (FCALL or EVALSHA)
#   CLUSTER_CLIENTS [1000]  CLUSTER_CONNS [64]
#   TLS scenarios: allowed-tls, rejected-tls (HTTP/1.1 over TLS, wrk https://), allowed-h2,
#                       rejected-h2 (HTTP/2 over TLS chosen by ALPN, h2load): the paths of
#                       `allowed` and `rejected`, against nginx (`listen ... ssl http2` in the
#                       same nginx) and a second gateway with [server.tls] (memory store; and
#                       `before`'s binary when BASELINE_BIN is set), both on one self-signed
#                       certificate made with openssl in OUT; each is a ratio to nginx doing the
#                       same over the same protocol. Not run on the `redis` target (TLS costs the
#                       same whatever the store).
#   TLS_KEY [ec]        the certificate's key: ec (P-256) or rsa (2048 bits)
#   H2_STREAMS [1]      h2load -m: requests in flight per connection (1: c in flight, as wrk)
#   TARGETS ["nginx memory redis"]
#   MILLION [1000000]   distinct clients in the memory-growth run
#   MILLION_KEYS ["200000 1000000"]  max_memory_keys of the gateway in that run (one run each)
#   MILLION_TIMEOUT [240] seconds at most for one memory-growth run
#   PIN [0]             1: pin wrk to CPU 1 and every server to CPU 0 (taskset); nginx workers and
#                       tokio worker threads then both follow the one CPU the servers get
#   ACCESS_LOG [0]      1: nginx and rategate both write an access log to a file
#   PORT_BASE [18000]   ports PORT_BASE+80.. are used on 127.0.0.1
#   OUT [target/load/<timestamp>]   logs, configs, raw.csv, results.md
#   BIN [target/release/rategate]   SKIP_BUILD=1 uses it as it is
#   BASELINE_BIN [unset]  another rategate binary (say, a build of the commit before an
#                       optimization): adds the target `before`, the memory store on that binary,
#                       measured in the same run as everything else
#   BASELINE_STORE [memory]  the store of `before`: memory, or redis (the same redis-server as
#                       the `redis` target; its script calls/req, Redis commands/req and
#                       redis-server CPU/req are counted the same way, and every other target
#                       gets a "vs before" throughput ratio)
#   REDIS_STORE [unset]  more lines for the `redis` target's [store] table (say
#                       "batch_in_flight = 1"), to measure a store setting against `before`
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASELINE_STORE=${BASELINE_STORE:-memory}
REDIS_STORE=${REDIS_STORE:-}
export LOAD_DIR="$ROOT/benches/load"
DURATION=${DURATION:-5}
REPS=${REPS:-3}
CONNS=${CONNS:-"8 64"}
WRK_THREADS=${WRK_THREADS:-2}
SCENARIOS=${SCENARIOS:-"allowed rejected three clients10k million"}
# `tls` is shorthand for the four TLS scenarios.
expanded=""
for s in $SCENARIOS; do
  [ "$s" = tls ] && s="allowed-tls rejected-tls allowed-h2 rejected-h2"
  expanded="$expanded${expanded:+ }$s"
done
SCENARIOS=$expanded
TLS_KEY=${TLS_KEY:-ec}
H2_STREAMS=${H2_STREAMS:-1}
TARGETS=${TARGETS:-"nginx memory redis"}
MILLION=${MILLION:-1000000}
MILLION_KEYS=${MILLION_KEYS:-"200000 1000000"}
MILLION_TIMEOUT=${MILLION_TIMEOUT:-240}
PIN=${PIN:-0}
ACCESS_LOG=${ACCESS_LOG:-0}
PORT_BASE=${PORT_BASE:-18000}
OUT=${OUT:-$ROOT/target/load/$(date +%Y%m%d-%H%M%S)}
BIN=${BIN:-$ROOT/target/release/rategate}

P_UPSTREAM=$((PORT_BASE + 81))
P_NGINX=$((PORT_BASE + 80))
P_MEMORY=$((PORT_BASE + 90))
P_REDIS_GW=$((PORT_BASE + 91))
P_MILLION=$((PORT_BASE + 92))
P_BEFORE=$((PORT_BASE + 93))
P_NGINX_TLS=$((PORT_BASE + 84))
P_MEMORY_TLS=$((PORT_BASE + 96))
P_BEFORE_TLS=$((PORT_BASE + 97))
P_REDIS=$((PORT_BASE + 79))
P_ADMIN=$((PORT_BASE + 1090))
# Cluster nodes (their bus ports are +10000): 1 master at +60, 3 masters at +61..+63; gateways.
P_C1=$((PORT_BASE + 60))
P_C3=$((PORT_BASE + 61))
P_C1_GW=$((PORT_BASE + 94))
P_C3_GW=$((PORT_BASE + 95))
CLUSTER_CLIENTS=${CLUSTER_CLIENTS:-1000}
CLUSTER_CONNS=${CLUSTER_CONNS:-64}

mkdir -p "$OUT"
log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
has() { [[ " $1 " == *" $2 "* ]]; }
is_tls() { [[ $1 == *-tls || $1 == *-h2 ]]; }
ANY_TLS=0
ANY_H2=0
for s in $SCENARIOS; do
  is_tls "$s" && ANY_TLS=1
  [[ $s == *-h2 ]] && ANY_H2=1
done

# ---------------------------------------------------------------- tools
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x "$NGINX" ] || need+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ "$ANY_TLS" = 1 ] && ! command -v openssl >/dev/null 2>&1 && need+=(openssl)
[ "$ANY_H2" = 1 ] && ! command -v h2load >/dev/null 2>&1 && need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building rategate (release)"
  (cd "$ROOT" && cargo build --release --locked --bin rategate)
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

# ---------------------------------------------------------------- pinning
if [ "$PIN" = 1 ]; then
  SERVER_PIN=(taskset -c 0)
  WRK_PIN=(taskset -c 1)
else
  SERVER_PIN=()
  WRK_PIN=()
fi
# tokio's default worker count is the CPUs the process may run on; nginx gets as many workers.
WORKERS=$("${SERVER_PIN[@]}" nproc)

# ---------------------------------------------------------------- process bookkeeping
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port seconds pid
  local deadline=$((SECONDS + $2))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if ! kill -0 "$3" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      return 1
    fi
    sleep 0.1
  done
}

rss_kb() { # pid: VmRSS of the process and of its children (nginx workers)
  local total=0 p v
  [ -n "$1" ] || { echo 0; return; }
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

cpu_ticks() { # pid: user+system clock ticks of the process and of its children (nginx workers)
  local total=0 p v
  [ -n "$1" ] || { echo 0; return; }
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that closes the command name.
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $((PORT_BASE + 79)) $((PORT_BASE + 80)) $((PORT_BASE + 81)) $((PORT_BASE + 90)) $((PORT_BASE + 91)) \
  $((PORT_BASE + 92)) $((PORT_BASE + 93)) $((PORT_BASE + 1090)) $((PORT_BASE + 1091)) $((PORT_BASE + 1092)) $((PORT_BASE + 1093)) \
  "$P_NGINX_TLS" "$P_MEMORY_TLS" "$P_BEFORE_TLS" $((PORT_BASE + 1097)) $((PORT_BASE + 1098)); do
  port_free "$p" || { echo "port $p on 127.0.0.1 is in use (another run?); set PORT_BASE" >&2; exit 1; }
done

# ---------------------------------------------------------------- nginx: upstream and baseline
nginx_common() { # dir
  cat <<EOF
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
EOF
}
nginx_http_common() { # dir
  local access="access_log off;"
  [ "$ACCESS_LOG" = 1 ] && access="access_log $1/access.log;"
  cat <<EOF
  $access
  client_body_temp_path $1/tmp-body;
  proxy_temp_path $1/tmp-proxy;
  fastcgi_temp_path $1/tmp-fastcgi;
  uwsgi_temp_path $1/tmp-uwsgi;
  scgi_temp_path $1/tmp-scgi;
  # hyper puts no cap on requests per connection; neither does this.
  keepalive_requests 1000000;
EOF
}

# The start_* functions set STARTED to the new pid (not echoed: PIDS must be updated in this
# shell, not in a command substitution's subshell, or cleanup would miss the process).
STARTED=""
start_nginx() { # name conf-text
  local dir="$OUT/$1"
  mkdir -p "$dir"
  printf '%s\n' "$2" >"$dir/nginx.conf"
  "${SERVER_PIN[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

UPSTREAM_DIR="$OUT/upstream"
upstream_conf="$(nginx_common "$UPSTREAM_DIR")
worker_processes 1;
http {
$(ACCESS_LOG=0 nginx_http_common "$UPSTREAM_DIR")
  server {
    listen 127.0.0.1:$P_UPSTREAM backlog=4096;
    location / { return 200 \"ok\\n\"; }
  }
}"
start_nginx upstream "$upstream_conf"
UPSTREAM_PID=$STARTED
wait_port "$P_UPSTREAM" 10 "$UPSTREAM_PID" || { echo "upstream nginx did not start: $(cat "$UPSTREAM_DIR"/*.log)" >&2; exit 1; }

# ---------------------------------------------------------------- TLS: one certificate for both
# Self-signed for 127.0.0.1 and localhost; neither load generator verifies it. nginx and the
# gateway serve the same chain and key, so the handshakes and record ciphers are alike.
TLS_DIR="$OUT/tls"
if [ "$ANY_TLS" = 1 ]; then
  mkdir -p "$TLS_DIR"
  case $TLS_KEY in
    ec) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) key_args=(-newkey rsa:2048) ;;
    *) echo "TLS_KEY must be ec or rsa" >&2; exit 1 ;;
  esac
  openssl req -x509 "${key_args[@]}" -nodes -days 7 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" >"$TLS_DIR/openssl.log" 2>&1 ||
    { echo "openssl could not make a certificate: $(cat "$TLS_DIR/openssl.log")" >&2; exit 1; }
fi

NGINX_DIR="$OUT/nginx"
# One set of locations, served plain and (for the TLS scenarios) over TLS.
nginx_locations="    location /rejected {
      limit_req zone=rejected nodelay;
      limit_req_status 429;
      limit_req_log_level info;
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }"
nginx_tls_server=""
# HTTP/2 by ALPN on the same port as HTTP/1.1 over TLS, as the gateway does. TLS 1.2 and 1.3 as
# rustls offers them (nginx before 1.23.4 defaults to TLS 1.2 at most); nginx's defaults
# otherwise (ciphers in the client's order, ssl_buffer_size 16k).
[ "$ANY_TLS" = 1 ] && nginx_tls_server="  server {
    listen 127.0.0.1:$P_NGINX_TLS ssl http2 backlog=4096;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $TLS_DIR/cert.pem;
    ssl_certificate_key $TLS_DIR/key.pem;
$nginx_locations
  }"
nginx_conf="$(nginx_common "$NGINX_DIR")
worker_processes $WORKERS;
http {
$(nginx_http_common "$NGINX_DIR")
  upstream api {
    server 127.0.0.1:$P_UPSTREAM;
    keepalive 512;
    keepalive_requests 1000000;
  }
  # The rejected scenario's baseline: limit_req, one request a minute per client (its slowest
  # rate), so all but the first request of each minute get nginx's 429; not logged.
  limit_req_zone \$binary_remote_addr zone=rejected:1m rate=1r/m;
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
$nginx_locations
  }
$nginx_tls_server
}"
NGINX_PID=""
if has "$TARGETS" nginx; then
  start_nginx nginx "$nginx_conf"
  NGINX_PID=$STARTED
  wait_port "$P_NGINX" 10 "$NGINX_PID" || { echo "nginx did not start: $(cat "$NGINX_DIR"/*.log)" >&2; exit 1; }
fi

# ---------------------------------------------------------------- redis
REDIS_PID=""
if has "$TARGETS" redis; then
  mkdir -p "$OUT/redis"
  "${SERVER_PIN[@]}" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$OUT/redis" --logfile "$OUT/redis/redis.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_port "$P_REDIS" 10 "$REDIS_PID" || { echo "redis-server did not start" >&2; exit 1; }
fi
rcli() { redis-cli -p "$P_REDIS" "$@"; }
evalsha_calls() {
  rcli INFO commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_(evalsha|fcall):/ {n += $3} END {print n + 0}'
}
all_calls() {
  rcli INFO commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/ && !/^cmdstat_(info|config)/ {n += $3} END {print n + 0}'
}
redis_reads() { # read events redis-server processed since the last CONFIG RESETSTAT
  rcli INFO stats | tr -d '\r' | awk -F: '/^total_reads_processed:/ {print $2; f=1} END {if (!f) print 0}'
}
redis_cpu_s() { # redis-server CPU seconds so far (user + system, all its threads)
  rcli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {n += $2} END {printf "%.6f", n}'
}

# ---------------------------------------------------------------- rategate
gateway_conf() { # port admin-port store-block routes-kind
  cat <<EOF
# Written by benches/load/run.sh.
[server]
listen = "127.0.0.1:$1"
trusted_proxies = ["127.0.0.1/32"]

[admin]
listen = "127.0.0.1:$2"

$3

[[upstream]]
name = "up"
url = "http://127.0.0.1:$P_UPSTREAM"

# Limits that are never hit: 1e9 per minute.
[[policy]]
name = "per-ip"
algorithm = "fixed_window"
limit = 1000000000
window = "60s"

[[policy]]
name = "per-ip-path"
algorithm = "sliding_window"
limit = 1000000000
window = "60s"
key = ["ip", "path"]

[[policy]]
name = "global"
algorithm = "token_bucket"
limit = 1000000000
window = "1s"
key = ["global"]

# Hit at once: 1 per hour.
[[policy]]
name = "over"
algorithm = "fixed_window"
limit = 1
window = "1h"
EOF
  if [ "$4" = million ]; then
    cat <<EOF

[[route]]
name = "million"
path_prefix = "/"
policies = ["per-ip"]
respond = { status = 200, body = "ok\n" }
EOF
  else
    cat <<EOF

[[route]]
name = "allowed"
path_prefix = "/allowed"
upstream = "up"
policies = ["per-ip"]

[[route]]
name = "rejected"
path_prefix = "/rejected"
upstream = "up"
policies = ["over"]

[[route]]
name = "three"
path_prefix = "/three"
upstream = "up"
policies = ["per-ip", "per-ip-path", "global"]

[[route]]
name = "clients"
path_prefix = "/clients"
upstream = "up"
policies = ["per-ip"]
EOF
  fi
}

start_gateway() { # name port admin-port store-block routes-kind [binary]; STARTED="" on failure
  local dir="$OUT/$1" bin=${6:-$BIN}
  mkdir -p "$dir"
  gateway_conf "$2" "$3" "$4" "$5" >"$dir/rategate.toml"
  local filter=warn
  [ "$ACCESS_LOG" = 1 ] && filter=info
  RUST_LOG=$filter "${SERVER_PIN[@]}" "$bin" --log-format json run --config "$dir/rategate.toml" \
    >"$dir/rategate.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  wait_port "$2" 15 "$STARTED" || STARTED=""
}

MEMORY_PID=""
REDIS_GW_PID=""
REDIS_SKIP=""
declare -A IDLE_RSS
if has "$TARGETS" memory; then
  start_gateway memory "$P_MEMORY" "$((P_ADMIN))" \
    "[store]
kind = \"memory\"
max_memory_keys = 1000000" proxy
  MEMORY_PID=$STARTED
  [ -n "$MEMORY_PID" ] || { echo "rategate (memory) did not start: $(tail -5 "$OUT/memory/rategate.log")" >&2; exit 1; }
  sleep 0.5
  IDLE_RSS[memory]=$(rss_kb "$MEMORY_PID")
fi
BEFORE_PID=""
if [ -n "${BASELINE_BIN:-}" ]; then
  TARGETS="$TARGETS before"
  before_store="kind = \"memory\""
  [ "$BASELINE_STORE" = redis ] && before_store="kind = \"redis\"
url = \"redis://127.0.0.1:$P_REDIS/0\""
  start_gateway before "$P_BEFORE" "$((P_ADMIN + 3))" \
    "[store]
$before_store
max_memory_keys = 1000000" proxy "$BASELINE_BIN"
  BEFORE_PID=$STARTED
  [ -n "$BEFORE_PID" ] || { echo "rategate (before) did not start: $(tail -5 "$OUT/before/rategate.log")" >&2; exit 1; }
  sleep 0.5
  IDLE_RSS[before]=$(rss_kb "$BEFORE_PID")
fi
# The TLS scenarios' gateways: the memory store behind [server.tls], on this build and (with
# BASELINE_BIN) on `before`'s; the same config as the plain ones otherwise.
tls_store="[server.tls]
cert = \"$TLS_DIR/cert.pem\"
key = \"$TLS_DIR/key.pem\"

[store]
kind = \"memory\"
max_memory_keys = 1000000"
MEMORY_TLS_PID=""
BEFORE_TLS_PID=""
if [ "$ANY_TLS" = 1 ]; then
  if has "$TARGETS" memory; then
    start_gateway memory-tls "$P_MEMORY_TLS" "$((P_ADMIN + 7))" "$tls_store" proxy
    MEMORY_TLS_PID=$STARTED
    [ -n "$MEMORY_TLS_PID" ] || { echo "rategate (memory-tls) did not start: $(tail -5 "$OUT/memory-tls/rategate.log")" >&2; exit 1; }
  fi
  if [ -n "${BASELINE_BIN:-}" ]; then
    start_gateway before-tls "$P_BEFORE_TLS" "$((P_ADMIN + 8))" "$tls_store" proxy "$BASELINE_BIN"
    BEFORE_TLS_PID=$STARTED
    [ -n "$BEFORE_TLS_PID" ] || { echo "rategate (before-tls) did not start: $(tail -5 "$OUT/before-tls/rategate.log")" >&2; exit 1; }
  fi
fi
if has "$TARGETS" redis; then
  start_gateway redis "$P_REDIS_GW" "$((P_ADMIN + 1))" \
    "[store]
kind = \"redis\"
url = \"redis://127.0.0.1:$P_REDIS/0\"
max_memory_keys = 1000000
$REDIS_STORE" proxy
  REDIS_GW_PID=$STARTED
  if [ -z "$REDIS_GW_PID" ]; then
    REDIS_SKIP="rategate refused to start with kind = \"redis\": $(tail -3 "$OUT/redis/rategate.log" | tr '\n' ' ')"
  else
    # A binary without the Redis store may still accept the config; only real script calls (FCALL or EVALSHA) count.
    rcli CONFIG RESETSTAT >/dev/null
    curl -s -o /dev/null "http://127.0.0.1:$P_REDIS_GW/allowed" || true
    if [ "$(all_calls)" = 0 ]; then
      REDIS_SKIP="this rategate build accepts kind = \"redis\" but made no Redis call (the Redis store is not on this branch yet)"
    fi
  fi
  if [ -n "$REDIS_SKIP" ]; then
    log "SKIPPING the Redis scenarios: $REDIS_SKIP"
    TARGETS=${TARGETS//redis/}
  else
    sleep 0.5
    IDLE_RSS[redis]=$(rss_kb "$REDIS_GW_PID")
  fi
fi
[ -n "$NGINX_PID" ] && IDLE_RSS[nginx]=$(rss_kb "$NGINX_PID")

port_of() { # target [scenario]: a TLS scenario goes to the target's TLS listener
  if is_tls "${2:-}"; then
    case $1 in nginx) echo "$P_NGINX_TLS" ;; memory) echo "$P_MEMORY_TLS" ;; before) echo "$P_BEFORE_TLS" ;; esac
    return
  fi
  case $1 in nginx) echo "$P_NGINX" ;; memory) echo "$P_MEMORY" ;; redis) echo "$P_REDIS_GW" ;; before) echo "$P_BEFORE" ;; esac
}
pid_of() { # target [scenario]: nginx serves both from one process, the gateway from two
  if is_tls "${2:-}"; then
    case $1 in nginx) echo "$NGINX_PID" ;; memory) echo "$MEMORY_TLS_PID" ;; before) echo "$BEFORE_TLS_PID" ;; esac
    return
  fi
  case $1 in nginx) echo "$NGINX_PID" ;; memory) echo "$MEMORY_PID" ;; redis) echo "$REDIS_GW_PID" ;; before) echo "$BEFORE_PID" ;; esac
}

# scenario -> "path script": what a request looks like. nginx runs the request shapes and, with
# limit_req, the rejected one.
scenario_path() {
  case $1 in allowed*) echo /allowed ;; rejected*) echo /rejected ;; three) echo /three ;; clients10k) echo /clients ;; esac
}
scenario_script() {
  case $1 in clients10k) echo clients.lua ;; *) echo plain.lua ;; esac
}
# Which nginx run is the baseline of a scenario (same request shape).
baseline_of() {
  case $1 in clients10k) echo clients10k ;; *) echo allowed ;; esac
}
runs_on() { # scenario target
  case $2 in
    nginx) [ "$1" = allowed ] || [ "$1" = clients10k ] || [ "$1" = rejected ] || is_tls "$1" ;;
    redis) ! is_tls "$1" ;;
    *) true ;;
  esac
}

run_wrk() { # target scenario conns seconds -> RESULT line
  local port path script scheme=http
  [[ $2 == *-h2 ]] && { run_h2load "$@"; return; }
  [[ $2 == *-tls ]] && scheme=https
  port=$(port_of "$1" "$2")
  path=$(scenario_path "$2")
  script=$(scenario_script "$2")
  THREADS=$WRK_THREADS CLIENTS=10000 "${WRK_PIN[@]}" wrk -t"$WRK_THREADS" -c"$3" -d"$4"s --timeout 5s \
    -s "$LOAD_DIR/$script" "$scheme://127.0.0.1:$port$path" | grep '^RESULT' || echo "RESULT failed"
}

# HTTP/2 over TLS: h2load (ALPN h2, -m H2_STREAMS requests in flight per connection), its output
# turned into the RESULT line report.lua prints for wrk. h2load has no percentiles: they come from
# its per-request log (microseconds to the end of each response, third column). A run that did
# not negotiate h2 is a failure, not a row. Every run's output is kept in OUT/h2load/.
run_h2load() { # target scenario conns seconds -> RESULT line
  local port path out log threads=$WRK_THREADS
  port=$(port_of "$1" "$2")
  path=$(scenario_path "$2")
  out="$OUT/h2load/$1-$2-c$3-$(date +%H%M%S%N).txt"
  log="$OUT/h2load/requests.tsv"
  mkdir -p "$OUT/h2load"
  [ "$threads" -gt "$3" ] && threads=$3
  "${WRK_PIN[@]}" h2load -t"$threads" -c"$3" -m"$H2_STREAMS" -D"$4" --log-file="$log" \
    "https://127.0.0.1:$port$path" >"$out" 2>&1 || true
  if ! grep -q '^Application protocol: h2$' "$out"; then
    echo "RESULT failed"
    return
  fi
  local pct
  pct=$(cut -f3 "$log" | sort -n | awk '{v[NR] = $1} END {
    if (NR == 0) { print "0 0"; exit }
    i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
    i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
    print v[i50], v[i99] }')
  rm -f "$log"
  awk -v pct="$pct" '
    /^finished in/ { d = $3; sub(/s,$/, "", d); if (d ~ /ms,?$/) { sub(/ms,?$/, "", d); d /= 1000 }; rps = $4 }
    /^requests:/ { done = $6; errored = $12; timeout = $14 }
    /^status codes:/ { non2xx = $5 + $7 + $9 }
    END {
      split(pct, p, " ")
      printf "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d sock_errors=%d\n",
        done, d * 1e6, rps, p[1], p[2], non2xx, errored + timeout
    }' "$out"
}

field() { # line key
  sed -n "s/.*[[:space:]]$2=\([^ ]*\).*/\1/p" <<<"$1"
}

RAW="$OUT/raw.csv"
echo "target,scenario,conns,rep,requests,rps,p50_us,p99_us,non2xx,sock_errors,evalsha,redis_calls,rss_kb,cpu_us_per_req,redis_cpu_us_per_req,redis_reads" >"$RAW"

PROXY_SCENARIOS=()
for s in allowed rejected three clients10k allowed-tls rejected-tls allowed-h2 rejected-h2; do
  has "$SCENARIOS" "$s" && PROXY_SCENARIOS+=("$s")
done

if [ ${#PROXY_SCENARIOS[@]} -gt 0 ]; then
  log "targets: $TARGETS; scenarios: ${PROXY_SCENARIOS[*]}; conns: $CONNS; ${REPS}x ${DURATION}s; pin=$PIN; server workers=$WORKERS"
  log "warming up"
  for t in $TARGETS; do
    for s in "${PROXY_SCENARIOS[@]}"; do
      runs_on "$s" "$t" && run_wrk "$t" "$s" 64 1 >/dev/null
    done
  done
  for rep in $(seq "$REPS"); do
    for c in $CONNS; do
      for s in "${PROXY_SCENARIOS[@]}"; do
        for t in $TARGETS; do
          runs_on "$s" "$t" || continue
          on_redis=0
          { [ "$t" = redis ] || { [ "$t" = before ] && [ "$BASELINE_STORE" = redis ]; }; } && on_redis=1
          rcpu0="" rcpu1=""
          [ "$on_redis" = 1 ] && rcli CONFIG RESETSTAT >/dev/null && rcpu0=$(redis_cpu_s)
          ticks0=$(cpu_ticks "$(pid_of "$t" "$s")")
          line=$(run_wrk "$t" "$s" "$c" "$DURATION")
          ticks1=$(cpu_ticks "$(pid_of "$t" "$s")")
          evalsha="" calls="" reads=""
          if [ "$on_redis" = 1 ]; then
            evalsha=$(evalsha_calls)
            calls=$(all_calls)
            rcpu1=$(redis_cpu_s)
            reads=$(redis_reads)
          fi
          rss=$(rss_kb "$(pid_of "$t" "$s")")
          echo "$t,$s,$c,$rep,$(field "$line" requests),$(field "$line" rps),$(field "$line" p50_us),$(field "$line" p99_us),$(field "$line" non2xx),$(field "$line" sock_errors),$evalsha,$calls,$rss,$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$(field "$line" requests)" 'BEGIN {printf "%.1f", (n > 0 ? d * 1e6 / hz / n : 0)}'),$(awk -v a="$rcpu0" -v b="$rcpu1" -v n="$(field "$line" requests)" 'BEGIN {if (a != "" && n > 0) printf "%.1f", (b - a) * 1e6 / n}'),$reads" >>"$RAW"
          log "rep $rep c=$c $s on $t: ${line#RESULT }"
        done
      done
    done
  done
fi

# ---------------------------------------------------------------- 1M distinct clients (memory)
MILLION_CSV="$OUT/million.csv"
echo "max_memory_keys,requests,rps,non2xx,sock_errors,idle_rss_kb,peak_rss_kb,end_rss_kb,capacity_errors" >"$MILLION_CSV"
if has "$SCENARIOS" million && has "$TARGETS" memory; then
  for keys in $MILLION_KEYS; do
    name="million-$keys"
    start_gateway "$name" "$P_MILLION" "$((P_ADMIN + 2))" \
      "[store]
kind = \"memory\"
max_memory_keys = $keys" million
    pid=$STARTED
    [ -n "$pid" ] || { echo "rategate ($name) did not start" >&2; exit 1; }
    sleep 0.5
    idle=$(rss_kb "$pid")
    log "$name: $MILLION distinct clients, at most ${MILLION_TIMEOUT}s (idle RSS ${idle} kB)"
    echo "seconds,rss_kb,requests_served" >"$OUT/$name/rss.csv"
    THREADS=$WRK_THREADS CLIENTS=$MILLION STOP_AT=$MILLION "${WRK_PIN[@]}" wrk -t"$WRK_THREADS" -c64 \
      -d"${MILLION_TIMEOUT}"s --timeout 5s -s "$LOAD_DIR/clients.lua" "http://127.0.0.1:$P_MILLION/" \
      >"$OUT/$name/wrk.log" 2>&1 &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    peak=$idle
    t0=$SECONDS
    while kill -0 "$wrk_pid" 2>/dev/null; do
      r=$(rss_kb "$pid")
      served=$(curl -s "http://127.0.0.1:$((P_ADMIN + 2))/metrics" |
        awk '/^rategate_requests_total/ {n += $2} END {printf "%d", n}')
      echo "$((SECONDS - t0)),$r,$served" >>"$OUT/$name/rss.csv"
      [ "$r" -gt "$peak" ] && peak=$r
      # wrk runs for its whole -d even once its threads stop; SIGINT makes it stop and report.
      [ "${served:-0}" -ge "$MILLION" ] && kill -INT "$wrk_pid" 2>/dev/null
      sleep 1
    done
    wait "$wrk_pid" 2>/dev/null || true
    line=$(grep '^RESULT' "$OUT/$name/wrk.log" || echo "RESULT failed")
    sleep 1
    end=$(rss_kb "$pid")
    [ "$end" -gt "$peak" ] && peak=$end
    capacity=$(curl -s "http://127.0.0.1:$((P_ADMIN + 2))/metrics" |
      awk '/^rategate_store_errors_total/ && /kind="capacity"/ {n += $2} END {print n + 0}')
    echo "$keys,$(field "$line" requests),$(field "$line" rps),$(field "$line" non2xx),$(field "$line" sock_errors),$idle,$peak,$end,$capacity" >>"$MILLION_CSV"
    log "$name: ${line#RESULT } idle=${idle}kB peak=${peak}kB end=${end}kB capacity_errors=$capacity"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
fi

# ---------------------------------------------------------------- Redis Cluster: 1 vs 3 masters
CLUSTER_CSV="$OUT/cluster.csv"
echo "masters,rep,requests,rps,p99_us,non2xx,evalsha_per_master,redis_cpu_us_per_req" >"$CLUSTER_CSV"
start_cluster() { # name masters first-port -> CLUSTER_PORTS (space separated)
  local ports=() p i pid
  for i in $(seq 0 $(($2 - 1))); do
    p=$(($3 + i))
    mkdir -p "$OUT/$1/n$p"
    rm -f "$OUT/$1/n$p/nodes.conf" # a reused OUT: a fresh cluster every run
    "${SERVER_PIN[@]}" redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --cluster-announce-ip 127.0.0.1 \
      --dir "$OUT/$1/n$p" --logfile "$OUT/$1/n$p/redis.log" &
    pid=$!
    PIDS+=("$pid")
    wait_port "$p" 10 "$pid" || { echo "cluster node $p did not start" >&2; exit 1; }
    ports+=("$p")
  done
  if [ "$2" = 1 ]; then
    redis-cli -p "${ports[0]}" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
  else
    # shellcheck disable=SC2046
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 \
      --cluster-yes >"$OUT/$1/create.log" 2>&1 ||
      { echo "cluster $1: create failed: $(tail -3 "$OUT/$1/create.log")" >&2; exit 1; }
  fi
  local deadline=$((SECONDS + 20))
  for p in "${ports[@]}"; do
    until redis-cli -p "$p" CLUSTER INFO | grep -q cluster_state:ok; do
      [ $SECONDS -lt $deadline ] || { echo "cluster $1 not ok" >&2; exit 1; }
      sleep 0.2
    done
  done
  CLUSTER_PORTS="${ports[*]}"
}
cluster_url() { # ports...
  local first=$1 rest=()
  shift
  for p in "$@"; do rest+=("node=127.0.0.1:$p"); done
  local IFS='&'
  echo "redis-cluster://127.0.0.1:$first${rest:+?${rest[*]}}"
}
nodes_cpu_s() { # ports...: CPU seconds of all those redis-servers
  for p in "$@"; do redis-cli -p "$p" INFO cpu; done | tr -d '\r' |
    awk -F: '/^used_cpu_(sys|user):/ {n += $2} END {printf "%.6f", n}'
}
if has "$SCENARIOS" cluster; then
  start_cluster cluster1 1 "$P_C1"
  C1_PORTS=$CLUSTER_PORTS
  start_cluster cluster3 3 "$P_C3"
  C3_PORTS=$CLUSTER_PORTS
  declare -A C_GW C_PORTS
  C_PORTS[1]=$C1_PORTS
  C_PORTS[3]=$C3_PORTS
  for m in 1 3; do
    gw_port=$P_C1_GW
    [ "$m" = 3 ] && gw_port=$P_C3_GW
    # shellcheck disable=SC2086
    start_gateway "cluster$m-gw" "$gw_port" "$((P_ADMIN + 3 + m))" \
      "[store]
kind = \"redis\"
url = \"$(cluster_url ${C_PORTS[$m]})\"
max_memory_keys = 1000000" proxy
    [ -n "$STARTED" ] || { echo "rategate (cluster $m) did not start" >&2; exit 1; }
    C_GW[$m]=$gw_port
    THREADS=$WRK_THREADS CLIENTS=$CLUSTER_CLIENTS "${WRK_PIN[@]}" wrk -t"$WRK_THREADS" \
      -c"$CLUSTER_CONNS" -d1s --timeout 5s -s "$LOAD_DIR/clients.lua" \
      "http://127.0.0.1:$gw_port/clients" >/dev/null
    # Only checks Redis answered count: a gateway serving from its fallback would flatter the row.
    calls=0
    # shellcheck disable=SC2086
    for p in ${C_PORTS[$m]}; do
      n=$(redis-cli -p "$p" INFO commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_(evalsha|fcall):/ {n += $3} END {print n + 0}')
      calls=$((calls + n))
    done
    [ "$calls" -gt 0 ] || { echo "rategate (cluster $m) made no Redis call: $(tail -2 "$OUT/cluster$m-gw/rategate.log")" >&2; exit 1; }
  done
  for rep in $(seq "$REPS"); do
    for m in 1 3; do
      # shellcheck disable=SC2086
      for p in ${C_PORTS[$m]}; do redis-cli -p "$p" CONFIG RESETSTAT >/dev/null; done
      # shellcheck disable=SC2086
      cpu0=$(nodes_cpu_s ${C_PORTS[$m]})
      line=$(THREADS=$WRK_THREADS CLIENTS=$CLUSTER_CLIENTS "${WRK_PIN[@]}" wrk -t"$WRK_THREADS" \
        -c"$CLUSTER_CONNS" -d"$DURATION"s --timeout 5s -s "$LOAD_DIR/clients.lua" \
        "http://127.0.0.1:${C_GW[$m]}/clients" | grep '^RESULT' || echo "RESULT failed")
      # shellcheck disable=SC2086
      cpu1=$(nodes_cpu_s ${C_PORTS[$m]})
      shares=""
      # shellcheck disable=SC2086
      for p in ${C_PORTS[$m]}; do
        n=$(redis-cli -p "$p" INFO commandstats | tr -d '\r' |
          awk -F'[:=,]' '/^cmdstat_(evalsha|fcall):/ {n += $3} END {print n + 0}')
        shares="$shares${shares:+ }$n"
      done
      echo "$m,$rep,$(field "$line" requests),$(field "$line" rps),$(field "$line" p99_us),$(field "$line" non2xx),$shares,$(awk -v a="$cpu0" -v b="$cpu1" -v n="$(field "$line" requests)" 'BEGIN {if (n > 0) printf "%.1f", (b - a) * 1e6 / n}')" >>"$CLUSTER_CSV"
      log "rep $rep cluster, $m master(s): ${line#RESULT } evalsha per master: $shares"
    done
  done
fi

# ---------------------------------------------------------------- TLS: what was negotiated
# wrk takes OpenSSL's defaults, as openssl s_client does without options; h2load prints its own.
TLS_NOTE=""
if [ "$ANY_TLS" = 1 ]; then
  for t in $TARGETS; do
    runs_on allowed-tls "$t" || continue
    [ -n "$(pid_of "$t" allowed-tls)" ] || continue
    w=$(openssl s_client -brief -connect "127.0.0.1:$(port_of "$t" allowed-tls)" </dev/null 2>&1 |
      awk -F': ' '/^Protocol version/ {p = $2} /^Ciphersuite/ {c = $2} END {print p " " c}')
    h=$(ls -t "$OUT/h2load/$t-"* 2>/dev/null | head -1 || true)
    [ -n "$h" ] && h=$(awk -F': ' '/^TLS Protocol/ {p = $2} /^Cipher/ {c = $2} /^Application protocol/ {a = $2} END {print p " " c " ALPN " a}' "$h")
    TLS_NOTE="$TLS_NOTE$t: wrk/openssl ${w:-?}${h:+, h2load $h}; "
  done
fi

# ---------------------------------------------------------------- report
{
  echo "# rategate load harness, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), pin=$PIN, server workers=$WORKERS, wrk -t$WRK_THREADS, ${REPS}x ${DURATION}s per cell, medians. Ratios are to nginx in this same run; absolute figures are for this run only."
  echo "Idle RSS: $(for k in "${!IDLE_RSS[@]}"; do printf '%s %.1f MB; ' "$k" "$(awk -v v="${IDLE_RSS[$k]}" 'BEGIN {print v / 1024}')"; done)"
  [ -n "$REDIS_SKIP" ] && echo && echo "Redis scenarios SKIPPED: $REDIS_SKIP."
  [ -n "$TLS_NOTE" ] && echo && echo "TLS (certificate: $TLS_KEY): $TLS_NOTE"
  echo
  awk -F, -v targets="$TARGETS" '
    function median(list,   n, a, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR == 1 { next }
    {
      k = $1 SUBSEP $2 SUBSEP $3
      if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      rps[k] = rps[k] " " $6; p50[k] = p50[k] " " $7; p99[k] = p99[k] " " $8
      req[k] += $5; bad[k] += $9; err[k] += $10; es[k] += $11; calls[k] += $12
      if ($13 + 0 > rss[k] + 0) rss[k] = $13
      cpu[k] = cpu[k] " " $14
      if ($15 != "") rcpu[k] = rcpu[k] " " $15
      reads[k] += $16
    }
    END {
      print "| scenario | target | c | req/s | vs nginx | p50 µs | p50 vs nginx | p99 µs | p99 vs nginx | p99 Δ ms | CPU µs/req | CPU vs nginx | non-2xx | script calls/req | req/call | Redis cmds/req | redis-server CPU µs/req | Redis reads/req | vs before | RSS MB |"
      print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
      for (i = 1; i <= n; i++) {
        split(order[i], f, SUBSEP); t = f[1]; s = f[2]; c = f[3]
        # Each shape against nginx doing the same: proxying it, or (rejected) refusing it with
        # limit_req; three policies against nginx proxying; a TLS scenario against nginx doing
        # it over the same protocol.
        base = (s == "clients10k" || s == "rejected" || s ~ /-(tls|h2)$/) ? s : "allowed"
        b = "nginx" SUBSEP base SUBSEP c
        r = median(rps[order[i]]); m50 = median(p50[order[i]]); m99 = median(p99[order[i]])
        if (b in seen) {
          br = median(rps[b]); b50 = median(p50[b]); b99 = median(p99[b])
          vr = sprintf("%.2fx", r / br); v50 = sprintf("%.2fx", m50 / b50); v99 = sprintf("%.2fx", m99 / b99)
          d99 = sprintf("%+.2f", (m99 - b99) / 1000)
          bc = median(cpu[b]); vc = bc > 0 ? sprintf("%.2fx", median(cpu[order[i]]) / bc) : "n/a"
        } else { vr = v50 = v99 = d99 = vc = "n/a" }
        on_redis = (order[i] in rcpu) && req[order[i]] > 0
        es_req = on_redis ? sprintf("%.3f", es[order[i]] / req[order[i]]) : "-"
        # requests per script call: above 1 when concurrent checks shared calls (batches)
        req_es = on_redis && es[order[i]] > 0 ? sprintf("%.1f", req[order[i]] / es[order[i]]) : "-"
        calls_req = on_redis ? sprintf("%.3f", calls[order[i]] / req[order[i]]) : "-"
        rc = on_redis ? sprintf("%.1f", median(rcpu[order[i]])) : "-"
        # read events (each one read syscall on the server) per request: below 1, checks of
        # several requests arrived in one write of the pipelined gateway connections
        rr = on_redis ? sprintf("%.3f", reads[order[i]] / req[order[i]]) : "-"
        bb = "before" SUBSEP s SUBSEP c
        vb = (t != "before" && (bb in seen)) ? sprintf("%.2fx", r / median(rps[bb])) : "-"
        nb = req[order[i]] > 0 ? sprintf("%.1f%%", 100 * bad[order[i]] / req[order[i]]) : "-"
        if (err[order[i]] > 0) nb = nb " (" err[order[i]] " socket errors)"
        printf "| %s | %s | %s | %.0f | %s | %d | %s | %d | %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %.1f |\n", s, t, c, r, vr, m50, v50, m99, v99, d99, median(cpu[order[i]]), vc, nb, es_req, req_es, calls_req, rc, rr, vb, rss[order[i]] / 1024
      }
      # Rejected traffic against the allowed throughput of the same store (and protocol).
      for (i = 1; i <= n; i++) {
        split(order[i], f, SUBSEP)
        if (f[2] !~ /^rejected/) continue
        as = f[2]; sub(/^rejected/, "allowed", as)
        a = f[1] SUBSEP as SUBSEP f[3]
        tag = f[2] == "rejected" ? f[1] : f[1] " " substr(f[2], 10)
        if (a in seen) rej = rej sprintf("%s c=%s: %.2fx; ", tag, f[3], median(rps[order[i]]) / median(rps[a]))
      }
      if (rej != "") { print ""; print "Rejected vs allowed throughput of the same store: " rej }
      # What TLS costs each server: its TLS row against its own plain row in this run.
      for (i = 1; i <= n; i++) {
        split(order[i], f, SUBSEP)
        if (f[2] !~ /-(tls|h2)$/) continue
        ps = f[2]; sub(/-(tls|h2)$/, "", ps)
        pk = f[1] SUBSEP ps SUBSEP f[3]
        if (!(pk in seen)) continue
        tlsc = tlsc sprintf("| %s | %s | %s | %.2fx | %+.1f |\n", ps, f[2] ~ /h2$/ ? "HTTP/2 over TLS" : "HTTP/1.1 over TLS", f[1] " c=" f[3], median(rps[order[i]]) / median(rps[pk]), median(cpu[order[i]]) - median(cpu[pk]))
      }
      if (tlsc != "") {
        print ""; print "TLS against plain HTTP/1.1, same server and scenario in this run:"; print ""
        print "| scenario | protocol | target | req/s vs plain | CPU µs/req vs plain |"
        print "|---|---|---|---|---|"
        printf "%s", tlsc
      }
    }' "$RAW"
  if [ "$(wc -l <"$CLUSTER_CSV")" -gt 1 ]; then
    echo
    echo "Redis Cluster, $CLUSTER_CLIENTS distinct clients, c=$CLUSTER_CONNS, 1 policy keyed by the client (medians; share = each master's script calls (FCALL or EVALSHA) over all, summed over the reps):"
    echo
    echo "| masters | checks/s | vs 1 master | p99 µs | non-2xx | share per master | redis-server CPU µs/req (all masters) |"
    echo "|---|---|---|---|---|---|---|"
    awk -F, '
      function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      NR == 1 { next }
      {
        m = $1; rps[m] = rps[m] " " $4; p99[m] = p99[m] " " $5; bad[m] += $6; req[m] += $3
        cpu[m] = cpu[m] " " $8
        k = split($7, e, " "); for (i = 1; i <= k; i++) { es[m, i] += e[i]; tot[m] += e[i] }; nm[m] = k
      }
      END {
        for (m = 1; m <= 3; m += 2) {
          if (!(m in rps)) continue
          share = ""
          for (i = 1; i <= nm[m]; i++) share = share sprintf("%s%.0f%%", (i > 1 ? " / " : ""), tot[m] > 0 ? 100 * es[m, i] / tot[m] : 0)
          ratio = (1 in rps) ? sprintf("%.2fx", median(rps[m]) / median(rps[1])) : "n/a"
          printf "| %d | %.0f | %s | %d | %s | %s | %.1f |\n", m, median(rps[m]), ratio, median(p99[m]), bad[m], share, median(cpu[m])
        }
      }' "$CLUSTER_CSV"
  fi
  if [ "$(wc -l <"$MILLION_CSV")" -gt 1 ]; then
    echo
    echo "Memory growth, $MILLION distinct clients (X-Forwarded-For), memory store, route answered by the gateway itself:"
    echo
    echo "| max_memory_keys | requests | non-2xx | RSS idle MB | RSS peak MB | RSS end MB | capacity errors |"
    echo "|---|---|---|---|---|---|---|"
    awk -F, 'NR > 1 {printf "| %s | %s | %s | %.1f | %.1f | %.1f | %s |\n", $1, $2, $4, $6 / 1024, $7 / 1024, $8 / 1024, $9}' "$MILLION_CSV"
  fi
} | tee "$OUT/results.md"
log "raw data and logs in $OUT"
