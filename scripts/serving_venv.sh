#!/usr/bin/env bash
# Creates (once) the Python venv the serving e2e test runs the real Triton/KServe client in
# (tritonclient[http], pinned); prints its python. Fast when the venv is already there.
set -euo pipefail
VENV="${QUARRY_SERVING_VENV:-$HOME/.cache/quarry/venv-serving}"
PINS="tritonclient[http]==2.73.0 numpy"
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
