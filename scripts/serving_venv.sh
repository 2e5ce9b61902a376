#!/usr/bin/env bash
# The venv the serving e2e test runs the real Triton/KServe client in (tritonclient[http],
# pinned); prints its python.
set -euo pipefail
VENV_DIR="${QUARRY_SERVING_VENV:-$HOME/.cache/quarry/venv-serving}" \
    exec "$(dirname "$0")/venv.sh" serving "tritonclient[http]==2.73.0" numpy
