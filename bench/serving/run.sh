#!/usr/bin/env bash
# Load test of `quarry serve-model` on loopback (release build): wrk closed-loop throughput and
# latency for 1-row and 100-row requests, then a fixed 500 req/s open-loop run (fixed_rate.py).
# usage: bench/serving/run.sh [QUARRY_BIN]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/quarry/target}/release/quarry}"
TMP="$(mktemp -d)"
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
    echo "== fixed 500 req/s, $n-row requests, 10 s (open loop)"
    python3 bench/serving/fixed_rate.py 127.0.0.1 "$PORT" /v2/models/penguins/infer "$TMP/body$n.json" 500 10
done
