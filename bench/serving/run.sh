#!/usr/bin/env bash
# Load test of `quarry serve-model` on loopback (release build): wrk closed-loop throughput and
# latency for 1-row and 100-row requests, then fixed 500 req/s open-loop runs with oha
# (`--latency-correction`: latency counted from each request's scheduled send time).
# usage: bench/serving/run.sh [QUARRY_BIN]   (installs wrk and oha when missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/quarry/target}/release/quarry}"
TMP="$(mktemp -d)"
command -v wrk >/dev/null || apt-get install -y -q wrk
OHA="$HOME/.cache/quarry/tools/bin/oha"
[ -x "$OHA" ] || cargo install oha --version 1.16.0 --locked --root "$HOME/.cache/quarry/tools"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$TMP"' EXIT
"$BIN" train --data examples/data/penguins/train.csv --target species --family gbdt \
    --param n_estimators=100 --out "$TMP/run" >/dev/null 2>&1
"$BIN" serve-model --model "$TMP/run" --name penguins --http 127.0.0.1:0 >"$TMP/out" 2>/dev/null &
SERVER=$!
for _ in $(seq 100); do grep -q listening "$TMP/out" && break; sleep 0.1; done
ADDR="$(sed -n 's/^listening http=//p' "$TMP/out")"
PORT="${ADDR##*:}"
curl -s "http://$ADDR/v2/models/penguins" >"$TMP/meta.json"
python3 bench/serving/make_bodies.py "$TMP/meta.json" examples/data/penguins/test.csv "$TMP"
echo "date: $(date -u +%FT%TZ)  uptime: $(uptime)"
for n in 1 100; do
    echo "== wrk, $n-row requests, 2 threads, 16 connections, 10 s"
    BODY="$TMP/body$n.json" wrk -t2 -c16 -d10s --latency -s bench/serving/post.lua \
        "http://$ADDR/v2/models/penguins/infer" | grep -E "Requests/sec|50%|90%|99%|Latency |Non-2xx"
done
for n in 1 100; do
    echo "== oha: fixed 500 req/s, $n-row requests, 16 connections, 20 s (open loop, latency-corrected)"
    "$OHA" --no-tui -q 500 -z 20s -c 16 --latency-correction -m POST -T application/json \
        -D "$TMP/body$n.json" --output-format json "http://$ADDR/v2/models/penguins/infer" >"$TMP/oha$n.json"
    python3 - "$TMP/oha$n.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
ms = lambda v: f"{v * 1000:.2f} ms"
print(f"achieved {s['requestsPerSec']:.1f} req/s, success rate {s['successRate']:.4f}, status {codes}")
print("p50 " + ms(p["p50"]) + ", p90 " + ms(p["p90"]) + ", p99 " + ms(p["p99"]) + ", p99.9 " + ms(p["p99.9"]) + ", max " + ms(s["slowest"]))
PY
done
