#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with a Rust toolchain: installs what the
# tests need, then runs every unit, integration and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Outside the clone, so repeated runs (and CI on the same machine) build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quarry/target}"
# redis-server: the RedisLog tests and the distributed e2e tests start their own on a free port.
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
# kill(1) (procps) and mount(8): the fault-injection e2e tests stop processes and mount a tmpfs.
if ! command -v kill >/dev/null 2>&1 || ! command -v mount >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq procps mount >/dev/null
fi
# chromium + chromium-driver: the dashboard e2e test drives headless Chromium over WebDriver.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# The ONNX parity test scores with onnxruntime in this venv (created once, then reused).
scripts/onnx_venv.sh >/dev/null
# The serving e2e test runs the real Triton/KServe client (tritonclient[http]) in this venv.
scripts/serving_venv.sh >/dev/null
cargo test --workspace --locked
