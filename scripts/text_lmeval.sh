#!/usr/bin/env bash
# docs/text.md's harness numbers: the README's lm-eval command with sampler=confidence and
# sampler=boe, timed, then exact match and its stderr from the harness's output JSON, one line
# per sampler in $OUT/summary.jsonl. Usage (transformers and lm-eval installed):
#   OUT=docs/results/text_lmeval LIMIT=200 bash scripts/text_lmeval.sh [SAMPLER ...]
set -euo pipefail
OUT=${OUT:-docs/results/text_lmeval}
LIMIT=${LIMIT:-200}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for sampler in "${@:-confidence boe}"; do
  for s in $sampler; do
    start=$(date +%s.%N)
    tabes lm-eval --model tabes --model_args "pretrained=text-demo,sampler=$s" --tasks tabes_text_demo \
      --limit "$LIMIT" --output_path "$work/$s" > "$work/$s.log" 2>&1 || { cat "$work/$s.log"; exit 1; }
    end=$(date +%s.%N)
    python - "$work/$s" "$s" "$LIMIT" "$start" "$end" >> "$OUT/summary.jsonl" <<'PY'
import glob, json, os, sys
import torch, transformers
folder, sampler, limit, start, end = sys.argv[1:]
path = sorted(glob.glob(os.path.join(folder, "**", "results_*.json"), recursive=True))[-1]
res = json.load(open(path))["results"]["tabes_text_demo"]
print(json.dumps({
    "sampler": sampler, "exact_match": res["exact_match,strict-match"], "stderr": res["exact_match_stderr,strict-match"],
    "limit": int(limit), "wall_s": round(float(end) - float(start), 1), "threads": torch.get_num_threads(),
    "model_args": {"pretrained": "text-demo", "sampler": sampler}, "transformers": transformers.__version__,
}))
PY
    tail -1 "$OUT/summary.jsonl"
  done
done
