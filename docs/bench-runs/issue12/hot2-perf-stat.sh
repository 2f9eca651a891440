#!/usr/bin/env bash
# perf stat of one gateway binary under wrk c=8 /allowed, reusing the callgrind run's configs.
set -u
export LOAD_DIR=/work/wt/hot2/benches/load
BIN=$1; TAG=$2; PATHN=${3:-/allowed}
D=/tmp/hot2-cg-s1
nginx -p $D/upstream -c $D/upstream/nginx.conf & NG=$!
sleep 1
RUST_LOG=warn $BIN --log-format json run --config $D/rategate.toml >/tmp/hot2-perf-$TAG.log 2>&1 & GW=$!
sleep 2
wrk -t1 -c8 -d2s http://127.0.0.1:22502$PATHN >/dev/null
( sleep 0.5; perf stat -e context-switches,task-clock,cpu-migrations -p $GW -- sleep 4 2>/tmp/hot2-perf-$TAG.stat ) &
P=$!
wrk -t1 -c8 -d5s -s /work/wt/hot2/benches/load/plain.lua http://127.0.0.1:22502$PATHN | grep RESULT > /tmp/hot2-perf-$TAG.wrk
wait $P
kill $GW; wait $GW 2>/dev/null; kill $NG; wait $NG 2>/dev/null
cat /tmp/hot2-perf-$TAG.wrk; grep -E "context-switches|task-clock|migrations" /tmp/hot2-perf-$TAG.stat
