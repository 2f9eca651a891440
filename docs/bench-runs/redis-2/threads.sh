#!/usr/bin/env bash
# threads.sh PID OUT: every second, per-thread utime+stime ticks of PID
pid=$1; out=$2
echo "t,tid,name,ticks" > "$out"
while kill -0 "$pid" 2>/dev/null; do
  now=$(date +%s)
  for t in /proc/$pid/task/*; do
    n=$(cat $t/comm 2>/dev/null); v=$(sed 's/.*) //' $t/stat 2>/dev/null | awk '{print $12+$13}')
    echo "$now,${t##*/},$n,$v" >> "$out"
  done
  sleep 1
done
