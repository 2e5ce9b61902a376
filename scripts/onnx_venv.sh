#!/usr/bin/env bash
# Creates (once) the Python venv the ONNX parity check runs in, with pinned onnxruntime and
# onnx; prints its python. Fast when the venv is already there.
set -euo pipefail
VENV="${QUARRY_ONNX_VENV:-$HOME/.cache/quarry/venv-onnx}"
PINS="onnxruntime==1.32.0 onnx==1.23.2 numpy"
if [ "$(cat "$VENV/.quarry-pins" 2>/dev/null)" != "$PINS" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        apt-get install -y -q python3-venv >&2
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q $PINS >&2
    echo "$PINS" > "$VENV/.quarry-pins"
fi
echo "$VENV/bin/python"
