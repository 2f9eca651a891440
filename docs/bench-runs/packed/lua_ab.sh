#!/usr/bin/env bash
# Interleaved A/B of check scripts on one redis-server under callgrind: instructions per request.
# usage: put main's and this branch's dumped scripts (benches/load/lua_cost.sh writes them,
# check-one.lua and check-three.lua) as base-*.lua and new-*.lua in the current directory, then
#   REPS=2 bash lua_ab.sh
set -euo pipefail
PORT=27471; OUT=${OUT:-/tmp/lua-ab}; rm -rf $OUT; mkdir -p $OUT
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p" redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no --dir $OUT --logfile $OUT/redis.log 2>$OUT/vg.log &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
until redis-cli -p $PORT PING >/dev/null 2>&1; do sleep 0.1; done
dumpz() { local n; n=$(find $OUT -name "callgrind.$PID.*" | wc -l); callgrind_control -d $PID >/dev/null 2>&1; until [ -s "$OUT/callgrind.$PID.$((n+1))" ]; do sleep 0.1; done; sleep 0.2; callgrind_annotate "$OUT/callgrind.$PID.$((n+1))" 2>/dev/null | awk '/PROGRAM TOTALS/ && !d {gsub(",","",$1); print $1; d=1}'; callgrind_control -z $PID >/dev/null 2>&1; }
CALLS=${CALLS:-2000}
for rep in $(seq ${REPS:-2}); do
for script in one three; do
  case $script in one) n=1 ;; three) n=3 ;; esac
  for r in 1 4 32; do
    keys=() args=("" "$r")
    for _ in $(seq "$r"); do
      keys+=("b:{i:__rand_int__}:b" "b:{i:__rand_int__}:v:f")
      [ "$n" = 3 ] && keys+=("b:{i:__rand_int__}:v:s" "b:{g}:v:t")
      args+=(1 $((n * 64 + 3)))
    done
    line="$script R=$r"
    for v in base new; do
      sha=$(redis-cli -p $PORT -x SCRIPT LOAD < $v-$script.lua)
      dumpz >/dev/null
      redis-benchmark -p $PORT -c 4 -n $((CALLS / r)) -r 1000000 -q EVALSHA $sha ${#keys[@]} "${keys[@]}" "${args[@]}" >/dev/null
      line="$line $v=$(( $(dumpz) / (CALLS / r * r) ))"
    done
    echo "$line"
  done
done
done
