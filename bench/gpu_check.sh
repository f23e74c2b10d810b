#!/usr/bin/env bash
# The CUDA checks in one run, for a machine with an NVIDIA GPU: the `gpu`-marked tests (device
# names, bf16 and fp16 + GradScaler training, DDP) and the training-throughput benchmark on the GPU
# beside the textbook loop on the same GPU. Results go to $OUT (default ./gpu-out).
#
#   bash bench/gpu_check.sh
#
# A machine without the project's installed dependencies (no network) can be handed wheels in
# .venv/gpu_wheels (pytest, pandera, pydantic, PyYAML, tqdm, ...: see README, Performance); they are
# installed into a temporary directory, not into the system.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|', torch.cuda.get_device_name(0), \
'| bf16', torch.cuda.is_bf16_supported(), '| devices', torch.cuda.device_count())" >"$OUT/torch.txt" 2>&1
if [ -d .venv/gpu_wheels ]; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/textclf-gpu-site .venv/gpu_wheels/*.whl >"$OUT/pip.txt" 2>&1
  export PYTHONPATH="/tmp/textclf-gpu-site:$PWD"
fi
timeout 300 $PY -m pytest -m gpu tests/model -q -p no:cacheprovider -rA >"$OUT/pytest-gpu.txt" 2>&1
echo "pytest rc=$?" >>"$OUT/pytest-gpu.txt"
timeout 300 $PY bench/train_throughput.py --device cuda --epochs 5 --batch-sizes 2048,8192 >"$OUT/train_throughput.txt" 2>&1
echo "bench rc=$?" >>"$OUT/train_throughput.txt"
