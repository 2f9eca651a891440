#!/usr/bin/env bash
# What verifying a token costs per request: one rategate binary with five `respond` routes of one
# policy each (no auth and keyed by ip; HS256, RS256, ES256, EdDSA keyed by jwt:sub), and with
# BASELINE_BIN another build on the unauthenticated route, all driven by wrk in the same run,
# interleaved REPS times. Each algorithm runs twice: one token sent over and over (after the
# first request, answered from the verified-token cache) and `distinct` rotating through
# DISTINCT different tokens (more than the cache holds, so every request is verified). Prints
# median req/s and CPU microseconds per request of the gateway process, each as a ratio to the
# unauthenticated route of the same binary.
#
#   bash benches/load/auth.sh                       # BIN=target/release/rategate
#   BASELINE_BIN=/path/to/main/rategate bash benches/load/auth.sh
#
# Needs wrk, openssl and python3 with `cryptography` (the tokens are minted with it).
set -euo pipefail

BIN=$(realpath "${BIN:-target/release/rategate}")
BASELINE_BIN=${BASELINE_BIN:+$(realpath "$BASELINE_BIN")}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
CONNS=${CONNS:-8}
PORT=${PORT:-18181}
BASE_PORT=${BASE_PORT:-18182}
DISTINCT=${DISTINCT:-10000}

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rs.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out es.pem 2>/dev/null
openssl genpkey -algorithm ED25519 -out ed.pem 2>/dev/null
for k in rs es ed; do openssl pkey -in $k.pem -pubout -out $k.pub.pem 2>/dev/null; done
SECRET=bench-secret-of-at-least-thirty-two-bytes

python3 - "$SECRET" "$DISTINCT" <<'PY'
import base64, json, sys, time
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
keys = {}
def key(name):
    if name not in keys:
        keys[name] = serialization.load_pem_private_key(open(name + ".pem", "rb").read(), None)
    return keys[name]
def token(alg, sign, sub):
    claims = {"sub": sub, "exp": int(time.time()) + 3600}
    msg = (b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    return msg.decode() + "." + b64(sign(msg))
for alg, sign in {
    "HS256": lambda m: (lambda h: (h.update(m), h.finalize())[1])(hmac.HMAC(sys.argv[1].encode(), hashes.SHA256())),
    "RS256": lambda m: key("rs").sign(m, padding.PKCS1v15(), hashes.SHA256()),
    "ES256": lambda m: b"".join(n.to_bytes(32, "big") for n in utils.decode_dss_signature(key("es").sign(m, ec.ECDSA(hashes.SHA256())))),
    "EdDSA": lambda m: key("ed").sign(m),
}.items():
    open(alg + ".jwt", "w").write(token(alg, sign, "bench-user"))
    # Many users: every token differs (its sub does), so none is answered from the cache.
    with open(alg + ".many", "w") as f:
        for i in range(int(sys.argv[2])):
            f.write(token(alg, sign, "user-%d" % i) + "\n")
PY
cat > rotate.lua <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local i = math.random(#tokens)
request = function()
    i = i % #tokens + 1
    return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA

policy() {
    printf '[[policy]]\nname = "%s"\nalgorithm = "fixed_window"\nlimit = 1000000000\nwindow = "1h"\nkey = ["%s"]\n\n' "$1" "$2"
}
route() {
    printf '[[route]]\nname = "%s"\npath = "/%s"\nrespond = { status = 200, body = "ok" }\npolicies = ["%s"]\n' "$1" "$1" "$2"
    [ -n "${3:-}" ] && printf 'auth = "%s"\n' "$3"
    printf '\n'
}
header() {
    printf '[server]\nlisten = "127.0.0.1:%s"\naccess_log = false\n\n[admin]\nlisten = "127.0.0.1:0"\n\n' "$1"
}
{
    header "$PORT"
    policy by-ip ip
    policy by-sub jwt:sub
    printf '[[auth]]\nname = "hs"\nalgorithms = ["HS256"]\nsecret = "${BENCH_SECRET}"\n\n'
    for a in rs:RS256 es:ES256 ed:EdDSA; do
        printf '[[auth]]\nname = "%s"\nalgorithms = ["%s"]\npublic_key = "%s.pub.pem"\n\n' "${a%%:*}" "${a##*:}" "${a%%:*}"
    done
    route none by-ip
    for a in hs rs es ed; do route "$a" by-sub "$a"; done
} > auth.toml
{ header "$BASE_PORT"; policy by-ip ip; route none by-ip; } > base.toml

start() { # bin config port
    BENCH_SECRET=$SECRET RUST_LOG=warn "$1" run --config "$2" >"$2.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do
        curl -s -o /dev/null "http://127.0.0.1:$3/none" && return
        sleep 0.1
    done
    echo "gateway on $3 did not start:" >&2
    cat "$2.log" >&2
    exit 1
}
start "$BIN" auth.toml "$PORT"
auth_pid=${pids[-1]}
base_pid=
if [ -n "$BASELINE_BIN" ]; then
    start "$BASELINE_BIN" base.toml "$BASE_PORT"
    base_pid=${pids[-1]}
fi

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))
run() { # name pid port path token
    local before after out rps reqs
    before=$(ticks "$2")
    if [ "${5##*.}" = many ]; then
        out=$(TOKENS=$5 wrk -t2 -c"$CONNS" -d"${DURATION}s" -s rotate.lua "http://127.0.0.1:$3$4")
    elif [ -n "$5" ]; then
        out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $(cat "$5")" "http://127.0.0.1:$3$4")
    else
        out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$3$4")
    fi
    after=$(ticks "$2")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "$1: non-2xx answers" >&2; exit 1; fi
    echo "$1 $rps $(( (after - before) * tick_us / reqs ))" >> results
}
for t in none hs rs es ed; do wrk -t1 -c2 -d1s -H "Authorization: Bearer $(cat HS256.jwt 2>/dev/null)" "http://127.0.0.1:$PORT/$t" >/dev/null; done
for rep in $(seq "$REPS"); do
    [ -n "$base_pid" ] && run baseline:none "$base_pid" "$BASE_PORT" /none ""
    run none "$auth_pid" "$PORT" /none ""
    for a in hs:HS256 rs:RS256 es:ES256 ed:EdDSA; do
        run "${a##*:}" "$auth_pid" "$PORT" "/${a%%:*}" "${a##*:}.jwt"
        run "${a##*:}:distinct" "$auth_pid" "$PORT" "/${a%%:*}" "${a##*:}.many"
    done
done
python3 - <<'PY'
import statistics
rows = {}
for line in open("results"):
    name, rps, us = line.split()
    rows.setdefault(name, []).append((float(rps), float(us)))
med = {n: (statistics.median(r for r, _ in v), statistics.median(u for _, u in v)) for n, v in rows.items()}
base_rps, base_us = med["none"]
print(f"{'route':<14} {'req/s':>9} {'vs none':>8} {'CPU us/req':>11} {'vs none':>8}   (median of {len(rows['none'])})")
for n, (rps, us) in med.items():
    print(f"{n:<14} {rps:>9.0f} {rps / base_rps:>8.2f} {us:>11.1f} {us / base_us:>8.2f}")
PY
