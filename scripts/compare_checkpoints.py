"""Per-band puzzles solved by two checkpoints, and the project's rule for replacing the shipped one.

    python scripts/compare_checkpoints.py docs/results/dev_full_v2 docs/results/dev_full_v5

Both folders are ``tabes bench sudoku --by-source`` outputs (``results.jsonl``). For every
sampler and step count present in both, prints solved counts per band and pooled, and whether
NEW may replace OLD: at least as many solved in every band minus one puzzle, and more pooled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(folder: str) -> dict[tuple[str, int], dict[str, tuple[int, int]]]:
    """{(sampler, steps): {band: (solved, n)}} from a bench folder's results.jsonl."""
    out: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
    for line in (Path(folder) / "results.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.setdefault((r["sampler"], r["steps"]), {})[r["source"]] = (r["solved"], r["n"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", help="bench folder of the shipped checkpoint")
    ap.add_argument("new", help="bench folder of the candidate")
    args = ap.parse_args()
    old, new = load(args.old), load(args.new)
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        bands = sorted(a.keys() & b.keys())
        print(f"\n{key[0]} at {key[1]} steps\n")
        print("| band | n | old | new | new - old |")
        print("|---|---|---|---|---|")
        for band in bands:
            print(f"| {band} | {a[band][1]} | {a[band][0]} | {b[band][0]} | {b[band][0] - a[band][0]:+d} |")
        sa, sb, n = sum(a[x][0] for x in bands), sum(b[x][0] for x in bands), sum(a[x][1] for x in bands)
        print(f"| **all** | {n} | {sa} | {sb} | {sb - sa:+d} |")
        worse = [x for x in bands if b[x][0] < a[x][0] - 1]
        verdict = "may replace" if not worse and sb > sa else "may not replace"
        print(f"\nnew {verdict} old" + (f" (more than one puzzle lost in: {', '.join(worse)})" if worse else ""))


if __name__ == "__main__":
    main()
