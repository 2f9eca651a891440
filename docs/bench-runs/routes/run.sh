#!/bin/bash
# Interleaved: main's route/find_50, then this branch's find_50 and find_500, REPS times.
set -e
cd $DIR
for rep in 1 2 3; do
  (cd main && ../hot_path-main --bench 'route/find_' --warm-up-time 1 --measurement-time 3 --noplot > ../main-$rep.log 2>&1)
  for d in main; do python3 - "$d" "$rep" <<'PY'
import json,glob,sys,os
d,rep=sys.argv[1],sys.argv[2]
for f in sorted(glob.glob(f"{d}/target/criterion/route_find_*/*/new/estimates.json")):
    e=json.load(open(f)); print(d, rep, f.split('/')[3], f.split('/')[4], round(e['median']['point_estimate'],1))
PY
  done
  (cd routes && ../hot_path-routes --bench 'route/find_' --warm-up-time 1 --measurement-time 3 --noplot > ../routes-$rep.log 2>&1)
  python3 - routes "$rep" <<'PY'
import json,glob,sys
d,rep=sys.argv[1],sys.argv[2]
for f in sorted(glob.glob(f"{d}/target/criterion/route_find_*/*/new/estimates.json")):
    e=json.load(open(f)); print(d, rep, f.split('/')[3], f.split('/')[4], round(e['median']['point_estimate'],1))
PY
done
