#!/usr/bin/env bash
# TreeSHAP: Quarry's exact TreeSHAP vs Python shap's TreeExplainer on a LightGBM model of the
# same size (300 trees, depth 8, 255 leaves, 30 features), explaining 10,000 rows.
#
#   bash bench/shap/run.sh             # THREADS="1 2", REPEAT=3 by default
#
# Both sides train on identical rows (the Rust example dumps them). Times are the best of 3 and
# exclude training; shap's time includes building its TreeExplainer. Prints a Markdown table
# with the date, `uptime` before and after each pair (the two sides run back to back at the
# same thread count), and the versions.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

SHAP_VERSION=${SHAP_VERSION:-0.51.0}
LIGHTGBM_VERSION=4.7.0
VENV=${QUARRY_BENCH_VENV:-$HOME/.cache/quarry/venv-bench}
THREADS=${THREADS:-"1 2"}
REPEAT=${REPEAT:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/quarry/target}
BENCH_DIR=${BENCH_DIR:-$CARGO_TARGET_DIR/bench-shap}

if ! "$VENV/bin/python" -c "import lightgbm, shap, sys; sys.exit(shap.__version__ != '$SHAP_VERSION')" 2>/dev/null; then
    echo "installing lightgbm and shap into $VENV" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "lightgbm==$LIGHTGBM_VERSION" "shap==$SHAP_VERSION" >&2
fi
PY="$VENV/bin/python"

cargo build --release --locked --quiet -p quarry-learners --example shap_bench >&2
BIN="$CARGO_TARGET_DIR/release/examples/shap_bench"
mkdir -p "$BENCH_DIR"
"$BIN" --dump "$BENCH_DIR" --threads 1 > /dev/null

export OMP_WAIT_POLICY=PASSIVE
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores"
echo
echo "best of $REPEAT"
echo
echo "| side | threads | trees | leaves | rows explained | shap seconds | load (1 min) before → after |"
echo "|---|---|---|---|---|---|---|"
for t in $THREADS; do
    echo "before threads=$t: $(uptime)" >&2
    before=$(cut -d' ' -f1 /proc/loadavg)
    q=$("$BIN" --threads "$t" --repeat "$REPEAT")
    s=$(OMP_NUM_THREADS=$t "$PY" bench/shap/shap_bench.py "$BENCH_DIR" --threads "$t" --repeat "$REPEAT")
    after=$(cut -d' ' -f1 /proc/loadavg)
    echo "after threads=$t: $(uptime)" >&2
    echo "$q" >&2
    echo "$s" >&2
    for line in "$q" "$s"; do
        "$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); side = r["side"] if r["side"]=="quarry" else "shap " + r["shap_version"] + " / lightgbm " + r["lightgbm_version"]; print("| %s | %d | %d | %d | %d | %.2f | %s |" % (side, r["threads"], r["trees"], r["leaves"], r["explain_rows"], r["shap_seconds"], sys.argv[2]))' "$line" "$before → $after"
    done
done
