#!/usr/bin/env bash
# GPU benchmark entry point for a CUDA machine (no internet needed): see bench/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
exec "$PY" bench/gpu.py "$@"
