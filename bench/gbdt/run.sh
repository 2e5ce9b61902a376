#!/usr/bin/env bash
# Tree engine vs LightGBM: fit time and test metric on identical features, at 1 and 2 threads.
#
#   bash bench/gbdt/run.sh            # all datasets
#   ONLY=synthetic,diamonds REPEAT=3 bash bench/gbdt/run.sh
#
# The Rust example (learners/examples/gbdt_bench.rs) featurizes each dataset once and dumps the
# exact matrices its engine sees; LightGBM (pinned, in a reused venv) reads those, so both see
# the same rows and features (categoricals as native categorical codes on both sides).
# Fit times are the best of REPEAT fits and include binning / Dataset construction; CSV
# loading and featurization are excluded on both sides. The 1-minute load average is taken
# before each pair of runs. Prints a Markdown table on stdout; raw JSON lines go to
# $BENCH_DIR/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

LIGHTGBM_VERSION=4.7.0
NUMPY_VERSION=2.4.6
PANDAS_VERSION=3.1.1
SKLEARN_VERSION=1.9.1  # LightGBM's scikit-learn API needs it
VENV=${QUARRY_BENCH_VENV:-$HOME/.cache/quarry/venv-bench}
SHARED=${QUARRY_SHARED:-$root/../shared}
REPEAT=${REPEAT:-3}
THREADS=${THREADS:-"1 2"}
ONLY=${ONLY:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/quarry/target}
BENCH_DIR=${BENCH_DIR:-$CARGO_TARGET_DIR/bench-gbdt}

if ! "$VENV/bin/python" -c "import lightgbm, numpy, pandas, sklearn, sys; sys.exit(lightgbm.__version__ != '$LIGHTGBM_VERSION')" 2>/dev/null; then
    echo "creating $VENV (lightgbm==$LIGHTGBM_VERSION)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "lightgbm==$LIGHTGBM_VERSION" "numpy==$NUMPY_VERSION" "pandas==$PANDAS_VERSION" \
        "scikit-learn==$SKLEARN_VERSION" >&2
fi
PY="$VENV/bin/python"

cargo build --release --quiet -p quarry-learners --example gbdt_bench >&2
BIN="$CARGO_TARGET_DIR/release/examples/gbdt_bench"
mkdir -p "$BENCH_DIR"
RESULTS="$BENCH_DIR/results.jsonl"
: > "$RESULTS"

# name | target column ("-" for the synthetic set)
DATASETS=(
    "synthetic|-"
    "flights|arr_delay"
    "diamonds|price"
    "digits|target"
    "seattle_weather|weather"
)

export OMP_WAIT_POLICY=PASSIVE
for entry in "${DATASETS[@]}"; do
    name=${entry%%|*}
    target=${entry#*|}
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
        continue
    fi
    dump="$BENCH_DIR/$name"
    if [ "$target" = "-" ]; then
        src=(--synthetic)
    else
        src=(--train "$SHARED/datasets/$name/train.csv" --test "$SHARED/datasets/$name/test.csv"
             --target "$target" --name "$name")
    fi
    echo "== $name: featurizing and dumping to $dump" >&2
    "$BIN" "${src[@]}" --dump "$dump" --dump-only
    for t in $THREADS; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        q=$("$BIN" "${src[@]}" --threads "$t" --repeat "$REPEAT")
        l=$("$PY" bench/gbdt/lgb_bench.py "$dump" --threads "$t" --repeat "$REPEAT")
        echo "$q" >&2
        echo "$l" >&2
        "$PY" -c 'import json,sys; q,l,load=json.loads(sys.argv[1]),json.loads(sys.argv[2]),sys.argv[3]; q["dataset"]=l["dataset"]; print(json.dumps({"quarry":q,"lightgbm":l,"load":float(load)}))' "$q" "$l" "$load" >> "$RESULTS"
    done
done

"$PY" - "$RESULTS" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| dataset | rows × features | threads | quarry fit s | lightgbm fit s | ratio | metric | quarry | lightgbm | load |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    q, l = r["quarry"], r["lightgbm"]
    print(f"| {l['dataset']} | {q['n_train']} × {q['n_features']} | {q['threads']} | {q['fit_seconds']:.3f} | "
          f"{l['fit_seconds']:.3f} | {q['fit_seconds'] / l['fit_seconds']:.2f}× | {q['metric']} | "
          f"{q['score']:.5g} | {l['score']:.5g} | {r['load']:.2f} |")
PYEOF
