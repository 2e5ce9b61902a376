#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with a Rust toolchain: installs what the
# tests need, then runs every unit, integration and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Outside the clone, so repeated runs (and CI on the same machine) build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quarry/target}"
# The ONNX parity test scores with onnxruntime in this venv (created once, then reused).
scripts/onnx_venv.sh >/dev/null
cargo test --workspace --locked
