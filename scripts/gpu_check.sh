#!/usr/bin/env bash
# Device checks for a CUDA machine, in under 9 minutes: the ActiveQueryAttention benchmark
# (bf16 and fp32, L up to 8192, 8 and 32 layers) and the block KV cache benchmark, as JSON
# files under $OUT (default: ./gpu_results). Run from the repository root:
#   OUT=/some/dir bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
python -c "import tabes" 2>/dev/null || python -m pip install -q --no-deps -e . || exit 1
python -c "import transformers" 2>/dev/null || python -m pip install -q "transformers>=4.48,<6" || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>&1
python -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" >> "$OUT/device.txt"

run() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

for dtype in bfloat16 float32; do
  run "aqa_${dtype}" 150 tabes bench aqa --device cuda --dtype "$dtype" --lengths 1024,4096,8192 --rhos 0.25 --layers 8,32 --repeats 3 --json
done
run cache_bfloat16 120 tabes bench cache --device cuda --dtype bfloat16 --repeats 3 --json
run cache_float32 120 tabes bench cache --device cuda --dtype float32 --repeats 3 --json
