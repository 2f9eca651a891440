#!/usr/bin/env bash
# Redis's own time per check in the compiled check script (`lua/check.lua` with its prelude and
# `common.lua`), with nothing of the gateway around it: redis-benchmark sends EVALSHA of the
# script compiled for the load harness's `allowed` route (one fixed window policy) or `three`
# route (fixed window, sliding window, token bucket), R requests per call, each with its own
# random client (block entry and counters), and `INFO commandstats` gives Redis's time per call
# (usec_per_call), printed divided by R.
#
#   bash benches/load/lua_cost.sh
#
# With CALLGRIND=1, redis-server runs under valgrind's callgrind and each cell also prints
# redis-server's instructions per request (user space: command parsing, Lua, the commands, the
# reply; kernel networking is not counted): a figure the machine's other load does not move,
# unlike usec_per_call. CALLS is then best kept small (2000).
#
# Each cell runs the check as the gateway calls it on Redis 7 (FCALL of the function library)
# and as a script (EVALSHA: Redis before 7, or an ACL without functions).
#
# Environment: CALLS_AS ["FCALL EVALSHA"], RS ["1 32"] requests per call, SCRIPTS ["one three"], CALLS [20000] requests per
# cell (CALLS / R calls), CONNS [4] redis-benchmark connections, PORT [27400], OUT
# [target/load/lua-cost-<timestamp>], CALLGRIND [0], CLIENT [random]: a fixed name sends every
# request from that one client (as the load harness's wrk does), so a call's requests share
# their counters. The scripts are written by the ignored unit test
# `store::redis::tests::dump_compiled_check_scripts` (so they are exactly what the gateway sends).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RS=${RS:-"1 32"}
SCRIPTS=${SCRIPTS:-"one three"}
CALLS=${CALLS:-20000}
CONNS=${CONNS:-4}
PORT=${PORT:-27400}
CLIENT=${CLIENT:-random}
CALLS_AS=${CALLS_AS:-"FCALL EVALSHA"}
ID=__rand_int__
[ "$CLIENT" = random ] || ID=$CLIENT
OUT=${OUT:-$ROOT/target/load/lua-cost-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

(cd "$ROOT" && RATEGATE_DUMP_DIR="$OUT" cargo test -q --lib \
  store::redis::tests::dump_compiled_check_scripts -- --ignored >/dev/null)

CALLGRIND=${CALLGRIND:-0}
GRIND=()
[ "$CALLGRIND" = 1 ] && GRIND=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p")
"${GRIND[@]}" redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" \
  --logfile "$OUT/redis.log" 2>"$OUT/valgrind.log" &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null || true; wait $REDIS_PID 2>/dev/null || true' EXIT
cli() { redis-cli -p "$PORT" "$@"; }
until cli PING >/dev/null 2>&1; do sleep 0.1; done

# Instructions counted since the last zeroing, and zero them again (CALLGRIND=1 only).
instructions() {
  local n
  n=$(find "$OUT" -name "callgrind.$REDIS_PID.*" | wc -l)
  callgrind_control -d "$REDIS_PID" >/dev/null 2>&1
  until [ -s "$OUT/callgrind.$REDIS_PID.$((n + 1))" ]; do sleep 0.1; done
  sleep 0.2
  callgrind_annotate "$OUT/callgrind.$REDIS_PID.$((n + 1))" 2>/dev/null |
    awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
  callgrind_control -z "$REDIS_PID" >/dev/null 2>&1
}

printf '%-6s %-7s %4s %14s %14s %16s\n' script call R usec_per_call usec_per_req instructions/req
for script in $SCRIPTS; do
  sha=$(cli -x SCRIPT LOAD <"$OUT/check-$script.lua")
  cli -x FUNCTION LOAD REPLACE <"$OUT/check-$script.library.lua" >/dev/null
  fn=$(cat "$OUT/check-$script.function")
  case $script in one) n=1 ;; three) n=3 ;; esac
  for r in $RS; do
  for call in $CALLS_AS; do
    case $call in EVALSHA) target=$sha ;; FCALL) target=$fn ;; *) echo "CALLS_AS: EVALSHA or FCALL" >&2; exit 2 ;; esac
    keys=() args=("" "$r")
    for _ in $(seq "$r"); do
      keys+=("b:{i:$ID}:b" "b:{i:$ID}:v:f")
      [ "$n" = 3 ] && keys+=("b:{i:$ID}:v:s" "b:{g}:v:t")
      args+=(1 $((n * 64 + 3)))  # cost 1; shape: n policies, block entry, single group
    done
    # One call by hand first: every request must be allowed (outcome 0: its reply's first
    # 8 bytes are zero, the script packing each reply in one string of 8-byte integers).
    first=$(cli --no-raw "$call" "$target" "${#keys[@]}" "${keys[@]//__rand_int__/1}" "${args[@]}" |
      head -1)
    case $first in
      *'1) "\x00\x00\x00\x00\x00\x00\x00\x00'*) ;; # the index is right-aligned
      *) echo "the script did not allow: $first" >&2; exit 1 ;;
    esac
    cli CONFIG RESETSTAT >/dev/null
    [ "$CALLGRIND" = 1 ] && instructions >/dev/null
    redis-benchmark -p "$PORT" -c "$CONNS" -n $((CALLS / r)) -r 1000000 -q \
      "$call" "$target" "${#keys[@]}" "${keys[@]}" "${args[@]}" >"$OUT/bench-$script-$call-$r.txt"
    stats=$(cli INFO commandstats | tr -d '\r' | grep "^cmdstat_${call,,}:")
    failed=$(sed -n 's/.*failed_calls=\([0-9]*\).*/\1/p' <<<"$stats")
    [ "${failed:-0}" = 0 ] || { echo "failed calls: $stats" >&2; exit 1; }
    per_call=$(sed -n 's/.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")
    ir=n/a
    [ "$CALLGRIND" = 1 ] && ir=$(($(instructions) / (CALLS / r * r)))
    printf '%-6s %-7s %4s %14s %14.2f %16s\n' "$script" "$call" "$r" "$per_call" "$(echo "$per_call / $r" | bc -l)" "$ir"
  done
  done
done
