#!/usr/bin/env bash
# The frontier of docs/evidence.md: every sampler on the whole dev.csv, per band, at 27 and 81
# steps, then a side-by-side timing pass over every configuration in the folder. Finished cells
# are skipped, so the script resumes. Usage:
#   OUT=docs/results/frontier_dev MODEL=src/tabes/checkpoints/sudoku bash scripts/frontier.sh
set -euo pipefail
FILE=${FILE:-../shared/data/sudoku/dev.csv}
OUT=${OUT:-docs/results/frontier_dev}
MODEL=${MODEL:-src/tabes/checkpoints/sudoku}
run() { tabes bench sudoku --file "$FILE" --model "$MODEL" --by-source --out "$OUT" --no-progress "$@"; }
ONE_FORWARD=confidence,margin,entropy,pc:lam=0,klass,remdm:schedule=confidence,random
# about three cells per step: every sampler and BoE variant, with the ablations of adaptive
# steering (ambiguity, steer_below) and the contradiction thresholds of the re-maskers
run --steps 27 --samplers $ONE_FORWARD,dus,eb,threshold,lookahead,bon:n=4,boe,boe:point=mask,boe:consistency=true,boe:repair=0.1,boe:repair=0.3,remdm:schedule=confidence,threshold=0.3,boe:ambiguity=0.1,boe:steer_below=0.99
# one cell per step (eb and threshold size their own steps below that)
run --steps 81 --samplers $ONE_FORWARD,dus,eb,threshold,lookahead,bon:n=4,boe
# the side-by-side timing pass (every configuration above; no cell is decoded again)
run --steps 27 --samplers confidence --timing "${TIMING:-2}"
