"""``tabes bench sudoku``: accuracy and compute of samplers on real puzzles, per source band.

A *cell* is (source band x sampler spec x steps). Each finished cell appends one JSON record
to ``DIR/results.jsonl`` with the keys

    sampler, options, steps, source, n, solved, accuracy, ci_low, ci_high,
    forwards, backwards, fwd_equiv, remasked, steered_frac, wall_s, file_sha256, grouping, limit

where ``forwards``/``backwards``/``fwd_equiv`` are means per puzzle (a backward counts as two
forwards), ``remasked`` is the mean number of committed cells masked again per puzzle,
``steered_frac`` the share of decoding steps that BoE steered (null for samplers that do not
steer), ``ci_*`` is the 95% Wilson interval of the accuracy and ``wall_s`` is the cell's
total wall-clock. A killed run resumes: finished cells are read back and skipped, and a
partial last line is cut off before appending. ``DIR/report.md`` and, with the ``plot``
extra, ``DIR/pareto.png`` are rewritten at the end (atomically).

A folder belongs to one puzzle set: every cell records the puzzle file's SHA-256, the grouping
(``by-source`` or ``all``) and ``limit``. A run whose set differs from the cells already in
``DIR`` stops with a ``ValueError`` before decoding anything, unless ``force_new`` starts the
folder afresh, so a report never pools cells of different files or groupings.

A cell's own wall-clock depends on whatever else the machine ran meanwhile. ``timing=N``
(``--timing N``) adds a side-by-side pass: every configuration decodes the same N puzzles per
band in turn, over a few rounds, and ``DIR/timing.json`` keeps the medians; the report and the
plot then use those times (per configuration, for every band) and say so.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

from tabes import dist
from tabes.files import atomic_write_text, check_output_dir
from tabes.samplers import get_sampler, spec_label
from tabes.samplers.base import config_fields
from tabes.tasks import sudoku


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _describe(identity: dict) -> str:
    sha = identity.get("file_sha256")
    limit = identity.get("limit")
    return f"file sha256 {sha[:12] if sha else 'not recorded'}, grouping {identity.get('grouping') or 'not recorded'}" + (
        f", first {limit}" if limit else ""
    )


def wilson(solved: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = solved / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _cell_key(sampler: str, options: dict, steps: int, source: str) -> str:
    return json.dumps([sampler, options, steps, source], sort_keys=True)


def read_results(path: Path) -> list[dict]:
    """Records of ``results.jsonl``, one per cell; a partial last line (a killed run) is cut off the file."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    good_end = raw.rfind(b"\n") + 1
    if good_end < len(raw):  # partial line after the last newline
        with path.open("r+b") as fh:
            fh.truncate(good_end)
    cells: dict[str, dict] = {}
    for line in raw[:good_end].decode().splitlines():
        if line.strip():
            rec = _with_defaults(json.loads(line))
            key = _cell_key(rec["sampler"], rec["options"], rec["steps"], rec["source"])
            cells.pop(key, None)  # a cell recorded twice counts once: the later record
            cells[key] = rec
    return list(cells.values())


def _with_defaults(rec: dict) -> dict:
    """A record written before a sampler option existed ran with that option's default: fill it
    in, so the cell keeps matching (no recompute) and keeps its label."""
    try:
        defaults = config_fields(get_sampler(rec["sampler"]).config)
    except ValueError:  # a sampler this version does not have
        return rec
    return {**rec, "options": {**defaults, **rec["options"]}}


def run_sudoku_bench(
    file: str | Path,
    samplers: list[str],
    steps: list[int],
    out: str | Path,
    *,
    limit: int | None = None,
    by_source: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    model=None,
    progress: bool = True,
    timing: int = 0,
    timing_repeats: int = 3,
    force_new: bool = False,
) -> list[dict]:
    """Run every missing cell and return all records of ``out/results.jsonl``.

    With ``timing > 0`` it then times every (sampler, steps) configuration of the file side by
    side (see :func:`time_configs`) on the first ``timing`` puzzles of each source band and
    writes ``out/timing.json``; the report and the plot then use those times for wall-clock.
    """
    from tabes.loading import load

    for s in steps:
        if s <= 0:
            raise ValueError(f"steps must be positive, got {s}")
    specs = []
    for spec in samplers:
        sampler = get_sampler(spec)  # validates names and options up front
        specs.append((spec, sampler.name, config_fields(sampler.config)))
    records = sudoku.read_csv(file)
    if limit is not None:
        records = records[:limit]
    groups: dict[str, list] = defaultdict(list)
    for r in records:
        groups[sudoku.band(r.source) if by_source else "all"].append(r)
    out = check_output_dir(out, "--out")
    results_path = out / "results.jsonl"
    identity = {"file_sha256": file_digest(file), "grouping": "by-source" if by_source else "all", "limit": limit}
    if force_new and dist.is_main():
        for name in ("results.jsonl", "timing.json", "report.md", "pareto.png"):
            (out / name).unlink(missing_ok=True)
    dist.barrier()
    existing = read_results(results_path)
    for r in existing:
        theirs = {k: r.get(k) for k in identity}
        if theirs != identity:
            raise ValueError(
                f"{out} holds cells of another puzzle set ({_describe(theirs)}; this run: {_describe(identity)}); "
                "use another --out or --force-new to start the folder afresh"
            )
    done = {_cell_key(r["sampler"], r["options"], r["steps"], r["source"]) for r in existing}
    todo = [
        (src, spec, name, opts, st)
        for src in sorted(groups)
        for spec, name, opts in specs
        for st in steps
        if _cell_key(name, opts, st, src) not in done
    ]
    model = model if model is not None else load()
    new_records: list[dict] = []
    bar = None
    if progress and dist.is_main():
        from tabes.progress import progress_bar

        total = sum(len(groups[src]) for src, *_ in todo)
        bar = progress_bar(total, f"{len(todo)} cells", "puzzle")
    try:
        for k, (src, spec, name, opts, st) in enumerate(todo):
            recs = groups[src]
            if bar is not None:
                bar.set_description(f"cell {k + 1}/{len(todo)}: {src} {spec} steps={st}")
            start = time.perf_counter()
            mine = dist.shard(recs)  # under torchrun / accelerate each rank decodes a share
            res = sudoku.decode_puzzles(
                model,
                [r.cells for r in mine],
                sampler=get_sampler(spec),
                steps=st,
                seed=seed,
                solutions=[r.solution for r in mine],
                batch_size=batch_size,
                progress=None if bar is None else lambda n: bar.update(n * dist.world_size()),
            )
            res = dist.gather(res)
            wall = dist.max_over_ranks(time.perf_counter() - start)
            n = len(res)
            solved = sum(bool(x.correct if x.correct is not None else x.valid) for x in res)
            lo, hi = wilson(solved, n)
            fw = sum(x.forwards for x in res) / n
            bw = sum(x.backwards for x in res) / n
            steered = None if any(x.steered is None for x in res) else sum(x.steered for x in res) / max(sum(x.steps for x in res), 1)
            rec = {
                "sampler": name,
                "options": opts,
                "steps": st,
                "source": src,
                "n": n,
                "solved": solved,
                "accuracy": round(solved / n, 4),
                "ci_low": round(lo, 4),
                "ci_high": round(hi, 4),
                "forwards": round(fw, 2),
                "backwards": round(bw, 2),
                "fwd_equiv": round(fw + 2 * bw, 2),
                "remasked": round(sum(x.remasked for x in res) / n, 3),
                "steered_frac": None if steered is None else round(steered, 4),
                "wall_s": round(wall, 2),
                **identity,
            }
            new_records.append(rec)
            if dist.is_main():
                with results_path.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
    finally:
        if bar is not None:
            bar.close()
    if not dist.is_main():
        return new_records  # other ranks: the cells of this call (rank 0 owns the files)
    all_records = read_results(results_path)
    if timing > 0:
        configs = sorted({(r["sampler"], json.dumps(r["options"], sort_keys=True), r["steps"]) for r in all_records})
        subset = [r.cells for src in sorted(groups) for r in groups[src][:timing]]
        times = time_configs(model, subset, [(n, json.loads(o), st) for n, o, st in configs], repeats=timing_repeats, seed=seed)
        atomic_write_text(out / "timing.json", json.dumps(times, indent=1) + "\n")
    all_records = apply_timing(all_records, out / "timing.json")
    atomic_write_text(out / "report.md", render_report(all_records, file=str(file), seed=seed, limit=limit))
    try:
        from tabes.bench.plots import pareto_plot

        pareto_plot(all_records, out / "pareto.png")
    except ImportError:  # the plot extra is not installed
        print("pareto.png skipped: install the plot extra (pip install 'tabes[plot]')")
    return all_records


def time_configs(model, puzzles: list[list[int]], configs: list[tuple[str, dict, int]], *, repeats: int = 3, seed: int = 0) -> list[dict]:
    """Wall-clock of each (sampler, options, steps) on the same puzzles, side by side.

    All puzzles go in one batch; the configurations run in turn, ``repeats`` rounds (the order
    rotates each round, so drift in machine load spreads over all of them), and each gets its
    median seconds per puzzle and its ratio to the fastest configuration.
    """
    times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    samplers = [get_sampler(name, **opts) for name, opts, _ in configs]
    for rnd in range(repeats):
        order = list(range(len(configs)))
        order = order[rnd % len(order) :] + order[: rnd % len(order)]
        for i in order:
            start = time.perf_counter()
            sudoku.decode_puzzles(model, puzzles, sampler=samplers[i], steps=configs[i][2], seed=seed, batch_size=len(puzzles))
            times[i].append((time.perf_counter() - start) / len(puzzles))
    med = {i: statistics.median(t) for i, t in times.items()}
    fastest = min(med.values())
    return [
        {
            "sampler": name,
            "options": opts,
            "steps": st,
            "puzzles": len(puzzles),
            "repeats": repeats,
            "s_per_puzzle": round(med[i], 5),
            "ratio_to_fastest": round(med[i] / fastest, 3),
        }
        for i, (name, opts, st) in enumerate(configs)
    ]


def apply_timing(records: list[dict], path: Path) -> list[dict]:
    """Records with ``wall_s`` replaced by the side-by-side time of their configuration (times
    ``n``) when ``path`` (a ``timing.json``) has it; the cell's own time stays in ``cell_wall_s``."""
    if not path.exists():
        return records
    times = {}
    for t in map(_with_defaults, json.loads(path.read_text())):
        times[_cell_key(t["sampler"], t["options"], t["steps"], "")] = t["s_per_puzzle"]
    out = []
    for r in records:
        t = times.get(_cell_key(r["sampler"], r["options"], r["steps"], ""))
        out.append(r if t is None else {**r, "cell_wall_s": r["wall_s"], "wall_s": round(t * r["n"], 3)})
    return out


def summary_table(records: list[dict]) -> str:
    """Markdown pivot: one row per source band, one column per (sampler, steps), accuracy in %."""
    cols = sorted({(spec_label(r), r["steps"]) for r in records})
    cell = {(r["source"], spec_label(r), r["steps"]): r for r in records}
    multi_steps = len({c[1] for c in cols}) > 1
    names = [f"{c[0]} ({c[1]} steps)" if multi_steps else c[0] for c in cols]
    lines = ["| source | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(cols)]
    for src in sorted({r["source"] for r in records}):
        n = next(r["n"] for r in records if r["source"] == src)
        vals = [f"{100 * cell[(src, *c)]['accuracy']:.1f}" if (src, *c) in cell else "-" for c in cols]
        lines.append(f"| {src} | {n} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _pool(records: list[dict]) -> dict[tuple[str, int], tuple[float, float, float, int, int, int]]:
    """(label, steps) -> (wall s/puzzle, fwd-equiv/puzzle, accuracy, solved, n, bands), the
    given records' source bands pooled (weighted by puzzles)."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        groups[spec_label(r), r["steps"]].append(r)
    out = {}
    for key, rows in groups.items():
        sources = [r["source"] for r in rows]
        if len(set(sources)) != len(sources) or ("all" in sources and len(sources) > 1):
            raise ValueError(f"cannot pool {key[0]}@{key[1]}: its cells overlap (sources {sorted(sources)}); each puzzle must count once")
        n = sum(r["n"] for r in rows)
        solved = sum(r["solved"] for r in rows)
        wall = sum(r["wall_s"] for r in rows) / n
        fe = sum(r["fwd_equiv"] * r["n"] for r in rows) / n
        out[key] = (wall, fe, solved / n, solved, n, len(rows))
    return out


def pooled_table(records: list[dict]) -> str:
    """Markdown: one row per (sampler, steps), all source bands pooled (weighted by puzzles)."""
    n_bands = len({r["source"] for r in records})
    lines = [
        "| sampler | steps | solved | accuracy | 95% CI | fwd-equiv/puzzle | wall s/puzzle | re-masked/puzzle | steered steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    extra = _pool_extras(records)
    for (label, steps), (wall, fe, acc, solved, n, bands) in sorted(_pool(records).items()):
        lo, hi = wilson(solved, n)
        note = f" ({bands} bands)" if bands != n_bands else ""
        remasked, steered = extra[label, steps]
        lines.append(
            f"| {label}{note} | {steps} | {solved}/{n} | {100 * acc:.1f}% | {100 * lo:.1f}-{100 * hi:.1f} | {fe:.1f} | {wall:.3f} | "
            f"{remasked} | {steered} |"
        )
    return "\n".join(lines)


def _pool_extras(records: list[dict]) -> dict[tuple[str, int], tuple[str, str]]:
    """(label, steps) -> (re-masked cells per puzzle, share of steered steps), pooled over bands
    (weighted by puzzles) as table text; ``-`` where a cell did not record it (older records,
    or a sampler that does not steer)."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        groups[spec_label(r), r["steps"]].append(r)
    out = {}
    for key, rows in groups.items():
        n = sum(r["n"] for r in rows)
        rem = "-" if any(r.get("remasked") is None for r in rows) else f"{sum(r['remasked'] * r['n'] for r in rows) / n:.2f}"
        st = "-" if any(r.get("steered_frac") is None for r in rows) else f"{100 * sum(r['steered_frac'] * r['n'] for r in rows) / n:.1f}%"
        out[key] = (rem, st)
    return out


def _points(records: list[dict]) -> dict[str, tuple[float, float, float, int, int]]:
    """label@steps -> (wall s/puzzle, fwd-equiv/puzzle, accuracy, solved, n) over the given records."""
    return {f"{label}@{steps}": v[:5] for (label, steps), v in _pool(records).items()}


def frontier_table(records: list[dict], family: str = "boe") -> str:
    """Markdown, one row per source band: is the ``family`` frontier (best accuracy at a cost no
    higher) at or above every other sampler point at equal wall-clock, and at equal
    forward-equivalents? Only points no cheaper than the family's cheapest point are compared
    (cheaper ones lie where the family has no point at all); the points it does not reach are
    listed, and otherwise how many it beats strictly rather than ties."""
    lines = ["| source | by wall-clock | by fwd-equiv |", "|---|---|---|"]
    for src in sorted({r["source"] for r in records}):
        pts = _points([r for r in records if r["source"] == src])
        mine = {k: v for k, v in pts.items() if k.split(":")[0].split("@")[0] == family}
        other = {k: v for k, v in pts.items() if k not in mine}
        if not mine or not other:
            continue
        cells = []
        for axis in (0, 1):
            lo = min(v[axis] for v in mine.values())
            beaten, strict, compared = [], 0, 0
            for k, v in sorted(other.items()):
                if v[axis] < lo:
                    continue
                compared += 1
                best = max(m[2] for m in mine.values() if m[axis] <= v[axis])
                if best < v[2]:
                    beaten.append(f"{k} ({100 * v[2]:.0f}% vs {100 * best:.0f}%)")
                strict += best > v[2]
            if beaten:
                cells.append("below " + ", ".join(beaten))
            elif compared == 0:
                cells.append("nothing to compare")
            else:
                cells.append(f"at or above all {compared} (strictly above {strict})")
        lines.append(f"| {src} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def match_cost_table(records: list[dict], family: str = "boe") -> str:
    """Markdown, all bands pooled: for every other sampler point, the cheapest ``family`` point
    with at least its accuracy and the ratio of their wall-clocks."""
    pts = _points(records)
    mine = {k: v for k, v in pts.items() if k.split(":")[0].split("@")[0] == family}
    lines = [
        f"| sampler@steps | accuracy | wall s/puzzle | cheapest {family} point at least as accurate | its wall s/puzzle | wall ratio |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in sorted(pts.items()):
        if k in mine:
            continue
        ok = [(m[0], name) for name, m in mine.items() if m[2] >= v[2]]
        if ok:
            w, name = min(ok)
            lines.append(f"| {k} | {100 * v[2]:.1f}% | {v[0]:.3f} | {name} | {w:.3f} | {w / v[0]:.2f} |")
        else:
            lines.append(f"| {k} | {100 * v[2]:.1f}% | {v[0]:.3f} | none | - | - |")
    return "\n".join(lines)


def render_report(records: list[dict], *, file: str = "", seed: int = 0, limit: int | None = None) -> str:
    """Markdown tables: accuracy (with 95% CI) per source band and sampler, and compute."""
    head = f"Puzzles: `{Path(file).name}`" + (f" (first {limit})" if limit else "") + f"; seed {seed}; greedy (temperature 0)."
    if any("cell_wall_s" in r for r in records):
        head += (
            " Wall-clock: the side-by-side timing pass (`timing.json`: each configuration's median seconds per puzzle on"
            " the same puzzles, measured in turn), times the cell's puzzles; each cell's own time is `cell_wall_s` in"
            " `results.jsonl`."
        )
    lines = ["# Sudoku benchmark", "", head, "", "Accuracy (%, puzzles solved exactly):", "", summary_table(records), ""]
    lines += ["All source bands pooled:", "", pooled_table(records), ""]
    families = {r["sampler"] for r in records}
    if "boe" in families and len(families) > 1:
        lines += [
            "BoE's frontier (its best accuracy at no higher cost, over every BoE setting and step count) against every other",
            "sampler point no cheaper than BoE's cheapest, per source band (cheaper points are not compared: BoE has no point there):",
            "",
            frontier_table(records),
            "",
            "The cheapest BoE point that reaches each other point's accuracy (all bands pooled):",
            "",
            match_cost_table(records),
            "",
        ]
    by_src: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_src[r["source"]].append(r)
    for src in sorted(by_src):
        rows = sorted(by_src[src], key=lambda r: (spec_label(r), r["steps"]))
        lines += [
            f"## {src} (n = {rows[0]['n']})",
            "",
            "| sampler | steps | solved | accuracy | 95% CI | fwd/puzzle | bwd/puzzle | fwd-equiv | wall s/puzzle |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            acc = f"{r['solved']}/{r['n']} | {100 * r['accuracy']:.1f}% | {100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}"
            cost = f"{r['forwards']:.1f} | {r['backwards']:.1f} | {r['fwd_equiv']:.1f} | {r['wall_s'] / r['n']:.3f}"
            lines.append(f"| {spec_label(r)} | {r['steps']} | {acc} | {cost} |")
        lines.append("")
    return "\n".join(lines)
