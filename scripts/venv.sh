#!/usr/bin/env bash
# Creates (once) a Python venv with pinned packages and prints its python; fast when the venv
# already holds exactly these pins. The venv lives in $VENV_DIR (default ~/.cache/quarry/venv-NAME).
#   scripts/venv.sh NAME PIN...
set -euo pipefail
NAME="$1"; shift
VENV="${VENV_DIR:-$HOME/.cache/quarry/venv-$NAME}"
PINS="$*"
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
