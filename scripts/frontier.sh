#!/usr/bin/env bash
# The frontier of docs/evidence.md: every sampler on the whole dev.csv, per band, then a
# side-by-side timing pass. Usage: OUT=docs/results/frontier_dev MODEL=src/tabes/checkpoints/sudoku bash scripts/frontier.sh
set -euo pipefail
FILE=${FILE:-../shared/data/sudoku/dev.csv}
OUT=${OUT:-docs/results/frontier_dev}
MODEL=${MODEL:-src/tabes/checkpoints/sudoku}
run() { tabes bench sudoku --file "$FILE" --model "$MODEL" --by-source --out "$OUT" --no-progress "$@"; }
# one cell per step at 81 steps: the one-forward samplers BoE must beat and BoE itself
run --steps 81 --samplers confidence,margin,boe
# about three cells per step: every sampler and BoE variant
run --steps 27 --samplers confidence,margin,entropy,pc:lam=0,klass,dus,remdm:schedule=confidence,boe,boe:point=mask,boe:repair=0.1,boe:consistency=true,bon:n=4 \
    --timing "${TIMING:-2}"
