#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: a figure that does not move
# with whatever else the machine is running (unlike req/s and CPU time on a shared 2-core box),
# so it is how optimizations of the gateway's own code (user space: rategate, hyper, tokio, libc)
# are compared. Kernel time (the loopback TCP work) is not counted.
#
#   bash benches/load/callgrind.sh [BINARY...]     # default: target/release/rategate
#
# For each binary: starts an upstream (nginx `return 200`) and the gateway under callgrind with
# the memory store, warms up, zeroes the counters, drives PATHS with wrk (c=8) for SECONDS,
# dumps, and prints instructions per request for each path; the callgrind output files stay in
# OUT for callgrind_annotate. Everything is on 127.0.0.1 and bounded in time.
#
# Environment: SECONDS_PER_PATH [4], PATHS ["/allowed /rejected /three"], PORT_BASE [18200],
# OUT [target/load/callgrind-<timestamp>], UPSTREAM_H2C [0] (1: the upstream speaks HTTP/2 with
# prior knowledge and the gateway reaches it as `h2c://`), POOL_TARGETS [1]: above 1, the
# upstream nginx listens on that many ports and the gateway's upstream lists them as `targets`
# with `balance = POOL_BALANCE` [round_robin] (binaries from before upstream pools refuse that
# config). STORE [memory]: `redis` runs a redis-server (not under valgrind, so only the
# gateway's side of each check is counted) and gives the gateway the Redis store.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export LOAD_DIR="$ROOT/benches/load"
SECONDS_PER_PATH=${SECONDS_PER_PATH:-4}
PATHS=${PATHS:-"/allowed /rejected /three"}
PORT_BASE=${PORT_BASE:-18200}
POOL_TARGETS=${POOL_TARGETS:-1}
POOL_BALANCE=${POOL_BALANCE:-round_robin}
STORE=${STORE:-memory}
OUT=${OUT:-$ROOT/target/load/callgrind-$(date +%Y%m%d-%H%M%S)}
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$ROOT/target/release/rategate")

need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

P_UP=$((PORT_BASE + 1))
P_GW=$((PORT_BASE + 2))
P_ADMIN=$((PORT_BASE + 3))
UP_LISTEN="" UP_SCHEME=http
if [ "${UPSTREAM_H2C:-0}" = 1 ]; then UP_LISTEN=" http2" UP_SCHEME=h2c; fi
mkdir -p "$OUT/upstream"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

cat >"$OUT/upstream/nginx.conf" <<EOF
daemon off;
pid $OUT/upstream/nginx.pid;
error_log $OUT/upstream/error.log warn;
worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $OUT/upstream/tmp-body;
  proxy_temp_path $OUT/upstream/tmp-proxy;
  fastcgi_temp_path $OUT/upstream/tmp-fastcgi;
  uwsgi_temp_path $OUT/upstream/tmp-uwsgi;
  scgi_temp_path $OUT/upstream/tmp-scgi;
  keepalive_requests 1000000;
  server {
$(for i in $(seq 0 $((POOL_TARGETS - 1))); do echo "    listen 127.0.0.1:$((P_UP + 10 * i))$UP_LISTEN;"; done)
    location / { return 200 "ok\n"; }
  }
}
EOF
if [ "$POOL_TARGETS" -gt 1 ]; then
  UPSTREAM_TARGET="targets = [$(for i in $(seq 0 $((POOL_TARGETS - 1))); do printf '"%s://127.0.0.1:%s",' "$UP_SCHEME" $((P_UP + 10 * i)); done)]
balance = \"$POOL_BALANCE\""
else
  UPSTREAM_TARGET="url = \"$UP_SCHEME://127.0.0.1:$P_UP\""
fi
"$NGINX" -p "$OUT/upstream" -c "$OUT/upstream/nginx.conf" &
PIDS+=($!)
wait_port "$P_UP" 10

STORE_BLOCK='kind = "memory"'
if [ "$STORE" = redis ]; then
  P_REDIS=$((PORT_BASE + 4))
  mkdir -p "$OUT/redis"
  redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT/redis" \
    --logfile "$OUT/redis/redis.log" &
  PIDS+=($!)
  wait_port "$P_REDIS" 10
  STORE_BLOCK="kind = \"redis\"
url = \"redis://127.0.0.1:$P_REDIS/0\""
fi

cat >"$OUT/rategate.toml" <<EOF
[server]
listen = "127.0.0.1:$P_GW"
trusted_proxies = ["127.0.0.1/32"]
[admin]
listen = "127.0.0.1:$P_ADMIN"
[store]
$STORE_BLOCK
[[upstream]]
name = "up"
$UPSTREAM_TARGET
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
[[policy]]
name = "over"
algorithm = "fixed_window"
limit = 1
window = "1h"
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
EOF

printf '| binary | path | requests | instructions/request |\n|---|---|---|---|\n' >"$OUT/results.md"
for bin in "${BINS[@]}"; do
  name=$(basename "$bin")
  for path in $PATHS; do
    tag="$name${path//\//-}"
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$tag.%p" \
      "$bin" --log-format json run --config "$OUT/rategate.toml" >"$OUT/$tag.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$P_GW" 60
    # Warm-up: pools, first counters, lazily created metric series.
    wrk -t1 -c8 -d2s "http://127.0.0.1:$P_GW$path" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    line=$(wrk -t1 -c8 -d"${SECONDS_PER_PATH}"s -s "$LOAD_DIR/plain.lua" "http://127.0.0.1:$P_GW$path" | grep '^RESULT')
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
    # The dump after zeroing holds exactly the measured window (the final dump at exit is later).
    dump=$(ls -1 "$OUT"/callgrind."$tag".*.1 2>/dev/null | head -1)
    ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
    printf '| %s | %s | %s | %s |\n' "$name" "$path" "$requests" \
      "$(awk -v i="${ir:-0}" -v n="${requests:-0}" 'BEGIN {if (n > 0) printf "%.0f", i / n; else print "n/a"}')" |
      tee -a "$OUT/results.md"
  done
done
echo "callgrind files in $OUT (callgrind_annotate --inclusive=yes FILE)" >&2
