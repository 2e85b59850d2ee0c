"""``tabes bench text``: samplers on the text-demo model's word problems (the shipped test split).

Every configuration (sampler x steps x block length) decodes the same problems in the same
batches, in one run, so the wall-clock columns compare side by side. Each row reports exact
match with its 95% Wilson interval, forward-equivalents per problem (a backward counts as two
forwards), seconds per problem, the wall-clock ratio to ``confidence`` at the same steps and
block, and where the errors are (:func:`tabes.tasks.word_problems.diagnose`).
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from tabes.bench.sudoku import wilson
from tabes.tasks import word_problems as wp
from tabes.tasks.text import generate_text

DEFAULT_SAMPLERS = ["random", "confidence", "margin", "entropy", "eb", "threshold", "boe", "boe:steer_below=0.99"]


def run_text_bench(
    model,
    samplers: list[str],
    *,
    steps: list[int],
    blocks: list[int | None],
    problems: list[wp.Problem],
    gen_length: int = 64,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    cache: str = "none",
) -> list[dict]:
    """One row per (sampler, steps, block); see the module docstring for the keys. ``cache``
    applies to the rows with blocks (a row without blocks decodes uncached)."""
    for b in blocks:
        if b is not None and (b <= 0 or gen_length % b):
            raise ValueError(f"block length {b} must divide gen_length {gen_length}")
    for s in steps:
        if s <= 0 or s > gen_length:
            raise ValueError(f"steps must be in 1..{gen_length}, got {s}")
    configs = [(sp, st, bl) for st in steps for bl in blocks for sp in samplers]
    stats = {c: {"right": 0, "fwd": 0.0, "seconds": 0.0, "kinds": Counter(), "places": Counter()} for c in configs}
    bar = None
    if progress:
        from tabes.progress import progress_bar

        bar = progress_bar(len(configs) * len(problems), "bench text", "problem")
    for lo in range(0, len(problems), batch_size):
        chunk = problems[lo : lo + batch_size]
        for c in configs:  # every configuration on this batch before the next batch: side by side
            sampler, st, bl = c
            t0 = time.perf_counter()
            res = generate_text(
                model,
                [p.prompt for p in chunk],
                gen_length=gen_length,
                steps=st,
                block_length=bl,
                sampler=sampler,
                seed=seed,
                cache=cache if bl is not None else "none",
            )
            s = stats[c]
            s["seconds"] += time.perf_counter() - t0
            s["fwd"] += float(res.output.fwd_equiv.float().sum())
            for text, p in zip(res.texts, chunk):
                d = wp.diagnose(text, p)
                s["right"] += d["correct"]
                if not d["correct"]:
                    s["kinds"][d["kind"]] += 1
                    s["places"].update(d["places"])
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    n = len(problems)
    rows = []
    for c in configs:
        sampler, st, bl = c
        s = stats[c]
        lo_, hi_ = wilson(s["right"], n)
        rows.append(
            {
                "sampler": sampler,
                "steps": st,
                "block": bl,
                "cache": cache if bl is not None else "none",
                "gen_length": gen_length,
                "problems": n,
                "exact": round(s["right"] / n, 4),
                "ci_low": round(lo_, 4),
                "ci_high": round(hi_, 4),
                "fwd_equiv": round(s["fwd"] / n, 2),
                "s_per_problem": round(s["seconds"] / n, 5),
                "errors": dict(s["kinds"]),
                "wrong_places": dict(s["places"]),
                "batch_size": batch_size,
                "threads": torch.get_num_threads(),
                "dtype": str(model.token_embeddings().dtype).replace("torch.", ""),
            }
        )
    base = {(r["steps"], r["block"]): r["s_per_problem"] for r in rows if r["sampler"] == "confidence"}
    for r in rows:
        b = base.get((r["steps"], r["block"]))
        r["time_vs_confidence"] = round(r["s_per_problem"] / b, 2) if b else None
    return rows


def report(rows: list[dict]) -> str:
    """A markdown table of the rows."""
    lines = [
        "| sampler | steps | block | exact match (95% CI) | fwd-equiv | s/problem | x confidence time | errors (kind: count) "
        "| wrong digits |",
        "|---|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items(), key=lambda kv: -kv[1])) or "-"
        places = ", ".join(f"{k} {v}" for k, v in sorted(r["wrong_places"].items(), key=lambda kv: -kv[1])) or "-"
        lines.append(
            f"| `{r['sampler']}` | {r['steps']} | {r['block'] or 'none'} | {100 * r['exact']:.1f}% "
            f"({100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}) | {r['fwd_equiv']:.1f} | {r['s_per_problem']:.4f} | "
            f"{r['time_vs_confidence'] if r['time_vs_confidence'] is not None else '-'} | {errs} | {places} |"
        )
    return "\n".join(lines) + "\n"
