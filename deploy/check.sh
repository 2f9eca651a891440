#!/usr/bin/env bash
# Deployment kit checks.   usage: deploy/check.sh PATH/TO/rategate
#
#  1. configs:    every TOML under config/ and deploy/, and the TOML inside the k8s ConfigMap, is
#                 valid TOML using only docs/reference.md section 2 keys and values, and `rategate check`
#                 accepts it (and rejects a config with an unknown key, exit 2)
#  2. prometheus: `promtool check config|rules` and `promtool test rules` (Debian package
#                 `prometheus` is installed with apt-get when missing and possible, else skipped);
#                 the dashboard's PromQL parses; `amtool check-config` when amtool is present
#  3. metrics:    the Grafana dashboard is valid JSON with a datasource variable, and every
#                 rategate_* name in it and in the alert rules is a reference metric the binary exports
#  4. wiring:     compose file, Dockerfile and k8s manifests agree with the configs they carry
#                 (ports, host names, mounted files, secrets, probes, grace periods)
#  5. redis:      a redis-server started with deploy/redis/redis.conf and users.acl lets the
#                 `rategate` user run what the gateway sends (and an EVAL calling every in-script
#                 command on a rategate: key) and refuses everything dangerous or off-prefix
#
# Prints one line per check and a last line `deploy-checks: N passed, N failed[, N skipped]`;
# exits 1 if any check failed.
set -euo pipefail
# `python3 ... | tally` must count in this shell, not in a pipeline subshell.
shopt -s lastpipe

if [ $# -lt 1 ]; then
  echo "usage: $0 PATH/TO/rategate" >&2
  exit 64
fi
BIN=$1
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rategate-deploy-check.XXXXXX")
REDIS_PID=
cleanup() {
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

PASSED=0
FAILED=0
SKIPPED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "skip - $*"; }
section() { echo; echo "== $*"; }
# Show a command's output indented (for failures).
indent() { sed 's/^/       | /'; }

# Python checks print `ok <text>` / `FAIL <text>` / `skip <text>` lines; tally them here.
tally() {
  local line
  while IFS= read -r line; do
    case $line in
      "ok "*) pass "${line#ok }" ;;
      "FAIL "*) fail "${line#FAIL }" ;;
      "skip "*) skip "${line#skip }" ;;
      *) echo "       | $line" ;;
    esac
  done
}

# pycheck ARGS... <<'PY': run a python check script; a crash is a failed check, not an abort.
pycheck() {
  local rc=0
  python3 - "$@" 2>&1 || rc=$?
  [ $rc = 0 ] || echo "FAIL a python check crashed (exit $rc), see the traceback above"
}

apt_install() {
  # apt_install PACKAGE...: only as root with apt-get; never starts services (policy-rc.d).
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" = 0 ] || return 1
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && added=1
  fi
  local rc=0
  {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"
  } > "$TMP/apt.log" 2>&1 || rc=$?
  [ -n "$added" ] && rm -f "$policy"
  [ $rc = 0 ] || { indent < "$TMP/apt.log" | tail -5; return 1; }
}

# ------------------------------------------------------------------------------------------------
section "prerequisites"
if command -v python3 >/dev/null 2>&1; then
  pass "python3 present"
else
  fail "python3 not found: most checks need it"
  echo "deploy-checks: $PASSED passed, $FAILED failed"
  exit 1
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check pyyaml > "$TMP/pip.log" 2>&1 \
    || pip3 install --quiet pyyaml >> "$TMP/pip.log" 2>&1 || true
fi
if python3 -c 'import yaml' 2>/dev/null; then
  pass "PyYAML available"
  HAVE_YAML=1
else
  fail "PyYAML not available and pip could not install it"
  indent < "$TMP/pip.log" | tail -5
  HAVE_YAML=
fi
if python3 -c 'import tomllib' 2>/dev/null; then HAVE_TOMLLIB=1; else HAVE_TOMLLIB=; fi
[ -n "$HAVE_TOMLLIB" ] && pass "python3 has tomllib" || fail "python3 lacks tomllib (needs 3.11+)"

# The metric names docs/reference.md section 5 defines (histograms also expose _bucket, _sum and _count).
SPEC_METRICS="rategate_requests_total rategate_request_duration_seconds rategate_upstream_duration_seconds
rategate_upstream_errors_total rategate_policy_rejections_total rategate_store_duration_seconds
rategate_store_errors_total rategate_store_fallback_active rategate_blocked_clients
rategate_config_reloads_total rategate_connections_active rategate_store_evictions_total
rategate_connections_rejected_total rategate_connections_timed_out_total rategate_alerts_total
rategate_store_calls_total rategate_store_checks_total rategate_store_activity_dropped_total
rategate_store_check_batch_size rategate_auth_total rategate_tunnels_open rategate_tunnels_total
rategate_upstream_target_requests_total rategate_upstream_target_errors_total rategate_upstream_target_ejected
rategate_upstream_connections_open rategate_upstream_connections_refused_total"
SPEC_HISTOGRAMS="rategate_request_duration_seconds rategate_upstream_duration_seconds rategate_store_duration_seconds
rategate_store_check_batch_size"
export SPEC_METRICS SPEC_HISTOGRAMS

# ------------------------------------------------------------------------------------------------
section "1. configs"

# Extract the TOML from the k8s ConfigMap.
K8S_TOML=$TMP/k8s-configmap-rategate.toml
if [ -n "$HAVE_YAML" ]; then
  pycheck "$K8S_TOML" <<'PY' | tally
import sys, yaml, glob
out = sys.argv[1]
found = []
for f in sorted(glob.glob("deploy/k8s/*.yaml")):
    for doc in yaml.safe_load_all(open(f)):
        if doc and doc.get("kind") == "ConfigMap" and "rategate.toml" in (doc.get("data") or {}):
            found.append((f, doc["data"]["rategate.toml"]))
if len(found) == 1:
    open(out, "w").write(found[0][1])
    print(f"ok k8s ConfigMap TOML extracted from {found[0][0]}")
else:
    print(f"FAIL k8s: expected one ConfigMap with a rategate.toml key, found {len(found)}")
PY
fi

TOMLS=()
# Files under an `overrides/` directory are tier files (`overrides_file`), not configs: they are
# checked with the config that names them.
while IFS= read -r f; do TOMLS+=("$f"); done < <(find config deploy -name '*.toml' -type f -not -path '*/overrides/*' | sort)
[ -s "$K8S_TOML" ] && TOMLS+=("$K8S_TOML")

# Dummy values for every ${NAME} the files reference (secrets in real deployments).
declare -A SEEN_ENV=()
ENV_ARGS=(RUST_BACKTRACE=0)
for name in $({ grep -ohE '\$\{[A-Za-z_][A-Za-z0-9_]*\}' "${TOMLS[@]}" || true; } | sort -u | tr -d '${}'); do
  if [ -z "${SEEN_ENV[$name]:-}" ]; then SEEN_ENV[$name]=1; ENV_ARGS+=("$name=dummy-$name-0123456789abcdef"); fi
done

# docs/reference.md section 2 schema, independent of the binary (keys, enums, durations, names, references).
if [ -n "$HAVE_TOMLLIB" ]; then
  pycheck "${TOMLS[@]}" <<'PY' | tally
import os, sys, re, tomllib, ipaddress

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DUR = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
KEYS = {
    "": {"server", "admin", "store", "access", "upstream", "policy", "route", "alerts", "auth"},
    "server": {"listen", "trusted_proxies", "ipv6_prefix", "header_read_timeout", "max_header_bytes", "shutdown_grace", "access_log", "tls",
               "forward_client_ip_headers", "path_semicolons", "escaped_slashes",
               "idle_timeout", "send_timeout", "max_connections", "tunnel_idle_timeout"},
    "alerts": {"webhook_url", "format", "token", "token_env", "rejections_threshold", "threshold_window", "timeout", "max_retries", "queue_size"},
    "server.tls": {"cert", "key", "client_ca", "client_auth"},
    "auth": {"name", "algorithms", "secret", "public_key", "jwks_file", "issuer", "audience", "leeway",
             "token", "on_invalid", "required"},
    "admin": {"listen", "token"},
    "store": {"kind", "url", "key_prefix", "timeout", "on_error", "max_memory_keys", "batch_max",
              "batch_in_flight", "batch_queue"},
    "access": {"allow", "deny"},
    "upstream": {"name", "url", "targets", "balance", "connect_timeout", "timeout", "consecutive_failures",
                 "base_ejection_time", "max_ejection_time", "health_check", "ca", "sni", "client_cert",
                 "client_key", "resolve_interval"},
    "upstream.health_check": {"path", "interval", "timeout", "healthy", "unhealthy"},
    "policy": {"name", "algorithm", "limit", "window", "burst", "key", "block_for", "mode",
               "lease", "block_multiplier", "block_max", "block_memory", "count_status", "count",
               "overrides", "overrides_file", "overrides_from", "retry_after_jitter"},
    "route": {"name", "path", "path_prefix", "methods", "host", "upstream", "policies", "strip_prefix", "respond",
              "cost", "cost_header", "max_cost", "case_insensitive", "headers", "auth", "upgrade", "retry"},
    "route.retry": {"attempts", "on"},
    "route.respond": {"status", "body"},
}

def seconds(v):
    m = DUR.match(v) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"bad duration {v!r}")
    return int(m.group(1)) * UNIT[m.group(2)]

def check(path):
    errs = []
    def e(msg): errs.append(msg)
    try:
        doc = tomllib.load(open(path, "rb"))
    except Exception as x:
        return [f"not valid TOML: {x}"]
    def keys(table, where):
        if not isinstance(table, dict):
            e(f"`{where}` must be a table"); return {}
        for k in table:
            if k not in KEYS[where]:
                e(f"unknown key `{(where + '.') if where else ''}{k}`")
        return table
    keys(doc, "")
    for arr in ("upstream", "policy", "route", "auth"):
        if arr in doc and not isinstance(doc[arr], list):
            e(f"`{arr}` must be an array of tables ([[{arr}]])")
    server = keys(doc.get("server", {}), "server")
    if "tls" in server: keys(server["tls"], "server.tls")
    admin = keys(doc.get("admin", {}), "admin")
    store = keys(doc.get("store", {}), "store")
    keys(doc.get("access", {}), "access")
    alerts = keys(doc.get("alerts", {}), "alerts")
    if alerts and alerts.get("format", "json") not in ("json", "slack"):
        e(f"alerts.format {alerts['format']!r} is not json or slack")
    for k in ("threshold_window", "timeout"):
        if k in alerts:
            try: seconds(alerts[k])
            except ValueError as x: e(f"alerts.{k}: {x}")
    if "access_log" in server and not isinstance(server["access_log"], bool):
        e("server.access_log must be true or false")
    if "forward_client_ip_headers" in server and not isinstance(server["forward_client_ip_headers"], bool):
        e("server.forward_client_ip_headers must be true or false")
    if server.get("path_semicolons", "reject") not in ("reject", "strip", "keep"):
        e(f"server.path_semicolons {server['path_semicolons']!r} is not reject, strip or keep")
    if server.get("escaped_slashes", "keep") not in ("keep", "reject", "decode"):
        e(f"server.escaped_slashes {server['escaped_slashes']!r} is not keep, reject or decode")
    for k in ("header_read_timeout", "shutdown_grace", "idle_timeout", "send_timeout"):
        if k in server:
            try: seconds(server[k])
            except ValueError as x: e(f"server.{k}: {x}")
    for t in ("listen",):
        for sect, tbl in (("server", server), ("admin", admin)):
            if t in tbl and not re.match(r"^(\$\{\w+\}|\[?[0-9a-fA-F:.]+\]?:[0-9]+)$", tbl[t]):
                e(f"{sect}.listen {tbl[t]!r} is not HOST:PORT")
    for sect in ("allow", "deny"):
        for c in doc.get("access", {}).get(sect, []):
            try: ipaddress.ip_network(c, strict=False)
            except ValueError: e(f"access.{sect}: bad CIDR {c!r}")
    for c in server.get("trusted_proxies", []):
        try: ipaddress.ip_network(c, strict=False)
        except ValueError: e(f"server.trusted_proxies: bad CIDR {c!r}")
    alisten = admin.get("listen", "127.0.0.1:9100")
    host = alisten.rsplit(":", 1)[0].strip("[]")
    try: loopback = ipaddress.ip_address(host).is_loopback
    except ValueError: loopback = False
    if not loopback and "token" not in admin:
        e("admin.token is required because admin.listen is not loopback")
    if store.get("kind", "memory") not in ("memory", "redis"): e(f"store.kind {store.get('kind')!r}")
    if store.get("on_error", "fallback") not in ("fallback", "allow", "deny"): e(f"store.on_error {store.get('on_error')!r}")
    if store.get("kind") == "redis" and not re.match(r"^(redis|rediss|redis-sentinel|redis-cluster)://", store.get("url", "redis://")):
        e("store.url scheme must be redis, rediss, redis-sentinel or redis-cluster")
    if "timeout" in store:
        try: seconds(store["timeout"])
        except ValueError as x: e(f"store.timeout: {x}")
    if any(c in store.get("key_prefix", "") for c in "{}"): e("store.key_prefix must not contain braces")
    names = {}
    for arr in ("upstream", "policy", "route", "auth"):
        names[arr] = set()
        for i, item in enumerate(doc.get(arr, [])):
            keys(item, arr)
            n = item.get("name")
            if not isinstance(n, str) or not NAME.match(n): e(f"{arr}[{i}].name {n!r} does not match [A-Za-z0-9_.:-]{{1,64}}")
            elif n in names[arr]: e(f"duplicate {arr} name {n!r}")
            else: names[arr].add(n)
    for u in doc.get("upstream", []):
        if ("url" in u) == ("targets" in u): e(f"upstream {u.get('name')}: exactly one of url / targets")
        for url in ([u["url"]] if "url" in u else []) + list(u.get("targets", [])):
            if not re.match(r"^(https?://|h2c://|\$\{)", url): e(f"upstream {u.get('name')}: {url!r} must be http://, https:// or h2c://")
        if u.get("balance", "round_robin") not in ("round_robin", "least_requests", "hash_client"):
            e(f"upstream {u.get('name')}: balance {u['balance']!r}")
        if "health_check" in u:
            keys(u["health_check"], "upstream.health_check")
            if not str(u["health_check"].get("path", "")).startswith("/"): e(f"upstream {u.get('name')}: health_check.path must start with /")
        for k in ("connect_timeout", "timeout", "base_ejection_time", "max_ejection_time", "resolve_interval"):
            if k in u:
                try: seconds(u[k])
                except ValueError as x: e(f"upstream {u.get('name')}.{k}: {x}")
    for p in doc.get("policy", []):
        n = p.get("name")
        alg = p.get("algorithm")
        if alg not in ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "concurrency"):
            e(f"policy {n}: algorithm {alg!r}")
        if not isinstance(p.get("limit"), int) or p["limit"] < 1: e(f"policy {n}: limit must be a positive integer")
        if alg == "concurrency":
            if "window" in p: e(f"policy {n}: window does not apply to concurrency (use lease)")
            if "lease" in p:
                try:
                    if not 1 <= seconds(p["lease"]) <= 86400: e(f"policy {n}: lease must be between 1s and 24h")
                except ValueError as x: e(f"policy {n}: lease: {x}")
        else:
            if "lease" in p: e(f"policy {n}: lease is for concurrency only")
            try: seconds(p.get("window"))
            except ValueError as x: e(f"policy {n}: window: {x}")
        if "burst" in p and alg != "token_bucket": e(f"policy {n}: burst is for token_bucket only")
        if "block_for" in p:
            try:
                if seconds(p["block_for"]) < 1: e(f"policy {n}: block_for must be at least 1s")
            except ValueError as x: e(f"policy {n}: block_for: {x}")
        if any(k in p for k in ("block_multiplier", "block_max", "block_memory")):
            if "block_for" not in p: e(f"policy {n}: block_multiplier/block_max/block_memory need block_for")
            if "block_multiplier" not in p: e(f"policy {n}: block_max/block_memory need block_multiplier")
            m = p.get("block_multiplier", 2)
            if not isinstance(m, int) or not 2 <= m <= 1000: e(f"policy {n}: block_multiplier must be an integer 2..1000")
            for k in ("block_max", "block_memory"):
                if k in p:
                    try: seconds(p[k])
                    except ValueError as x: e(f"policy {n}: {k}: {x}")
        if "count_status" in p and "count" in p: e(f"policy {n}: count_status and count are mutually exclusive")
        if "count" in p and p["count"] != "errors": e(f"policy {n}: count must be \"errors\"")
        for st in p.get("count_status", []):
            if not isinstance(st, int) or not 100 <= st <= 599: e(f"policy {n}: count_status {st!r} is not a status 100..599")
        if alg == "concurrency" and ("count" in p or "count_status" in p): e(f"policy {n}: counting by response does not apply to concurrency")
        if "retry_after_jitter" in p:
            try:
                if not 1 <= seconds(p["retry_after_jitter"]) <= 3600: e(f"policy {n}: retry_after_jitter must be between 1s and 1h")
            except ValueError as x: e(f"policy {n}: retry_after_jitter: {x}")
        if p.get("mode", "enforce") not in ("enforce", "shadow"): e(f"policy {n}: mode {p.get('mode')!r}")
        for k in p.get("key", ["ip"]):
            if k not in ("ip", "path", "method", "route", "global", "jwt:sub", "tls:subject", "tls:fingerprint") and not re.match(
                    r"^(header:[A-Za-z0-9!#$%&'*+.^_`|~-]+|param:[A-Za-z0-9_]{1,64}|query:[^&=]{1,128}|jwt:claim:[A-Za-z0-9_.:/-]{1,64})$", k):
                e(f"policy {n}: key component {k!r}")
        tiers = dict(p.get("overrides", {}))
        if "overrides_file" in p:
            tier_path = os.path.join(os.path.dirname(path), p["overrides_file"])
            try:
                from_file = tomllib.load(open(tier_path, "rb"))
                both = set(from_file) & set(tiers)
                if both: e(f"policy {n}: {sorted(both)} both inline and in {tier_path}")
                tiers.update(from_file)
            except (OSError, tomllib.TOMLDecodeError) as x: e(f"policy {n}: overrides_file {tier_path}: {x}")
        if tiers or "overrides" in p or "overrides_file" in p:
            if len(p.get("key", ["ip"])) != 1 or p.get("key") == ["global"]:
                e(f"policy {n}: overrides need a key of one component other than global")
        for k, v in tiers.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1: e(f"policy {n}: override {k!r} = {v!r} is not a positive integer")
    for r in doc.get("route", []):
        n = r.get("name")
        if ("path" in r) == ("path_prefix" in r): e(f"route {n}: exactly one of path / path_prefix")
        if "auth" in r and r["auth"] not in names["auth"]: e(f"route {n}: unknown auth {r['auth']!r}")
        if "retry" in r: keys(r["retry"], "route.retry")
        for proto in r.get("upgrade", []):
            if str(proto).lower() != "websocket": e(f"route {n}: upgrade protocol {proto!r}")
        if ("upstream" in r) == ("respond" in r): e(f"route {n}: exactly one of upstream / respond")
        if "respond" in r:
            keys(r["respond"], "route.respond")
            st = r["respond"].get("status")
            if not isinstance(st, int) or isinstance(st, bool) or not 200 <= st <= 599: e(f"route {n}: respond.status {st!r} must be 200..599")
        if "upstream" in r and r["upstream"] not in names["upstream"]: e(f"route {n}: unknown upstream {r['upstream']!r}")
        for pol in r.get("policies", []):
            if pol not in names["policy"]: e(f"route {n}: unknown policy {pol!r}")
        if "max_cost" in r and "cost_header" not in r: e(f"route {n}: max_cost needs cost_header")
        if "cost_header" in r and not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", r["cost_header"]): e(f"route {n}: cost_header {r['cost_header']!r} is not a header name")
        for k in ("cost", "max_cost"):
            if k in r and (not isinstance(r[k], int) or r[k] < 1): e(f"route {n}: {k} must be a positive integer")
        if "cost_header" in r and r.get("cost", 1) > r.get("max_cost", 100): e(f"route {n}: cost is above max_cost")
        if "case_insensitive" in r and not isinstance(r["case_insensitive"], bool): e(f"route {n}: case_insensitive must be true or false")
    return errs

for path in sys.argv[1:]:
    errs = check(path)
    if errs:
        print(f"FAIL {path}: TOML and reference schema")
        for x in errs: print(f"    {x}")
    else:
        print(f"ok {path}: valid TOML, reference keys and values only")
PY
fi

# `rategate check` on every file; first make sure the binary's check really validates.
if [ ! -x "$BIN" ]; then
  fail "rategate binary $BIN is not an executable file"
else
  printf '[server]\nlisten = "127.0.0.1:8080"\nno_such_key = 1\n' > "$TMP/unknown-key.toml"
  rc=0
  env "${ENV_ARGS[@]}" timeout 30 "$BIN" check --config "$TMP/unknown-key.toml" > "$TMP/out" 2>&1 || rc=$?
  if [ $rc = 2 ]; then
    pass "rategate check rejects an unknown key (exit 2)"
  else
    fail "rategate check on a config with an unknown key: exit $rc, want 2"
    indent < "$TMP/out" | tail -5
  fi
  for f in "${TOMLS[@]}"; do
    rc=0
    env "${ENV_ARGS[@]}" timeout 30 "$BIN" check --config "$f" > "$TMP/out" 2>&1 || rc=$?
    if [ $rc = 0 ]; then
      pass "rategate check --config $f"
    else
      fail "rategate check --config $f (exit $rc)"
      indent < "$TMP/out" | tail -5
    fi
  done
fi

# ------------------------------------------------------------------------------------------------
section "2. prometheus and alertmanager"
if ! command -v promtool >/dev/null 2>&1; then
  echo "       | promtool not found; installing Debian package prometheus (promtool only is used)"
  apt_install prometheus || true
fi
if command -v promtool >/dev/null 2>&1; then
  if promtool check config deploy/prometheus/prometheus.yml > "$TMP/out" 2>&1; then
    pass "promtool check config deploy/prometheus/prometheus.yml"
  else
    fail "promtool check config deploy/prometheus/prometheus.yml"; indent < "$TMP/out"
  fi
  for f in deploy/prometheus/rules/*.yml; do
    if promtool check rules "$f" > "$TMP/out" 2>&1; then
      pass "promtool check rules $f"
    else
      fail "promtool check rules $f"; indent < "$TMP/out"
    fi
  done
  for f in deploy/prometheus/tests/*.yml; do
    if promtool test rules "$f" > "$TMP/out" 2>&1; then
      pass "promtool test rules $f"
    else
      fail "promtool test rules $f"; indent < "$TMP/out"
    fi
  done
  # The dashboard's queries, with Grafana's variables filled in, as recording rules.
  if python3 - "$TMP/dashboard-queries.yml" <<'PY' > "$TMP/out" 2>&1; then
import json, sys
d = json.load(open("deploy/grafana/rategate.json"))
exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"): exprs.append(t["expr"])
        walk(p.get("panels", []))
walk(d["panels"])
subst = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$job": ".*", "$instance": ".*", "$route": ".*"}
with open(sys.argv[1], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, x in enumerate(exprs):
        for k, v in subst.items(): x = x.replace(k, v)
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(x)}\n")
print(len(exprs))
PY
    n=$(tail -1 "$TMP/out")
    if promtool check rules "$TMP/dashboard-queries.yml" > "$TMP/out" 2>&1; then
      pass "the dashboard's $n PromQL queries parse (promtool)"
    else
      fail "the dashboard's PromQL queries"; indent < "$TMP/out"
    fi
  else
    fail "could not extract the dashboard's queries"; indent < "$TMP/out"
  fi
else
  skip "promtool not available (no apt-get or not root): rules not checked nor unit-tested"
fi
if command -v amtool >/dev/null 2>&1; then
  if amtool check-config deploy/compose/alertmanager/alertmanager.yml > "$TMP/out" 2>&1; then
    pass "amtool check-config deploy/compose/alertmanager/alertmanager.yml"
  else
    fail "amtool check-config deploy/compose/alertmanager/alertmanager.yml"; indent < "$TMP/out"
  fi
else
  skip "amtool not available (Debian package prometheus-alertmanager): alertmanager.yml not checked"
fi

# ------------------------------------------------------------------------------------------------
section "3. metric names (Grafana dashboard, alert rules)"
{
  export SPEC_FILE=docs/reference.md
  pycheck "$BIN" <<'PY'
import json, os, re, sys
spec = set(os.environ["SPEC_METRICS"].split())
hist = set(os.environ["SPEC_HISTOGRAMS"].split())
exported = spec | {h + s for h in hist for s in ("_bucket", "_sum", "_count")}
NAME = re.compile(r"\brategate_[a-z0-9_]+")

if os.environ.get("SPEC_FILE"):
    text = open(os.environ["SPEC_FILE"]).read()
    missing = sorted(n for n in spec if f"`{n}`" not in text)
    print(f"FAIL the built-in metric list disagrees with docs/reference.md: {missing}" if missing
          else "ok the built-in metric list matches docs/reference.md section 5")

try:
    d = json.load(open("deploy/grafana/rategate.json"))
    print("ok deploy/grafana/rategate.json is valid JSON")
except Exception as x:
    print(f"FAIL deploy/grafana/rategate.json: {x}")
    sys.exit(0)

vars_ = d.get("templating", {}).get("list", [])
dsvars = [v["name"] for v in vars_ if v.get("type") == "datasource" and v.get("query") == "prometheus"]
print(f"ok dashboard has a Prometheus datasource variable (${dsvars[0]})" if dsvars
      else "FAIL dashboard has no datasource variable of type prometheus")

exprs, bad_ds, ids = [], [], []
def walk(panels):
    for p in panels:
        ids.append(p.get("id"))
        for obj in [p] + p.get("targets", []):
            ds = obj.get("datasource")
            if p.get("type") != "row" and ds is not None and dsvars and ds.get("uid") not in (f"${{{dsvars[0]}}}", f"${dsvars[0]}"):
                bad_ds.append(p.get("title"))
        exprs.extend(t.get("expr", "") for t in p.get("targets", []))
        walk(p.get("panels", []))
walk(d.get("panels", []))
for v in vars_:
    q = v.get("query")
    exprs.append(q.get("query", "") if isinstance(q, dict) else (q or ""))
print("FAIL panels not using the datasource variable: %s" % sorted(set(bad_ds)) if bad_ds
      else "ok every panel and query uses the datasource variable")
print("FAIL duplicate panel ids" if len(ids) != len(set(ids)) else f"ok {len(ids)} panels, unique ids")

used = {n for x in exprs for n in NAME.findall(x)}
unknown = sorted(used - exported)
print(f"FAIL dashboard references metrics not in the reference: {unknown}" if unknown
      else f"ok dashboard references only reference metrics ({len(used)} names)")
bases = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in hist else n for n in used}
uncovered = sorted(spec - bases)
print(f"FAIL dashboard shows no panel for: {uncovered}" if uncovered else "ok dashboard covers every reference metric")

rules_used = set()
for f in sorted(os.listdir("deploy/prometheus/rules")):
    rules_used |= set(NAME.findall(open(os.path.join("deploy/prometheus/rules", f)).read()))
unknown = sorted(rules_used - exported)
print(f"FAIL alert rules reference metrics not in the reference: {unknown}" if unknown
      else f"ok alert rules reference only reference metrics ({len(rules_used)} names)")

# The binary carries each metric name as a string literal; histogram suffixes are added at run time.
try:
    data = open(sys.argv[1], "rb").read()
    absent = sorted(n for n in {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in hist else n
                                for n in used | rules_used} if n.encode() not in data)
    print(f"FAIL metric names not found in the binary: {absent}" if absent
          else "ok every metric name the dashboard and rules use is in the binary")
except OSError as x:
    print(f"FAIL cannot read the binary: {x}")
PY
} | tally

# ------------------------------------------------------------------------------------------------
section "4. wiring: compose, Dockerfile, Kubernetes, systemd"
if [ -n "$HAVE_YAML" ] && [ -n "$HAVE_TOMLLIB" ]; then
  pycheck "$K8S_TOML" <<'PY' | tally
import ipaddress, os, re, sys, tomllib, yaml

def ok(cond, text, why=""):
    print(f"ok {text}" if cond else f"FAIL {text}" + (f": {why}" if why else ""))

def port(listen):
    return int(listen.rsplit(":", 1)[1])

def env_refs(text):
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))

def dur(v):
    m = re.match(r"^([0-9]+)(ms|s|m|h|d)$", v)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]

# ---- Dockerfile and the config baked into the image
df = open("Dockerfile").read()
img = tomllib.load(open("deploy/docker/rategate.toml", "rb"))
exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.*)$", df, re.M) for p in line.split()}
want = {port(img["server"]["listen"]), port(img["admin"]["listen"])}
ok(exposed == want, f"Dockerfile EXPOSE {sorted(exposed)} = image config ports {sorted(want)}")
ok(re.search(r"cargo build --release --locked", df) is not None, "Dockerfile builds with cargo build --release --locked")
ok(re.search(r"^COPY deploy/docker/rategate.toml /etc/rategate/rategate.toml$", df, re.M) is not None,
   "Dockerfile installs the config at /etc/rategate/rategate.toml")
ok(re.search(r"^USER (?!0\b|root\b)\S+", df, re.M) is not None, "Dockerfile runs as a non-root user")
hc = re.search(r"HEALTHCHECK.*?/dev/tcp/127\.0\.0\.1/\$\{RATEGATE_HEALTH_PORT:-(\d+)\}.*?/healthz", df, re.S)
ok(hc is not None and int(hc.group(1)) == port(img["admin"]["listen"]),
   "HEALTHCHECK probes /healthz on the image config's admin port")
di = open(".dockerignore").read().split()
ok("target" in di and "!deploy/docker" in di, ".dockerignore drops target/ and keeps deploy/docker")

# ---- compose
cdir = "deploy/compose"
c = yaml.safe_load(open(f"{cdir}/docker-compose.yml"))
svc = c["services"]
for name, s in svc.items():
    image = s.get("image", "")
    ok(bool(re.match(r"^[\w./-]+:[\w.-]+$", image)) and not image.endswith(":latest"),
       f"compose service {name}: image {image!r} is named with a pinned tag")
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            ok(os.path.exists(os.path.normpath(os.path.join(cdir, src))), f"compose service {name}: mount source {src} exists")
rg = svc["rategate"]
ok(rg.get("build", {}).get("context") and os.path.exists(os.path.join(cdir, rg["build"]["context"], rg["build"].get("dockerfile", "Dockerfile"))),
   "compose builds rategate from the repository's Dockerfile")
mounts = {v.split(":")[1]: v.split(":")[0] for v in rg.get("volumes", [])}
cfg_src = mounts.get("/etc/rategate/rategate.toml")
ok(cfg_src is not None, "compose mounts a config at /etc/rategate/rategate.toml")
cfg_path = os.path.normpath(os.path.join(cdir, cfg_src or "rategate.toml"))
cfg_text = open(cfg_path).read()
cfg = tomllib.loads(cfg_text)
proxy_port, admin_port = port(cfg["server"]["listen"]), port(cfg["admin"]["listen"])
def published(s):
    out = {}
    for p in s.get("ports", []):
        parts = str(p).split(":")
        out[int(parts[-1].split("/")[0])] = parts
    return out
pub = published(rg)
ok(proxy_port in pub, f"compose publishes rategate's server.listen port {proxy_port}", f"published {sorted(pub)}")
ok(admin_port in pub, f"compose publishes rategate's admin.listen port {admin_port}", f"published {sorted(pub)}")
ok(admin_port not in pub or len(pub[admin_port]) == 3 and ipaddress.ip_address(pub[admin_port][0]).is_loopback,
   "compose publishes the admin port on loopback only")
missing = env_refs(cfg_text) - set(rg.get("environment", {}))
ok(not missing, "compose gives rategate every ${VAR} its config references", f"missing {sorted(missing)}")
m = re.match(r"^redis://(?:[^@]*@)?([^:/]+):(\d+)", cfg["store"]["url"])
ok(m and m.group(1) in svc and m.group(2) in [str(x) for x in svc[m.group(1)].get("expose", [])],
   f"store.url host {m.group(1) if m else '?'} is a compose service exposing that port")
ok(m and m.group(1) in rg.get("depends_on", {}), "rategate depends on its Redis service")
redis_cmd = " ".join(svc["redis"].get("command", []))
ok("users.acl" in redis_cmd and "redis.conf" in redis_cmd, "compose Redis runs with deploy/redis/redis.conf and the ACL file")
ok(re.match(r"^redis://rategate:", cfg["store"]["url"]) is not None, "compose rategate connects as the `rategate` ACL user")
for u in cfg.get("upstream", []):
    m = re.match(r"^https?://([^:/]+):(\d+)", u["url"])
    ok(m and m.group(1) in svc and m.group(2) in [str(x) for x in svc[m.group(1)].get("expose", [])],
       f"upstream {u['name']} ({u['url']}) is a compose service exposing that port")
grace = re.match(r"^(\d+)s$", rg.get("stop_grace_period", "10s"))
# + 3 s: connections cut at the grace (up to 1 s), then the store settlement flush (2 s).
ok(grace and int(grace.group(1)) > dur(cfg["server"].get("shutdown_grace", "30s")) + 3,
   "compose stop_grace_period is longer than server.shutdown_grace + 3 s")

prom = svc["prometheus"]
pm = {v.split(":")[1]: v.split(":")[0] for v in prom.get("volumes", [])}
pcfg_src = pm.get("/etc/prometheus/prometheus.yml")
ok(pcfg_src is not None, "compose mounts deploy/prometheus/prometheus.yml into Prometheus")
pcfg = yaml.safe_load(open(os.path.normpath(os.path.join(cdir, pcfg_src))))
jobs = {j["job_name"]: j for j in pcfg["scrape_configs"]}
targets = [t for sc in jobs.get("rategate", {}).get("static_configs", []) for t in sc["targets"]]
ok(targets == [f"rategate:{admin_port}"], f"Prometheus job `rategate` scrapes rategate:{admin_port}", f"targets {targets}")
ok(jobs.get("rategate", {}).get("metrics_path", "/metrics") == "/metrics", "Prometheus scrapes /metrics")
rule_dirs = {os.path.dirname(g) for g in pcfg.get("rule_files", [])}
ok(all(d in pm and any(f.endswith(".yml") for f in os.listdir(os.path.normpath(os.path.join(cdir, pm[d])))) for d in rule_dirs) and rule_dirs,
   "Prometheus rule_files point at the mounted deploy/prometheus/rules")
am_targets = [t for a in pcfg["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
ok(all(t.split(":")[0] in svc and int(t.split(":")[1]) in published(svc[t.split(":")[0]]) for t in am_targets) and am_targets,
   f"Prometheus alerts go to the alertmanager service {am_targets}")
am = svc["alertmanager"]
amm = {v.split(":")[1]: v.split(":")[0] for v in am.get("volumes", [])}
amcfg = yaml.safe_load(open(os.path.normpath(os.path.join(cdir, amm["/etc/alertmanager/alertmanager.yml"]))))
kinds = {k for r in amcfg["receivers"] for k in r if k.endswith("_configs")}
ok({"slack_configs", "email_configs"} <= kinds, "Alertmanager has Slack and e-mail receivers")

gf = svc["grafana"]
gm = {v.split(":")[1]: v.split(":")[0] for v in gf.get("volumes", [])}
prov = os.path.normpath(os.path.join(cdir, gm.get("/etc/grafana/provisioning", "missing")))
ds = yaml.safe_load(open(f"{prov}/datasources/prometheus.yml"))["datasources"][0]
dsm = re.match(r"^http://([^:/]+):(\d+)", ds["url"])
ok(dsm and dsm.group(1) in svc and int(dsm.group(2)) in published(svc[dsm.group(1)]),
   f"Grafana datasource {ds['url']} is the prometheus service")
dash_dir = yaml.safe_load(open(f"{prov}/dashboards/rategate.yml"))["providers"][0]["options"]["path"]
dash_mounts = [src for dst, src in gm.items() if os.path.dirname(dst) == dash_dir and dst.endswith(".json")]
ok(dash_mounts and all(os.path.normpath(os.path.join(cdir, s)) == "deploy/grafana/rategate.json" for s in dash_mounts),
   "Grafana provisions deploy/grafana/rategate.json from the provider's path")

# ---- Kubernetes
docs = [d for f in sorted(os.listdir("deploy/k8s")) if f.endswith(".yaml") and not f.startswith("secret")
        for d in yaml.safe_load_all(open(f"deploy/k8s/{f}")) if d]
kinds = {}
for d in docs: kinds.setdefault(d["kind"], []).append(d)
for k in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
    ok(k in kinds, f"k8s has a {k}")
kz = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
ok(all(os.path.exists(f"deploy/k8s/{r}") for r in kz["resources"]), "kustomization lists existing files")
dep = kinds["Deployment"][0]
spec = dep["spec"]; pod = spec["template"]["spec"]; ctr = pod["containers"][0]
ktext = open(sys.argv[1]).read()
kcfg = tomllib.loads(ktext)
cports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
ok(cports.get("http") == port(kcfg["server"]["listen"]), "k8s containerPort http = ConfigMap server.listen port")
ok(cports.get("admin") == port(kcfg["admin"]["listen"]), "k8s containerPort admin = ConfigMap admin.listen port")
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    g = ctr.get(probe, {}).get("httpGet", {})
    ok(g.get("path") == path and g.get("port") in ("admin", cports.get("admin")), f"k8s {probe} GET {path} on the admin port")
envs = {e["name"]: e for e in ctr.get("env", [])}
missing = env_refs(ktext) - set(envs)
ok(not missing, "k8s Deployment sets every ${VAR} the ConfigMap references", f"missing {sorted(missing)}")
ok(all("secretKeyRef" in envs[n].get("valueFrom", {}) for n in env_refs(ktext) if n in envs),
   "those variables come from a Secret")
ok(spec.get("replicas", 1) >= 2, f"k8s runs several replicas ({spec.get('replicas')})")
r = ctr.get("resources", {})
ok(r.get("requests", {}).get("cpu") and r.get("requests", {}).get("memory") and r.get("limits", {}).get("memory"), "k8s resources set")
sc, psc = ctr.get("securityContext", {}), pod.get("securityContext", {})
ok(psc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
   and sc.get("capabilities", {}).get("drop") == ["ALL"], "k8s securityContext: non-root, read-only root, no privilege escalation, no capabilities")
vols = {v["name"]: v for v in pod.get("volumes", [])}
mount = next((m for m in ctr.get("volumeMounts", []) if m["mountPath"] == "/etc/rategate"), None)
cm = kinds["ConfigMap"][0]["metadata"]["name"]
ok(mount and "subPath" not in mount and vols[mount["name"]].get("configMap", {}).get("name") == cm,
   "k8s mounts the ConfigMap as a directory at /etc/rategate (no subPath, so updates arrive)")
args = ctr.get("args", [])
ok("--config" in args and args[args.index("--config") + 1] == "/etc/rategate/rategate.toml", "k8s runs with --config /etc/rategate/rategate.toml")
pre = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
ok(pod.get("terminationGracePeriodSeconds", 30) > pre_s + dur(kcfg["server"].get("shutdown_grace", "30s")) + 3,
   "k8s terminationGracePeriodSeconds > preStop + server.shutdown_grace + 3 s (cut and flush)")
labels = spec["template"]["metadata"]["labels"]
for s in kinds["Service"]:
    sel = s["spec"]["selector"]
    ok(all(labels.get(k) == v for k, v in sel.items()), f"k8s Service {s['metadata']['name']} selects the pods")
    ok(all(p["targetPort"] in cports or p["targetPort"] in cports.values() for p in s["spec"]["ports"]),
       f"k8s Service {s['metadata']['name']} targets container ports")
pdb = kinds["PodDisruptionBudget"][0]
ok(all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()), "k8s PodDisruptionBudget selects the pods")

# ---- systemd
unit = open("deploy/systemd/rategate.service").read()
ok(re.search(r"^ExecReload=\S*kill -HUP \$MAINPID$", unit, re.M) is not None, "systemd ExecReload sends SIGHUP")
for opt in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "User=rategate"):
    ok(re.search(rf"^{re.escape(opt)}$", unit, re.M) is not None, f"systemd unit sets {opt}")
PY
else
  fail "wiring checks need PyYAML and tomllib"
fi
if command -v systemd-analyze >/dev/null 2>&1; then
  # Unknown directives and syntax errors; the binary's absence at /usr/local/bin is expected here.
  systemd-analyze verify deploy/systemd/rategate.service > "$TMP/out" 2>&1 || true
  if grep -v -e 'is not executable' -e 'No such file or directory' "$TMP/out" | grep -q .; then
    fail "systemd-analyze verify deploy/systemd/rategate.service"; indent < "$TMP/out"
  else
    pass "systemd-analyze verify deploy/systemd/rategate.service"
  fi
else
  skip "systemd-analyze not available: unit file not verified"
fi

# ------------------------------------------------------------------------------------------------
section "5. redis ACL"
# What the gateway needs is listed once, in deploy/redis/users.acl (explained in its README).
# When that changes, adjust the expectations below.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "       | redis-server/redis-cli not found; installing Debian package redis-server"
  apt_install redis-server || true
fi
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  fail "redis-server and redis-cli are needed for the ACL test"
else
  RG_PW=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  OPS_PW=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
  sed -e "/^user rategate /s/#0\{64\}/#$(sha "$RG_PW")/" -e "/^user ops /s/#0\{64\}/#$(sha "$OPS_PW")/" \
    deploy/redis/users.acl > "$TMP/users.acl"
  if grep -q '#0\{64\}' "$TMP/users.acl"; then
    fail "users.acl: a placeholder hash was not replaced (users must be rategate and ops)"
  fi
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server "$ROOT/deploy/redis/redis.conf" --port "$PORT" --bind 127.0.0.1 --dir "$TMP" \
    --aclfile "$TMP/users.acl" --supervised no --daemonize no --logfile "$TMP/redis.log" &
  REDIS_PID=$!
  up=
  for _ in $(seq 50); do
    if redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning --user ops --pass "$OPS_PW" PING 2>/dev/null | grep -q PONG; then
      up=1; break
    fi
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    fail "redis-server starts with deploy/redis/redis.conf and users.acl"
    indent < "$TMP/redis.log" | tail -10
  else
    pass "redis-server $(redis-server --version | grep -oE 'v=[0-9.]+') starts with deploy/redis/redis.conf and users.acl"
    as_rg() { redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning --user rategate --pass "$RG_PW" "$@" 2>&1 || true; }
    as_ops() { redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning --user ops --pass "$OPS_PW" "$@" 2>&1 || true; }
    DENIED='NOPERM|no permissions|can.t run this command|can.t access|not allowed|NOAUTH|WRONGPASS|Authentication required'
    allowed() {  # allowed DESCRIPTION CMD...   (any answer but a permission error)
      local what=$1; shift
      local out; out=$(as_rg "$@")
      if grep -qiE "$DENIED|Could not connect" <<< "$out"; then
        fail "rategate may run: $what"; indent <<< "$out"
      else
        pass "rategate may run: $what"
      fi
    }
    refused() {  # refused DESCRIPTION CMD...
      local what=$1; shift
      local out; out=$(as_rg "$@")
      if grep -qiE "$DENIED" <<< "$out"; then
        pass "rategate is refused: $what"
      else
        fail "rategate is refused: $what"; indent <<< "$out"
      fi
    }

    # Hardened settings in effect.
    for kv in "maxmemory-policy volatile-ttl" "appendonly no" "save " "protected-mode yes" "enable-debug-command no"; do
      set -- $kv
      got=$(as_ops CONFIG GET "$1" | sed -n 2p)
      [ "$got" = "${2:-}" ] && pass "redis.conf: $1 = '${2:-}'" || fail "redis.conf: $1 = '$got', want '${2:-}'"
    done
    out=$(redis-cli -h 127.0.0.1 -p "$PORT" PING 2>&1 || true)
    grep -qiE 'NOAUTH|Authentication required' <<< "$out" && pass "unauthenticated connections can run nothing (default user off)" \
      || { fail "unauthenticated PING was not refused"; indent <<< "$out"; }
    out=$(redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning --user rategate --pass wrong PING 2>&1 || true)
    grep -qiE 'WRONGPASS|invalid' <<< "$out" && pass "a wrong password is refused" \
      || { fail "a wrong password was accepted"; indent <<< "$out"; }

    # What the gateway's connections send.
    allowed "PING" PING
    allowed "HELLO" HELLO 3
    allowed "SELECT" SELECT 0
    allowed "CLIENT SETNAME" CLIENT SETNAME rategate-check
    allowed "CLIENT ID" CLIENT ID
    allowed "CLIENT INFO" CLIENT INFO
    allowed "INFO" INFO server
    allowed "ROLE" ROLE
    allowed "READONLY (cluster replicas)" READONLY
    allowed "CLUSTER INFO" CLUSTER INFO
    allowed "CLUSTER SLOTS" CLUSTER SLOTS
    allowed "CLUSTER SHARDS" CLUSTER SHARDS
    allowed "CLUSTER NODES" CLUSTER NODES
    allowed "SET with PX" SET 'rategate:check:{c}:s' 1 PX 60000
    allowed "GET" GET 'rategate:check:{c}:s'
    allowed "PTTL" PTTL 'rategate:check:{c}:s'
    allowed "EXISTS" EXISTS 'rategate:check:{c}:s'
    allowed "HGETALL" HGETALL 'rategate:check:{c}:h'
    allowed "HMGET" HMGET 'rategate:check:{c}:h' tokens ts
    allowed "ZRANGE" ZRANGE 'rategate:check:{c}:z' 0 -1
    allowed "ZREVRANGE" ZREVRANGE 'rategate:check:{c}:z' 0 -1
    allowed "ZRANGEBYSCORE" ZRANGEBYSCORE 'rategate:check:{c}:z' -inf +inf
    allowed "ZCARD" ZCARD 'rategate:check:{c}:z'
    allowed "ZSCORE" ZSCORE 'rategate:check:{c}:z' m
    allowed "SCAN" SCAN 0 MATCH 'rategate:*' COUNT 100
    allowed "PUBLISH on rategate:*" PUBLISH rategate:events hello
    out=$(timeout 1 redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning --user rategate --pass "$RG_PW" SUBSCRIBE rategate:events 2>&1 || true)
    if grep -q '^subscribe$' <<< "$out" && ! grep -qiE "$DENIED" <<< "$out"; then
      pass "rategate may run: SUBSCRIBE on rategate:*"
    else
      fail "rategate may run: SUBSCRIBE on rategate:*"; indent <<< "$out"
    fi
    out=$(as_ops ACL DRYRUN rategate UNSUBSCRIBE rategate:events)
    [ "$out" = OK ] && pass "rategate may run: UNSUBSCRIBE (ACL DRYRUN)" || { fail "rategate may run: UNSUBSCRIBE"; indent <<< "$out"; }
    sha_ok=$(as_rg SCRIPT LOAD "return redis.call('PTTL', KEYS[1])")
    allowed "SCRIPT LOAD" SCRIPT LOAD "return redis.call('PTTL', KEYS[1])"
    allowed "SCRIPT EXISTS" SCRIPT EXISTS "$sha_ok"
    allowed "EVALSHA" EVALSHA "$sha_ok" 1 'rategate:check:{c}:s'
    # The check runs as a Redis function (Redis 7): loaded by the gateway, then called.
    allowed "FUNCTION LOAD" FUNCTION LOAD REPLACE "#!lua name=rategate_acl_check
redis.register_function('rategate_acl_check', function(keys) return redis.call('PTTL', keys[1]) end)"
    allowed "FCALL" FCALL rategate_acl_check 1 'rategate:check:{c}:s'
    # Pruning its libraries when a node holds too many (never FUNCTION FLUSH).
    allowed "FUNCTION LIST" FUNCTION LIST LIBRARYNAME 'rategate_*'
    allowed "FUNCTION DELETE" FUNCTION DELETE rategate_acl_check
    # One script calling every command the gateway's Lua scripts use.
    read -r -d '' LUA <<'LUA' || true
local k = KEYS[1]
local t = redis.call('TIME')
redis.call('SET', k .. ':s', '1', 'PX', 60000)
redis.call('GET', k .. ':s')
redis.call('MGET', k .. ':s', k .. ':s')
redis.call('SET', k .. ':s', '3', 'KEEPTTL')
redis.call('INCRBY', k .. ':s', 2)
redis.call('PEXPIRE', k .. ':s', 60000)
redis.call('PTTL', k .. ':s')
redis.call('EXISTS', k .. ':s')
redis.call('HSET', k .. ':h', 'tokens', 5, 'ts', t[1])
redis.call('HGET', k .. ':h', 'tokens')
redis.call('HMGET', k .. ':h', 'tokens', 'ts')
redis.call('HINCRBY', k .. ':h', 'tokens', -1)
redis.call('ZADD', k .. ':z', t[1], 'm')
redis.call('ZINCRBY', k .. ':z', 1, 'm')
redis.call('ZREMRANGEBYSCORE', k .. ':z', '-inf', 0)
redis.call('ZRANGE', k .. ':z', 0, -1)
redis.call('ZREVRANGE', k .. ':z', 0, -1)
redis.call('ZCARD', k .. ':z')
redis.call('ZCOUNT', k .. ':z', '(0', '+inf')
redis.call('ZSCORE', k .. ':z', 'm')
redis.call('ZRANGEBYSCORE', k .. ':z', '(0', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
redis.call('ZREM', k .. ':z', 'gone')
redis.call('LPUSH', k .. ':l', 'event')
redis.call('LTRIM', k .. ':l', 0, 99)
redis.call('LRANGE', k .. ':l', 0, -1)
redis.call('PEXPIRE', k .. ':h', 60000)
redis.call('PEXPIRE', k .. ':z', 60000)
redis.call('PEXPIRE', k .. ':l', 60000)
return 'lua-ok'
LUA
    out=$(as_rg EVAL "$LUA" 1 'rategate:check:{c}')
    if [ "$out" = lua-ok ]; then
      pass "rategate may run: EVAL calling TIME GET MGET SET INCRBY PEXPIRE PTTL EXISTS HSET HGET HMGET HINCRBY ZADD ZINCRBY ZREMRANGEBYSCORE ZRANGE ZREVRANGE ZCARD ZCOUNT ZSCORE ZRANGEBYSCORE ZREM LPUSH LTRIM LRANGE on rategate: keys"
    else
      fail "rategate may run: EVAL with the in-script commands"; indent <<< "$out"
    fi
    out=$(as_rg EVAL "return redis.call('DEL', KEYS[1] .. ':l')" 1 'rategate:check:{c}')
    [ "$out" = 1 ] && pass "rategate may run: DEL inside a script" || { fail "rategate may run: DEL inside a script"; indent <<< "$out"; }

    # Refused: dangerous commands, admin commands, and anything outside the prefix.
    refused "FLUSHALL" FLUSHALL
    refused "FLUSHDB" FLUSHDB
    refused "CONFIG GET" CONFIG GET maxmemory
    refused "CONFIG SET" CONFIG SET maxmemory 0
    refused "KEYS" KEYS '*'
    refused "DEBUG" DEBUG SLEEP 0
    out=$(as_ops ACL DRYRUN rategate DEBUG SLEEP 0)
    grep -qi 'no permissions' <<< "$out" && pass "rategate is refused: DEBUG by the ACL itself (ACL DRYRUN)" \
      || { fail "ACL DRYRUN rategate DEBUG"; indent <<< "$out"; }
    refused "SHUTDOWN" SHUTDOWN NOSAVE
    out=$(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning --user rategate --pass "$RG_PW" MONITOR 2>&1 || true)
    grep -qiE "$DENIED" <<< "$out" && pass "rategate is refused: MONITOR" || { fail "rategate is refused: MONITOR"; indent <<< "$out"; }
    refused "SCRIPT FLUSH" SCRIPT FLUSH
    refused "SCRIPT KILL" SCRIPT KILL
    refused "FUNCTION FLUSH" FUNCTION FLUSH
    refused "CLIENT LIST" CLIENT LIST
    refused "CLIENT KILL" CLIENT KILL ID 1
    refused "ACL LIST" ACL LIST
    refused "ACL SETUSER" ACL SETUSER rategate '+@all'
    refused "SAVE" SAVE
    refused "BGSAVE" BGSAVE
    refused "REPLICAOF" REPLICAOF 127.0.0.1 1
    refused "MODULE LIST" MODULE LIST
    refused "MIGRATE" MIGRATE 127.0.0.1 1 'rategate:check:{c}:s' 0 1
    refused "SWAPDB" SWAPDB 0 1
    refused "OBJECT (not needed)" OBJECT ENCODING 'rategate:check:{c}:s'
    refused "SET outside the prefix" SET other:key 1
    refused "GET outside the prefix" GET other:key
    refused "DEL outside the prefix" DEL other:key
    refused "EVAL touching a key outside the prefix" EVAL "return redis.call('GET', 'other:key')" 0
    refused "EVAL declaring a key outside the prefix" EVAL "return 1" 1 other:key
    refused "FLUSHALL from inside a script" EVAL "return redis.call('FLUSHALL')" 0
    refused "CONFIG from inside a script" EVAL "return redis.call('CONFIG', 'GET', 'maxmemory')" 0
    refused "PUBLISH outside rategate:*" PUBLISH other-channel hello
    out=$(timeout 1 redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning --user rategate --pass "$RG_PW" SUBSCRIBE other-channel 2>&1 || true)
    grep -qiE "$DENIED" <<< "$out" && pass "rategate is refused: SUBSCRIBE outside rategate:*" \
      || { fail "rategate is refused: SUBSCRIBE outside rategate:*"; indent <<< "$out"; }
    out=$(as_ops EXISTS 'rategate:check:{c}:s')
    [ "$out" = 1 ] && pass "the refused commands changed nothing (test key still there)" \
      || { fail "the test key disappeared: something destructive was allowed"; indent <<< "$out"; }
    out=$(as_ops PTTL 'rategate:check:{c}:s')
    [ "${out:-0}" -gt 0 ] 2>/dev/null && pass "keys written by the scripts carry a TTL" || fail "test key has no TTL ($out)"
  fi
fi

echo
summary="deploy-checks: $PASSED passed, $FAILED failed"
[ "$SKIPPED" -gt 0 ] && summary="$summary, $SKIPPED skipped"
echo "$summary"
[ "$FAILED" = 0 ]
