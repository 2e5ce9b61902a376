#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for a bounded time with cargo-fuzz / libFuzzer,
# seeded from the repo's own inputs (fuzz/corpus, tests/data/bad, tests/data/bundles). The test
# suite runs the same target bodies (fuzz-targets/) on those seeds and seeded mutations. A crash stops
# the run with a non-zero exit and leaves the input under fuzz/artifacts/TARGET/: turn it into
# a regression test, then fix.
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 300)] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-300}"; shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(load_csv load_parquet featurize bundle_load proto_decode infer_json)
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
# cargo-fuzz needs nightly-only flags (sanitizers); RUSTC_BOOTSTRAP lets the stable compiler take them.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/quarry/fuzz-target}"
CORPUS="${FUZZ_CORPUS:-$HOME/.cache/quarry/fuzz-corpus}"
seed() {  # seed TARGET FILES...
    local dir="$CORPUS/$1"; shift
    mkdir -p "$dir"
    for f in "$@"; do cp -n "$f" "$dir/$(basename "$(dirname "$f")")-$(basename "$f")" 2>/dev/null || true; done
}
csvs=(tests/data/bad/*.csv fuzz/corpus/load_csv/*.csv)
seed load_csv "${csvs[@]}"
seed featurize "${csvs[@]}"
seed bundle_load tests/data/bundles/*.json
seed infer_json fuzz/corpus/infer_json/*
seed load_parquet fuzz/corpus/load_parquet/*
seed proto_decode fuzz/corpus/proto_decode/*
for t in "${TARGETS[@]}"; do
    echo "== $t: ${SECS}s ($(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg))"
    log="$CORPUS/$t.log"
    rc=0
    (cd fuzz && cargo fuzz run "$t" "$CORPUS/$t" -- -max_total_time="$SECS" -rss_limit_mb=4096 -timeout=30 \
        -print_final_stats=1) >"$log" 2>&1 || rc=$?
    grep -E "^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)|panicked at|Test unit written" "$log" || true
    if [ "$rc" -ne 0 ]; then tail -n 40 "$log"; echo "FAILED: $t (rc $rc; input under fuzz/artifacts/$t)"; exit 1; fi
done
echo "all fuzz targets ran ${SECS}s without a crash"
