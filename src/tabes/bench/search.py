"""``tabes bench search``: what a complete search buys over the decode, and which branching rule.

One run on a puzzle file, on one model, side by side:

1. ``decode``: every puzzle decoded with ``sampler`` (``tabes solve --search none``), timed;
2. ``solve``: the same with the default search after an invalid decode (what ``tabes solve``
   does), timed; the ratio of the two wall-clocks is the price of never failing;
3. for each branching ``rule`` (any step sampler's ranking, or ``mrv``, model-free), a ``dfs``
   from the givens of the puzzles the decode got wrong (all of them, or the first
   ``rule_limit`` per band), with singles propagation and, on the first ``off_limit`` of them
   per band, without it: nodes, backtracks, forwards and backwards per puzzle (median, p95),
   solved and given up.

Rows (``results.jsonl``): ``{"part", "rule", "propagate", "source", "n", "solved", "gave_up",
"nodes_median", "nodes_p95", "backtracks_mean", "backtracks_median", "backtracks_p95",
"forwards_median", "forwards_p95", "backwards_mean", "wall_s", "wall_s_per_puzzle", "cpu",
"threads", "max_nodes", "wall_s_median", "wall_s_p95"}`` (``part``: decode, solve or rule).
``wall_s_per_puzzle`` is a batch's time over its puzzles. The rules' searches run ``rule_batch_size``
puzzles at a time (default 1): at 1, ``wall_s_median`` and ``wall_s_p95`` are each puzzle's own
search time, measured alone; otherwise they are ``None``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from tabes.hardware import cpu_info
from tabes.tasks import sudoku


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    s = sorted(values)
    return float(s[min(len(s) - 1, int(round(q * (len(s) - 1))))])


def _row(
    part: str, rule: str, propagate: bool | None, source: str, res: list, wall: float, max_nodes: int, times: list | None = None
) -> dict:
    n = len(res)
    nodes = [r.nodes for r in res]
    bts = [r.backtracks for r in res]
    fw = [r.forwards for r in res]
    return {
        "part": part,
        "rule": rule,
        "propagate": propagate,
        "source": source,
        "n": n,
        "solved": sum(bool(r.correct if r.correct is not None else r.valid) for r in res),
        "gave_up": sum(r.path == "unsolved" for r in res),
        "nodes_median": statistics.median(nodes) if n else 0,
        "nodes_p95": percentile(nodes, 0.95),
        "backtracks_mean": round(sum(bts) / max(n, 1), 2),
        "backtracks_median": statistics.median(bts) if n else 0,
        "backtracks_p95": percentile(bts, 0.95),
        "forwards_median": statistics.median(fw) if n else 0,
        "forwards_p95": percentile(fw, 0.95),
        "backwards_mean": round(sum(r.backwards for r in res) / max(n, 1), 2),
        "wall_s": round(wall, 2),
        "wall_s_per_puzzle": round(wall / max(n, 1), 4),
        "cpu": cpu_info().describe(),
        "threads": torch.get_num_threads(),
        "max_nodes": max_nodes,
        "wall_s_median": round(statistics.median(times), 4) if times else None,
        "wall_s_p95": round(percentile(times, 0.95), 4) if times else None,
    }


def _search_only(
    model, puzzles: list[list[int]], solutions, spec: str, batch_size: int, seed: int
) -> tuple[list, float, list[float] | None]:
    """A dfs from the givens of every puzzle (as if each decode had failed).

    Returns (Solved list, seconds, each puzzle's seconds or ``None`` when ``batch_size > 1``).
    """
    start = time.perf_counter()
    out: list = []
    times: list[float] = []
    gen = torch.Generator().manual_seed(seed)
    for lo in range(0, len(puzzles), batch_size):
        chunk = puzzles[lo : lo + batch_size]
        res = [sudoku.Solved(list(p), False, None, 0, 0, 0.0) for p in chunk]  # nothing decoded: search every one
        t0 = time.perf_counter()
        sudoku.search_invalid(model, chunk, res, spec, gen, solutions[lo : lo + batch_size])
        times.append(time.perf_counter() - t0)
        out += res
    return out, time.perf_counter() - start, (times if batch_size == 1 else None)


def run_search_bench(
    file: str | Path,
    *,
    rules: list[str],
    sampler: str = "confidence",
    steps: int = 81,
    search: str = sudoku.DEFAULT_SEARCH,
    max_nodes: int = 100000,
    rule_limit: int | None = None,
    off_limit: int = 3,
    off_max_nodes: int = 2000,
    sink=None,
    limit: int | None = None,
    batch_size: int = 64,
    rule_batch_size: int = 1,
    solve: bool = True,
    seed: int = 0,
    model=None,
    progress: bool = True,
) -> list[dict]:
    """The rows of the module docstring, per band (``source``) and pooled (``source="all"``);
    ``solve=False`` leaves out the decode-then-search part (the rules' part still decodes first)."""
    from tabes.loading import load

    records = sudoku.read_csv(file)
    if limit is not None:
        bands: dict[str, list] = {}
        for r in records:
            bands.setdefault(sudoku.band(r.source), []).append(r)
        records = [r for rs in bands.values() for r in rs[:limit]]
    model = model if model is not None else load()
    cells = [r.cells for r in records]
    sols = [r.solution for r in records]
    say = print if progress else (lambda *a, **k: None)
    rows: list[dict] = []

    def per_band(part: str, rule: str, propagate: bool | None, recs: list, res: list, wall: float, budget: int, times=None) -> None:
        by: dict[str, list] = {}
        by_t: dict[str, list] = {}
        for k, (rec, x) in enumerate(zip(recs, res)):
            by.setdefault(sudoku.band(rec.source), []).append(x)
            if times is not None:
                by_t.setdefault(sudoku.band(rec.source), []).append(times[k])
        share = wall / max(len(res), 1)
        new = [_row(part, rule, propagate, src, by[src], share * len(by[src]), budget, by_t.get(src)) for src in sorted(by)]
        new.append(_row(part, rule, propagate, "all", res, wall, budget, times))
        rows.extend(new)
        if sink is not None:  # a killed run keeps every finished part
            sink(new)

    say(f"decode: {len(cells)} puzzles with {sampler}, {steps} steps")
    start = time.perf_counter()
    decoded = sudoku.decode_puzzles(model, cells, sampler=sampler, steps=steps, seed=seed, solutions=sols, batch_size=batch_size)
    per_band("decode", sampler, None, records, decoded, time.perf_counter() - start, 0)
    if solve:
        say(f"solve: the same, then {search} where the decode is invalid")
        start = time.perf_counter()
        solved = sudoku.decode_puzzles(
            model, cells, sampler=sampler, steps=steps, seed=seed, solutions=sols, batch_size=batch_size, search=search
        )
        per_band("solve", search, True, records, solved, time.perf_counter() - start, max_nodes)
    hard = [records[k] for k, r in enumerate(decoded) if not r.correct]
    for rule in rules:
        for propagate in (True, False):
            budget = max_nodes if propagate else off_max_nodes
            limit_here = rule_limit if propagate else off_limit
            if limit_here is not None and limit_here <= 0:
                continue
            recs = hard if limit_here is None else _first_per_band(hard, limit_here)
            spec = f"dfs:rule={rule},max_nodes={budget},propagate={propagate}"
            say(f"{spec}: {len(recs)} puzzles the decode got wrong")
            cells_here, sols_here = [r.cells for r in recs], [r.solution for r in recs]
            res, wall, times = _search_only(model, cells_here, sols_here, spec, rule_batch_size, seed)
            per_band("rule", rule, propagate, recs, res, wall, budget, times)
    return rows


def _first_per_band(records: list, n: int) -> list:
    """The first ``n`` records of each band, in file order."""
    taken: dict[str, int] = {}
    out = []
    for r in records:
        b = sudoku.band(r.source)
        if taken.get(b, 0) < n:
            out.append(r)
            taken[b] = taken.get(b, 0) + 1
    return out


def report(rows: list[dict]) -> str:
    """A markdown report of :func:`run_search_bench`'s rows (pooled rows first, then per band)."""
    out = []
    pooled = [r for r in rows if r["source"] == "all"]
    dec = next(r for r in pooled if r["part"] == "decode")
    sol = next((r for r in pooled if r["part"] == "solve"), None)
    out.append(f"CPU {dec['cpu']}, {dec['threads']} threads.\n")
    if sol is not None:
        out.append(
            f"decode ({dec['rule']}): {dec['solved']}/{dec['n']} solved in {dec['wall_s']} s; "
            f"solve (decode, then {sol['rule']} where invalid): {sol['solved']}/{sol['n']} in {sol['wall_s']} s "
            f"({sol['wall_s'] / max(dec['wall_s'], 1e-9):.2f}x the decode's wall-clock), {sol['gave_up']} given up.\n"
        )
    cols = ["part", "rule", "propagate", "source", "n", "solved", "gave_up", "nodes_median", "nodes_p95", "backtracks_mean"]
    cols += ["backtracks_median", "backtracks_p95", "forwards_median", "forwards_p95", "backwards_mean", "wall_s_per_puzzle"]
    cols += ["wall_s_median", "wall_s_p95"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    for r in sorted(rows, key=lambda r: (r["source"] != "all", r["source"], r["part"] != "decode", r["part"] != "solve")):
        out.append("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"
