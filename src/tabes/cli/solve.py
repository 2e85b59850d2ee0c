"""``tabes solve``: one puzzle or a CSV file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tabes.cli.common import UserError, nonneg_float, positive_int
from tabes.tasks.sudoku import DEFAULT_SEARCH

STATUS_HELP = (
    "status of a puzzle: solved (the grid is the solution), invalid (it breaks a rule or a given), "
    "wrong (valid but not the file's solution), no_solution, multiple_solutions; 'path' says whether the decode "
    "or the search produced the grid"
)


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "solve",
        help="solve 9x9 Sudoku puzzles with the shipped model",
        description="Solve one puzzle (exit 0 when solved; 1 when the puzzle has no solution, several solutions or the "
        "decoded grid is invalid; 2 on bad input) or a CSV file (exit 0; each JSONL record carries a 'status': " + STATUS_HELP + ").",
    )
    p.add_argument("puzzle", nargs="?", help="81 characters, 0 or . for blanks")
    p.add_argument("--file", help="CSV with a 'puzzle' column (optional 'solution', 'source')")
    p.add_argument("--out", help="with --file: append one JSON record per puzzle to this JSONL file as batches finish")
    p.add_argument("--resume", action="store_true", help="with --out: skip the puzzles already in OUT and complete the rest")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace an existing OUT")
    p.add_argument("--skip-bad-rows", action="store_true", help="with --file: decode the good rows and list the skipped line numbers")
    p.add_argument("--limit", type=positive_int, help="solve only the first N puzzles of --file")
    p.add_argument(
        "--sampler",
        default="confidence",
        help="sampler spec, e.g. confidence (the default, see docs/evidence.md), boe or bon:n=4 (see `tabes samplers`)",
    )
    p.add_argument(
        "--search",
        default=DEFAULT_SEARCH,
        help="when the decoded grid is invalid, search from the givens with this dfs spec (default %(default)s; "
        "rule= any sampler ranking or mrv; see docs/evidence.md), or 'none' to report the decode as it is",
    )
    p.add_argument("--steps", type=positive_int, default=81, help="denoising steps (81 = one cell per step)")
    p.add_argument("--temperature", type=nonneg_float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    p.add_argument("--json", action="store_true", help="print one JSON record instead of a board")
    p.add_argument("--trace-png", help="draw the grid coloured by the step that committed each cell (needs the plot extra)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_solve)


def cmd_solve(args: argparse.Namespace) -> int:
    from tabes.files import check_output_file
    from tabes.samplers import get_sampler

    sampler = get_sampler(args.sampler)  # unknown names fail before the model loads
    args.search = None if args.search == "none" else args.search
    if args.search is not None and get_sampler(args.search).name != "dfs":
        raise UserError(f"--search must be a dfs spec or 'none', got {args.search!r}")
    if (args.puzzle is None) == (args.file is None):
        raise UserError("give either a PUZZLE or --file IN.csv")
    if args.puzzle is not None:
        for flag, value in (("--out", args.out), ("--resume", args.resume), ("--skip-bad-rows", args.skip_bad_rows)):
            if value:
                raise UserError(f"{flag} goes with --file, not with a single PUZZLE")
        if args.trace_png:
            check_output_file(args.trace_png, "--trace-png")
        return _solve_one(args, sampler)
    if args.trace_png:
        raise UserError("--trace-png goes with a single PUZZLE, not with --file")
    if (args.resume or args.overwrite) and not args.out:
        raise UserError("--resume and --overwrite go with --out")
    if args.out:
        check_output_file(args.out, "--out")
    return _solve_file(args, sampler)


def _solve_one(args: argparse.Namespace, sampler) -> int:
    import sys

    from tabes.loading import load
    from tabes.tasks import sudoku

    cells = sudoku.parse_puzzle(args.puzzle)
    sudoku.validate_puzzle(cells)
    status = sudoku.solution_status(cells)
    if status == "no solution":
        if args.json:
            print(json.dumps({"puzzle": args.puzzle, "output": None, "status": "no_solution"}))
        print("tabes: the puzzle has no solution", file=sys.stderr)
        return 1
    model = load(args.model)
    trace: list[dict] = []
    [res] = sudoku.decode_puzzles(
        model,
        [cells],
        sampler=sampler,
        steps=args.steps,
        temperature=args.temperature,
        seed=args.seed,
        trace=trace if args.trace_png else None,
        search=args.search,
    )
    consistent = all(not p or p == g for p, g in zip(cells, res.grid))
    outcome = "multiple_solutions" if status == "multiple solutions" else ("solved" if res.valid else "invalid")
    clashes = set(sudoku.clash_cells(res.grid))
    if args.trace_png:
        from tabes.bench.plots import trace_grid_png

        steps_of: list[int | None] = [None] * 81
        for rec in trace:
            for pos in rec["positions"]:
                steps_of[pos] = rec["step"]
        title = f"{sampler.name}, {args.steps} steps: {res.forwards} forwards, {res.backwards} backwards"
        trace_grid_png(cells, res.grid, steps_of, clashes, args.trace_png, title=title, status=_status_line(res.valid, clashes, status))
    if args.json:
        rec = {"puzzle": args.puzzle, "output": sudoku.grid_str(res.grid), "status": outcome, "valid": res.valid, "consistent": consistent}
        rec.update(sampler=sampler.name, forwards=res.forwards, backwards=res.backwards, seconds=round(res.seconds, 4))
        rec.update(path=res.path, nodes=res.nodes, backtracks=res.backtracks)
        print(json.dumps(rec))
    else:
        print(sudoku.format_board(res.grid, clashes))
        print(f"valid: {'yes' if res.valid else 'no'}; consistent with the givens: {'yes' if consistent else 'no'}")
        line = f"sampler {sampler.name}, {res.forwards} forwards, {res.backwards} backwards, {res.seconds:.2f} s"
        if res.path != "decode":
            line += f"; the decode was invalid, search: {res.nodes} nodes, {res.backtracks} backtracks" + (
                "" if res.path == "search" else ", no solution found within the budget"
            )
        print(line)
    if status == "multiple solutions":
        print("tabes: the puzzle has 2+ solutions" + ("; the grid above is one of them" if res.valid else ""), file=sys.stderr)
        return 1
    return 0 if res.valid else 1


def _status_line(valid: bool, clashes: set[int], status: str) -> str:
    if not valid:
        return f"invalid: {len(clashes)} clashing cells" if clashes else "invalid: breaks a given or leaves a blank"
    return "valid, but the puzzle has 2+ solutions" if status == "multiple solutions" else "solved: valid and keeps every given"


def _read_done(out: Path) -> dict[int, dict]:
    """Records already in ``out`` by file line; a partial last line (a killed run) is cut off."""
    if not out.is_file():
        return {}
    raw = out.read_bytes()
    good_end = raw.rfind(b"\n") + 1
    if good_end < len(raw):
        with out.open("r+b") as fh:
            fh.truncate(good_end)
    done = {}
    for k, line in enumerate(raw[:good_end].decode("utf-8", errors="replace").splitlines(), start=1):
        if line.strip():
            try:
                rec = json.loads(line)
                done[int(rec["line"])] = rec
            except (ValueError, KeyError, TypeError):
                raise UserError(f"--resume: {out} line {k} is not a record of 'tabes solve --out'") from None
    return done


def _record(rec, res, sudoku) -> dict:
    """The JSONL record of one decoded puzzle, with its status."""
    if res.correct:
        status = "solved"
    else:
        exact = sudoku.solution_status(rec.cells)
        if exact == "no solution":
            status = "no_solution"
        elif exact == "multiple solutions":
            status = "multiple_solutions"
        elif not res.valid:
            status = "invalid"
        else:
            status = "solved" if res.correct is None else "wrong"
    row = {"line": rec.line, "puzzle": rec.puzzle, "output": sudoku.grid_str(res.grid), "status": status, "valid": res.valid}
    if res.correct is not None:
        row["correct"] = res.correct
    row.update(forwards=res.forwards, backwards=res.backwards, seconds=round(res.seconds, 5))
    row.update(path=res.path, nodes=res.nodes, backtracks=res.backtracks)
    if rec.source:
        row["source"] = rec.source
    return row


def _solve_file(args: argparse.Namespace, sampler) -> int:
    import sys

    from tabes.loading import load
    from tabes.progress import progress_bar
    from tabes.tasks import sudoku

    out = Path(args.out) if args.out else None
    done: dict[int, dict] = {}
    if out is not None and out.is_file() and out.stat().st_size > 0:
        if args.resume:
            done = _read_done(out)
        elif not args.overwrite:
            raise UserError(f"--out {out} exists; use --resume to complete it or --overwrite to replace it")
    skipped: list[tuple[int, str]] = []
    records = sudoku.read_csv(args.file, skipped=skipped if args.skip_bad_rows else None)
    if args.limit is not None:
        records = records[: args.limit]
    if skipped:
        lines = ", ".join(str(n) for n, _ in skipped)
        print(f"tabes: skipped {len(skipped)} bad row(s) of {args.file}, lines {lines}; first: {skipped[0][1]}", file=sys.stderr)
    todo = [r for r in records if r.line not in done]
    model = load(args.model) if todo else None
    sink = None
    if out is not None:
        sink = out.open("a" if args.resume else "w")  # noqa: SIM115 - closed in finally
    solved = sum(done[r.line]["status"] == "solved" for r in records if r.line in done)
    try:
        with progress_bar(len(todo), f"solving ({sampler.name})", "puzzle", disable=args.no_progress) as bar:
            for lo in range(0, len(todo), args.batch_size):
                chunk = todo[lo : lo + args.batch_size]
                results = sudoku.decode_puzzles(
                    model,
                    [r.cells for r in chunk],
                    sampler=sampler,
                    steps=args.steps,
                    temperature=args.temperature,
                    seed=args.seed + lo,
                    solutions=[r.solution for r in chunk],
                    batch_size=args.batch_size,
                    progress=bar.update,
                    search=args.search,
                )
                rows = [_record(rec, res, sudoku) for rec, res in zip(chunk, results)]
                solved += sum(r["status"] == "solved" for r in rows)
                if sink is not None:  # one write per batch, flushed: a kill keeps every finished batch
                    sink.write("".join(json.dumps(r) + "\n" for r in rows))
                    sink.flush()
    finally:
        if sink is not None:
            sink.close()
    n = len(records)
    resumed = f" ({len(records) - len(todo)} from {out})" if done else ""
    print(f"solved {solved}/{n} ({100 * solved / max(n, 1):.1f}%){resumed}")
    return 0
