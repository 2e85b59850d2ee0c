"""Why BoE wins or loses on Sudoku: where it departs from confidence order, whether those
departures are right, and when a trajectory commits its first wrong digit (after which it
cannot recover: no sampler here un-commits a cell, except remdm).

    python scripts/trace_analysis.py --file docs/results/dev_strat50.csv --bands 17clue,magictour,forum \\
        --samplers confidence,boe,boe:point=mask --json docs/results/trace_analysis.json

For every puzzle and sampler it decodes with a trace (greedy, seed 0), then replays the
trajectory: at each step, one forward on the state before the step gives the positions that
plain confidence order would have committed; a step is an *override* when the sampler
committed other positions. A committed digit is wrong when it differs from the known solution.
Override and error rates count the steps taken from a still-correct state (up to and including
the first wrong commit); after that every trajectory is lost.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from tabes import generate, load
from tabes.protocol import predict
from tabes.samplers.base import top_k_mask
from tabes.tasks import sudoku


def analyse(model, records, spec: str, steps: int) -> dict:
    ids = torch.tensor([sudoku.to_ids(r.cells) for r in records])
    out = generate(model, ids, sampler=spec, steps=steps, trace=True)
    by_row: dict[int, list[dict]] = {}
    for rec in out.trace:
        by_row.setdefault(rec["row"], []).append(rec)
    n_steps = n_over = wrong_over = wrong_agree = 0
    first_wrong = []  # (fraction of the trajectory done, was it an override, confidence of the wrong digit)
    solved = 0
    for row, recs in sorted(by_row.items()):
        sol = records[row].solution
        x = ids[row : row + 1].clone()
        found = False
        for rec in sorted(recs, key=lambda r: r["step"]):
            masked = x == model.mask_id
            with torch.no_grad():
                pred = predict(model, x, where=masked)
            conf_top = set(top_k_mask(pred.confidence, masked, torch.tensor([len(rec["positions"])]))[0].nonzero().squeeze(-1).tolist())
            over = set(rec["positions"]) != conf_top
            wrong = [p for p, t in zip(rec["positions"], rec["tokens"]) if t + 1 != sol[p]]  # ids are digit - 1
            if not found:  # rates over the steps taken from a still-correct state
                n_steps += 1
                n_over += over
                if wrong:
                    wrong_over += over
                    wrong_agree += not over
                    found = True
                    i = rec["positions"].index(wrong[0])
                    first_wrong.append((rec["step"] / max(1, len(recs)), over, rec["confidence"][i]))
            x[0, rec["positions"]] = torch.tensor(rec["tokens"])
        solved += not found
    n_fail = len(first_wrong)
    return {
        "sampler": spec,
        "puzzles": len(records),
        "solved": solved,
        "steps_from_correct_states": n_steps,
        "override_rate": round(n_over / max(1, n_steps), 4),
        "wrong_rate_when_override": round(wrong_over / max(1, n_over), 4) if n_over else None,
        "wrong_rate_when_agreeing": round(wrong_agree / max(1, n_steps - n_over), 4),
        "failures": n_fail,
        "first_wrong_at_median_fraction": round(statistics.median(f for f, _, _ in first_wrong), 3) if n_fail else None,
        "first_wrong_is_override": round(sum(o for _, o, _ in first_wrong) / n_fail, 3) if n_fail else None,
        "first_wrong_median_confidence": round(statistics.median(c for _, _, c in first_wrong), 3) if n_fail else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--bands", default="", help="comma-separated source prefixes (default: all)")
    ap.add_argument("--per-band", type=int, default=50)
    ap.add_argument("--samplers", default="confidence,boe")
    ap.add_argument("--steps", type=int, default=81)
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    model = load()
    records = [r for r in sudoku.read_csv(args.file) if r.solution is not None]
    prefixes = [b for b in args.bands.split(",") if b]
    chosen: dict[str, list] = {}
    for r in records:
        key = next((p for p in prefixes if r.source.startswith(p)), None) if prefixes else r.source
        if key is not None and len(chosen.setdefault(key, [])) < args.per_band:
            chosen[key].append(r)
    rows = []
    for band, recs in sorted(chosen.items()):
        for spec in args.samplers.split(","):
            row = {"band": band, **analyse(model, recs, spec.replace(";", ","), args.steps)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    main()
