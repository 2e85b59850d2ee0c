"""Learning-curve table (markdown) and PNG from a run's train_log.jsonl.

    python scripts/training_report.py RUN_DIR/train_log.jsonl --png docs/results/training_curve.png

Rows: every evaluation record (held-out generated puzzles and, where logged with
``--eval-file``, each real-puzzle band), with the smoothed training loss logged at that step,
training minutes and samples seen (batch size from ``--batch`` entries, as the run changed it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="train_log.jsonl")
    ap.add_argument("--png", help="write the curve here")
    ap.add_argument("--batch", action="append", default=[], help="FROM_STEP:BATCH, e.g. 0:128 --batch 3200:256")
    args = ap.parse_args()
    log = [json.loads(x) for x in Path(args.log).read_text().splitlines() if x.strip()]
    batches = sorted((int(a), int(b)) for a, b in (x.split(":") for x in args.batch)) or [(0, 128)]

    def samples(step: int) -> int:
        total = 0
        for i, (start, size) in enumerate(batches):
            end = batches[i + 1][0] if i + 1 < len(batches) else step
            total += max(0, min(step, end) - start) * size
        return total

    loss = {r["step"]: r["loss"] for r in log if "loss" in r}
    evals = [r for r in log if "eval_solved" in r]
    bands = sorted({b for r in evals for b in r.get("bands", {})})
    head = ["step", "minutes", "samples", "loss", "held-out", *bands]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in evals:
        cells = [str(r["step"]), f"{r['seconds'] / 60:.0f}", f"{samples(r['step']) / 1e6:.2f}M"]
        cells.append(f"{loss[r['step']]:.3f}" if r["step"] in loss else "-")
        cells.append(f"{100 * r['eval_solved']:.1f}")
        cells += [f"{100 * r['bands'][b]:.0f}" if b in r.get("bands", {}) else "-" for b in bands]
        print("| " + " | ".join(cells) + " |")
    if args.png:
        from tabes.bench.plots import training_curve_png

        training_curve_png(log, args.png, title=f"{Path(args.log).parent.name}: greedy confidence, 81 steps")
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
