#!/usr/bin/env bash
# WebSocket tunnels: rategate against nginx as a WebSocket proxy, in front of the same echo
# server (tests/python/ws.py, Python `websockets`), in one run, interleaved REPS times.
#
#   BIN=target/release/rategate bash benches/load/websocket.sh
#
# For each target: CONNS connections each send MESSAGES messages of SIZE bytes and wait for each
# echo (benches/load/ws_bench.py). Reported per target (medians): messages/s and the proxy's CPU
# µs per message (user+system ticks from /proc, nginx master+workers summed). The echo server and
# the Python client are the same for every target, so the CPU per message is the figure to
# compare; messages/s is bounded by the Python peers.
#
# H2=1 adds two rows driven by one Rust client (examples/ws_echo.rs, built in release): the same
# load through rategate over an HTTP/1.1 Upgrade (`rategate-h1`) and over HTTP/2 extended
# CONNECT on h2c (`rategate-h2`, RFC 8441), each tunnel on a connection of its own.
#
#   BIN [target/release/rategate]  CONNS [16]  MESSAGES [2000]  SIZE [128]  REPS [3]  H2 [0]
#   PORT_BASE [19000]  OUT [target/load/ws-<timestamp>]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release/rategate}
CONNS=${CONNS:-16}
MESSAGES=${MESSAGES:-2000}
SIZE=${SIZE:-128}
REPS=${REPS:-3}
H2=${H2:-0}
WS_ECHO=$ROOT/target/release/examples/ws_echo
PORT_BASE=${PORT_BASE:-19000}
OUT=${OUT:-$ROOT/target/load/ws-$(date +%Y%m%d-%H%M%S)}
P_NGINX=$((PORT_BASE + 80))
P_GATEWAY=$((PORT_BASE + 90))
P_ADMIN=$((PORT_BASE + 1090))
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }
python3 -c 'import websockets' || { echo "run tests/python/setup.sh first" >&2; exit 1; }
if [ "$H2" = 1 ]; then
  (cd "$ROOT" && cargo build --release --example ws_echo -q) || exit 1
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu_ticks() { # pid: user+system ticks of the process and its children
  local total=0 p v
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# The echo server: its first line is its port, then one line per handshake.
python3 "$ROOT/tests/python/ws.py" server >"$OUT/echo.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do grep -q '^PORT ' "$OUT/echo.log" 2>/dev/null && break; sleep 0.1; done
P_ECHO=$(awk '/^PORT / {print $2; exit}' "$OUT/echo.log")
[ -n "$P_ECHO" ] || { echo "echo server did not start: $(cat "$OUT/echo.log")" >&2; exit 1; }

mkdir -p "$OUT/nginx"
cat >"$OUT/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
worker_processes $(nproc);
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp-body;
  proxy_temp_path $OUT/nginx/tmp-proxy;
  fastcgi_temp_path $OUT/nginx/tmp-fastcgi;
  uwsgi_temp_path $OUT/nginx/tmp-uwsgi;
  scgi_temp_path $OUT/nginx/tmp-scgi;
  server {
    listen 127.0.0.1:$P_NGINX;
    location / {
      proxy_pass http://127.0.0.1:$P_ECHO;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 60s;
    }
  }
}
EOF
"$NGINX" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" >"$OUT/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

cat >"$OUT/rategate.toml" <<EOF
[server]
listen = "127.0.0.1:$P_GATEWAY"
access_log = false

[admin]
listen = "127.0.0.1:$P_ADMIN"

[[upstream]]
name = "echo"
url = "http://127.0.0.1:$P_ECHO"

[[policy]]
name = "sockets"
algorithm = "concurrency"
limit = 100000
lease = "30s"

[[route]]
name = "ws"
path_prefix = "/"
upstream = "echo"
upgrade = ["websocket"]
policies = ["sockets"]
EOF
RUST_LOG=warn "$BIN" run --config "$OUT/rategate.toml" >"$OUT/rategate.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
wait_port "$P_NGINX" && wait_port "$P_GATEWAY" || { echo "a proxy did not start" >&2; exit 1; }

RAW="$OUT/raw.csv"
echo "target,rep,messages,per_second,cpu_us_per_message" >"$RAW"
run() { # target port pid [h1|h2: the Rust client instead of the Python one]
  local ticks0 ticks1 line n
  ticks0=$([ -n "$3" ] && cpu_ticks "$3" || echo 0)
  if [ -n "${4:-}" ]; then
    line=$("$WS_ECHO" "$4" "127.0.0.1:$2" "$CONNS" "$MESSAGES" "$SIZE")
  else
    line=$(python3 "$ROOT/benches/load/ws_bench.py" "ws://127.0.0.1:$2/" "$CONNS" "$MESSAGES" "$SIZE")
  fi
  ticks1=$([ -n "$3" ] && cpu_ticks "$3" || echo 0)
  n=$(sed 's/.*messages=\([0-9]*\).*/\1/' <<<"$line")
  echo "$1,$rep,$n,$(sed 's/.*per_second=\([0-9]*\).*/\1/' <<<"$line"),$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')" >>"$RAW"
}
# Warm-up, then the interleaved reps.
rep=0
MESSAGES=200 run warmup "$P_GATEWAY" "" >/dev/null
for rep in $(seq "$REPS"); do
  run direct "$P_ECHO" ""
  run nginx "$P_NGINX" "$NGINX_PID"
  run rategate "$P_GATEWAY" "$GATEWAY_PID"
  if [ "$H2" = 1 ]; then
    run rategate-h1 "$P_GATEWAY" "$GATEWAY_PID" h1
    run rategate-h2 "$P_GATEWAY" "$GATEWAY_PID" h2
  fi
done
grep -v '^warmup' "$RAW" >"$RAW.tmp" && mv "$RAW.tmp" "$RAW"

{
  echo "| target | messages/s (median) | proxy CPU µs/message (median) | vs nginx |"
  echo "|---|---:|---:|---:|"
  nginx_cpu=$(awk -F, '$1 == "nginx" {print $5}' "$RAW" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  targets="direct nginx rategate"
  [ "$H2" = 1 ] && targets="$targets rategate-h1 rategate-h2"
  for t in $targets; do
    rps=$(awk -F, -v t=$t '$1 == t {print $4}' "$RAW" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    cpu=$(awk -F, -v t=$t '$1 == t {print $5}' "$RAW" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    if [ "$t" = direct ]; then
      echo "| $t | $rps | - | - |"
    else
      echo "| $t | $rps | $cpu | $(awk -v a="$cpu" -v b="$nginx_cpu" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else printf "-"}') |"
    fi
  done
} | tee "$OUT/results.md"
echo "raw: $RAW" >&2
