#!/usr/bin/env bash
# One device session (a lent CUDA machine, no internet, no dlib, no ../shared): the serving
# benchmark (bench/gpu.py) and Table 1 on the GPU (bench/gpu_eval.py). Prepare its inputs here
# first: `.venv/bin/python bench/gpu_prepare.py` (writes .devcarry/, which must travel with the tree).
# Usage on the device: OUT=DIR bash bench/gpu_session.sh [EXPLAIN_SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi -L
"$PY" -c "import sys, numpy, scipy, skimage, torch, PIL; print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 130 "$PY" bench/gpu.py --dlib-dat .devcarry/dlib_face_recognition_resnet_model_v1.dat \
    --out "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log"
"$PY" bench/gpu_eval.py --carry .devcarry --out "$OUT" --explain-seconds "${1:-270}" 2>&1 | tee "$OUT/gpu_eval.log"
