"""Every sampler's Pareto plot on the full dev set, with ``tabes solve``'s default added: the
confidence decode and then a dfs from the givens where the decode is invalid.

    python scripts/search_pareto.py docs/results/dev_full_v13 docs/results/dev_full_v12 docs/results/search_dev

The samplers' cells come from the first two folders (``tabes bench sudoku`` runs); the
``confidence`` and ``dfs`` cells' wall-clock from the third (``tabes bench search``, decode and
solve timed side by side), the dfs cell's forward-equivalents from the confidence decode (the
default rule, ``mrv``, runs no forward of its own). Writes ``pareto.png`` in the third folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tabes.bench.plots import pareto_plot
from tabes.bench.sudoku import read_results, wilson


def main(samplers: str, confidence: str, search: str) -> None:
    records = [r for r in read_results(Path(samplers) / "results.jsonl") if r["sampler"] != "confidence"]
    conf = {r["source"]: r for r in read_results(Path(confidence) / "results.jsonl") if r["sampler"] == "confidence"}
    rows = [json.loads(line) for line in (Path(search) / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if row["source"] == "all" or row["part"] not in ("decode", "solve"):
            continue
        base = conf[row["source"]]
        lo, hi = wilson(row["solved"], row["n"])
        rec = {**base, "solved": row["solved"], "accuracy": row["solved"] / row["n"], "ci_low": lo, "ci_high": hi, "wall_s": row["wall_s"]}
        if row["part"] == "solve":
            spec = dict(kv.split("=") for kv in row["rule"].split(":", 1)[1].split(","))
            rec.update(sampler="dfs", options={"rule": spec["rule"], "max_nodes": int(spec["max_nodes"])})
        records.append(rec)
    print(pareto_plot(records, Path(search) / "pareto.png"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
