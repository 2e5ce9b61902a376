#!/usr/bin/env bash
# The venv the ONNX parity check runs in (pinned onnxruntime and onnx); prints its python.
set -euo pipefail
VENV_DIR="${QUARRY_ONNX_VENV:-$HOME/.cache/quarry/venv-onnx}" \
    exec "$(dirname "$0")/venv.sh" onnx "onnxruntime==1.32.0" "onnx==1.23.2" numpy
