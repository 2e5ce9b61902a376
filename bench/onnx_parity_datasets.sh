#!/usr/bin/env bash
# ONNX parity on every classification/regression dataset of a manifest: each family trained
# with default parameters, and a `quarry fit` ensemble winner; one JSON line per model.
#   bench/onnx_parity_datasets.sh /work/shared/datasets OUT_DIR [QUARRY_BIN]
# MODELS="gbdt fit" (default: every family, then fit) narrows what runs; DATASETS="a b" which datasets.
set -uo pipefail
ROOT="$1"; OUT="$2"; Q="${3:-quarry}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$HERE/scripts/onnx_venv.sh")"
mkdir -p "$OUT"
"$PY" - "$ROOT/manifest.json" <<'PYEOF' | while read -r name target task; do
import json, sys
for d in json.load(open(sys.argv[1])):
    if d["task"] in ("binary", "multiclass", "regression"):
        print(d["name"], d["target"], d["task"])
PYEOF
    train="$ROOT/$name/train.csv"; test="$ROOT/$name/test.csv"
    fams="gbdt random_forest extra_trees linear knn"
    [ "$task" != regression ] && fams="$fams naive_bayes"
    [ -n "${DATASETS:-}" ] && [[ " $DATASETS " != *" $name "* ]] && continue
    for fam in ${MODELS:-$fams fit}; do
        [ "$fam" = naive_bayes ] && [ "$task" = regression ] && continue
        run="$OUT/$name-$fam"
        if [ "$fam" = fit ]; then
            # A loaded machine may finish no trial in 60 s: then a fixed number of trials.
            "$Q" fit --data "$train" --target "$target" --budget 60s --seed 1 --out "$run" >"$run.log" 2>&1 ||
                { rm -rf "$run"; "$Q" fit --data "$train" --target "$target" --max-trials 4 --seed 1 --out "$run" >>"$run.log" 2>&1; }
        else
            "$Q" train --data "$train" --target "$target" --family "$fam" --seed 1 --out "$run" >"$run.log" 2>&1
        fi || { echo "{\"dataset\": \"$name\", \"model\": \"$fam\", \"error\": \"quarry failed\"}"; continue; }
        "$Q" predict --model "$run" --data "$test" --out "$run.preds.csv" >>"$run.log" 2>&1
        res="$("$PY" "$HERE/scripts/onnx_parity.py" "$run/model.onnx" "$test" "$run.preds.csv" 2>>"$run.log" | tail -1)"
        echo "{\"dataset\": \"$name\", \"model\": \"$fam\", \"result\": ${res:-null}}"
    done
done
