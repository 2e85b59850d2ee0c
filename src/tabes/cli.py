"""The ``tabes`` command line: solve, train, samplers.

Every user error (bad puzzle, clashing givens, unknown sampler, bad option, missing file)
exits with code 2 and one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class UserError(Exception):
    """An input problem that ends the command with exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# --------------------------------------------------------------------------- solve


def cmd_solve(args: argparse.Namespace) -> int:
    from tabes import load
    from tabes.samplers import get_sampler
    from tabes.tasks import sudoku

    sampler = get_sampler(args.sampler)  # unknown names fail before the model loads
    if (args.puzzle is None) == (args.file is None):
        raise UserError("give either a PUZZLE or --file IN.csv")
    if args.puzzle is not None:
        cells = sudoku.parse_puzzle(args.puzzle)
        sudoku.validate_puzzle(cells)
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
        )
        consistent = all(not p or p == g for p, g in zip(cells, res.grid))
        if args.trace_png:
            from tabes.bench.plots import trace_grid_png

            steps_of: list[int | None] = [None] * 81
            for rec in trace:
                for pos in rec["positions"]:
                    steps_of[pos] = rec["step"]
            title = f"{sampler.name}, {res.forwards} forwards, {res.backwards} backwards"
            trace_grid_png(cells, res.grid, steps_of, set(_clash_cells(res.grid)), args.trace_png, title=title)
        if args.json:
            print(
                json.dumps(
                    {
                        "puzzle": args.puzzle,
                        "output": sudoku.grid_str(res.grid),
                        "valid": res.valid,
                        "consistent": consistent,
                        "sampler": sampler.name,
                        "forwards": res.forwards,
                        "backwards": res.backwards,
                        "seconds": round(res.seconds, 4),
                    }
                )
            )
        else:
            wrong = {i for i in range(81) if i in set(_clash_cells(res.grid))}
            print(sudoku.format_board(res.grid, wrong))
            print(f"valid: {'yes' if res.valid else 'no'}; consistent with the givens: {'yes' if consistent else 'no'}")
            print(f"sampler {sampler.name}, {res.forwards} forwards, {res.backwards} backwards, {res.seconds:.2f} s")
        return 0 if res.valid else 1

    records = sudoku.read_csv(args.file)
    if args.limit is not None:
        records = records[: args.limit]
    model = load(args.model)
    from tqdm import tqdm

    with tqdm(total=len(records), desc=f"solving ({sampler.name})", unit="puzzle", disable=args.no_progress) as bar:
        results = sudoku.decode_puzzles(
            model,
            [r.cells for r in records],
            sampler=sampler,
            steps=args.steps,
            temperature=args.temperature,
            seed=args.seed,
            solutions=[r.solution for r in records],
            batch_size=args.batch_size,
            progress=bar.update,
        )
    solved = 0
    sink = open(args.out, "w") if args.out else None  # noqa: SIM115
    try:
        for rec, res in zip(records, results):
            ok = res.correct if res.correct is not None else res.valid
            solved += bool(ok)
            row = {"puzzle": rec.puzzle, "output": sudoku.grid_str(res.grid), "valid": res.valid}
            if res.correct is not None:
                row["correct"] = res.correct
            row.update(forwards=res.forwards, backwards=res.backwards, seconds=round(res.seconds, 5))
            if rec.source:
                row["source"] = rec.source
            if sink is not None:
                sink.write(json.dumps(row) + "\n")
    finally:
        if sink is not None:
            sink.close()
    n = len(records)
    print(f"solved {solved}/{n} ({100 * solved / max(n, 1):.1f}%)")
    return 0


def _clash_cells(grid: list[int]) -> list[int]:
    from tabes.tasks.sudoku import BOX, COL, ROW

    bad = []
    for i in range(81):
        for j in range(81):
            if i != j and grid[i] and grid[i] == grid[j] and (ROW[i] == ROW[j] or COL[i] == COL[j] or BOX[i] == BOX[j]):
                bad.append(i)
                break
    return bad


# --------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from tabes.train import TrainConfig, train

    model = {}
    for item in args.model_opt or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"--model-opt {item!r} must look like key=value")
        model[key] = int(value) if value.lstrip("-").isdigit() else value
    cfg = TrainConfig(
        out=args.out,
        minutes=args.minutes,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        eval_every=args.eval_every,
        pool_size=args.pool_size,
        weighting=args.weighting,
        pool_dirs=args.pool_dir or [],
        model=model,
    )
    resume = args.resume
    if args.init_from:
        import shutil

        from tabes.loading import default_model_path

        src = default_model_path() if args.init_from == "shipped" else Path(args.init_from)
        dst = Path(args.out)
        if (dst / "model.safetensors").exists():
            raise UserError(f"--init-from: {dst} already holds a model; use --resume to continue it")
        if not (src / "model.safetensors").is_file():
            raise FileNotFoundError(f"model file not found: {src / 'model.safetensors'}")
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "config.json", "train_state.json", "train_state.safetensors", "train_log.jsonl"):
            if (src / name).is_file():
                shutil.copy(src / name, dst / name)
        resume = True
    state = train(cfg, resume=resume, progress=not args.no_progress)
    print(json.dumps(state))
    return 0


# --------------------------------------------------------------------------- samplers


def cmd_samplers(args: argparse.Namespace) -> int:
    from tabes.samplers import available, describe

    for name, cls in available().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        opts = ", ".join(f"{k}={d!r} ({t})" for k, t, d in describe(name)) or "no options"
        print(f"{name:<11} {doc}")
        print(f"{'':<11} options: {opts}")
    return 0


# --------------------------------------------------------------------------- generate


def cmd_generate(args: argparse.Namespace) -> int:
    from tabes.loading import load
    from tabes.samplers import get_sampler
    from tabes.tasks.text import generate_text

    sampler = get_sampler(args.sampler)
    opts = {"trust_remote_code": args.trust_remote_code}
    if args.kind:
        opts["kind"] = args.kind
    if args.mask_id is not None:
        opts["mask_id"] = args.mask_id
    model = load(args.model, **opts)
    res = generate_text(
        model,
        [args.prompt],
        gen_length=args.gen_length,
        steps=args.steps,
        block_length=args.block_length,
        sampler=sampler,
        temperature=args.temperature,
        seed=args.seed,
        stop_at_eos=not args.no_eos_stop,
    )
    out = res.output
    if args.json:
        print(
            json.dumps(
                {
                    "prompt": args.prompt,
                    "completion": res.texts[0],
                    "sampler": sampler.name,
                    "forwards": int(out.forwards[0]),
                    "backwards": int(out.backwards[0]),
                    "steps": int(out.steps[0]),
                    "seconds": round(out.seconds, 4),
                }
            )
        )
    else:
        print(res.texts[0])
    return 0


# --------------------------------------------------------------------------- bench


def _csv_list(kind):
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None

    return parse


def _split_specs(text: str) -> list[str]:
    """Split "boe:rho=0.25,r=4,margin,lookahead:k=4" into specs: an item that starts with
    ``name=`` continues the previous spec's options (so "bon:n=4,base=boe:point=mask" is one spec)."""
    import re

    specs: list[str] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if re.match(r"[A-Za-z_]\w*=", item) and specs:
            specs[-1] += "," + item
        else:
            specs.append(item)
    return specs


def cmd_bench_aqa(args: argparse.Namespace) -> int:
    from tabes.bench.aqa import AQABenchConfig, run_aqa_bench

    cfg = AQABenchConfig(d_model=args.d_model, n_layers=args.layers, repeats=args.repeats, seed=args.seed)
    rows = run_aqa_bench(args.lengths, args.rhos, cfg, progress=not args.json)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(
        f"ActiveQueryAttention backward vs dense (d_model={cfg.d_model}, heads={cfg.n_heads}, layers={cfg.n_layers}, "
        f"batch={cfg.batch}, {cfg.candidates} candidates, median of {cfg.repeats})"
    )
    print(
        f"{'L':>6} {'rho':>5} {'dense ms':>9} {'aqa ms':>9} {'ratio':>6} {'attn-only ms':>12} {'ratio':>6} {'kv ms':>9} {'kv ratio':>8} "
        f"{'attn share':>10} {'bound':>6}"
    )
    for r in rows:
        print(
            f"{r['L']:>6} {r['rho']:>5} {r['dense_ms']:>9.1f} {r['aqa_ms']:>9.1f} {r['ratio']:>6.3f} {r['attn_only_ms']:>12.1f} "
            f"{r['attn_only_ratio']:>6.3f} {r['kv_ms']:>9.1f} {r['kv_ratio']:>8.3f} {r['attn_share']:>10.3f} {r['bound']:>6.3f}"
        )
    return 0


def cmd_bench_fidelity(args: argparse.Namespace) -> int:
    from tabes.bench.fidelity import tis_fidelity
    from tabes.loading import load
    from tabes.samplers.boe import BoEConfig
    from tabes.tasks import sudoku

    records = sudoku.read_csv(args.file)[: args.limit]
    model = load(args.model)
    rows = tis_fidelity(model, [r.cells for r in records], config=BoEConfig(r=args.r), max_steps_per_puzzle=args.max_steps)
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"TIS fidelity vs dense backward ({len(records)} puzzles, r={args.r}, up to {args.max_steps} steered steps each)")
        for r in rows:
            head = f"{r['mode']:>10} {r['active']:<18} point={r['point']:<5}"
            agree = f"top-b agreement {r['top_b_agreement']}  vs true drop {r['spearman_true_drop']}"
            print(f"{head} spearman {r['spearman']}  {agree}  ({r['n_steps']} steps)")
    return 0


def cmd_bench_entropy(args: argparse.Namespace) -> int:
    from tabes.bench.plots import entropy_curves, entropy_plot
    from tabes.loading import load
    from tabes.samplers import get_sampler
    from tabes.tasks import sudoku

    for spec in args.samplers:
        get_sampler(spec)
    records = sudoku.read_csv(args.file)[: args.limit]
    curves = entropy_curves(load(args.model), [r.cells for r in records], args.samplers, steps=args.steps, seed=args.seed)
    entropy_plot(curves, args.out, title=f"{len(records)} puzzles from {Path(args.file).name}, {args.steps} steps")
    for spec, ys in curves.items():
        print(f"{spec}: {' '.join(f'{v:.2f}' for v in ys[:: max(1, len(ys) // 10)])}")
    print(f"wrote {args.out}")
    return 0


def cmd_bench_step(args: argparse.Namespace) -> int:
    from tabes.bench.aqa import step_ratio
    from tabes.loading import load

    rows = []
    sudoku_model = None
    for L in args.lengths:
        if L == 81 and sudoku_model is None:
            sudoku_model = load()
        for spec in args.samplers:
            model = sudoku_model if L == 81 else None  # L = 81: the shipped Sudoku model; else the AQA benchmark architecture
            row = step_ratio(L, model=model, batch=args.batch if args.batch else (64 if L == 81 else 1), repeats=args.repeats, sampler=spec)
            rows.append(row)
            if not args.json:
                ms = f"confidence {row['confidence_ms']:>9.2f} ms  step {row['boe_ms']:>9.2f} ms"
                print(f"L={L:>5} batch={row['batch']:>3} {spec:<28} {ms}  ratio {row['step_ratio']:.3f}")
    if args.json:
        print(json.dumps(rows))
    return 0


def cmd_bench_sudoku(args: argparse.Namespace) -> int:
    from tabes.bench.sudoku import run_sudoku_bench
    from tabes.loading import load

    model = load(args.model)
    records = run_sudoku_bench(
        args.file,
        args.samplers,
        args.steps,
        args.out,
        limit=args.limit,
        by_source=args.by_source,
        seed=args.seed,
        batch_size=args.batch_size,
        model=model,
        progress=not args.no_progress,
        timing=args.timing or 0,
        timing_repeats=args.timing_repeats,
    )
    print(f"{len(records)} cells in {args.out}/results.jsonl; report: {args.out}/report.md")
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tabes", description="Decode masked diffusion models with BoE steering and baselines.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="solve 9x9 Sudoku puzzles with the shipped model")
    p.add_argument("puzzle", nargs="?", help="81 characters, 0 or . for blanks")
    p.add_argument("--file", help="CSV with a 'puzzle' column (optional 'solution', 'source')")
    p.add_argument("--out", help="write one JSON record per puzzle to this JSONL file")
    p.add_argument("--limit", type=_positive_int, help="solve only the first N puzzles of --file")
    p.add_argument("--sampler", default="boe", help="sampler spec, e.g. boe, confidence or boe:rho=0.25 (see `tabes samplers`)")
    p.add_argument("--steps", type=_positive_int, default=81, help="denoising steps (81 = one cell per step)")
    p.add_argument("--temperature", type=_nonneg_float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    p.add_argument("--json", action="store_true", help="print one JSON record instead of a board")
    p.add_argument("--trace-png", help="draw the grid coloured by the step that committed each cell (needs the plot extra)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("train", help="train (or resume) a model")
    p.add_argument("task", choices=["sudoku"])
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--max-steps", type=_positive_int, default=20000)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=_positive_int, default=500)
    p.add_argument("--pool-size", type=_positive_int, default=2000, help="generated training puzzles to hold")
    p.add_argument("--pool-dir", action="append", help="extra folder of generated puzzle .npz files")
    p.add_argument("--weighting", choices=["none", "1/t"], default="none")
    p.add_argument("--model-opt", action="append", help="model option key=value for a new run, e.g. d_model=128")
    p.add_argument("--resume", action="store_true", help="continue from the model and state in --out")
    p.add_argument("--init-from", help="copy a model folder ('shipped' = the shipped Sudoku model) into --out and continue training it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="complete a text prompt with a transformers MDM checkpoint")
    p.add_argument("--model", required=True, help="local checkpoint folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--sampler", default="confidence")
    p.add_argument("--steps", type=_positive_int, default=64)
    p.add_argument("--gen-length", type=_positive_int, default=64)
    p.add_argument("--block-length", type=_positive_int)
    p.add_argument("--temperature", type=_nonneg_float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=["masked-lm", "llada", "dream"], help="default: from the checkpoint's config")
    p.add_argument("--mask-id", type=int, help="mask token id when the tokenizer has none")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own model code to run")
    p.add_argument("--no-eos-stop", action="store_true", help="keep decoding after an EOS token")
    p.add_argument("--json", action="store_true", help="print completion, forward/backward counts and time as JSON")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("bench", help="benchmarks (they measure; tests assert)")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("aqa", help="ActiveQueryAttention backward vs dense backward")
    b.add_argument("--lengths", type=_csv_list(int), default=[256, 1024, 2048, 4096])
    b.add_argument("--rhos", type=_csv_list(float), default=[0.1, 0.25, 0.5, 1.0])
    b.add_argument("--d-model", type=_positive_int, default=512)
    b.add_argument("--layers", type=_positive_int, default=2)
    b.add_argument("--repeats", type=_positive_int, default=5)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print a JSON list of rows")
    b.set_defaults(func=cmd_bench_aqa)
    b = bench.add_parser("step", help="wall-clock of one sampler step over one confidence step (medians, side by side)")
    b.add_argument(
        "--lengths", type=_csv_list(int), default=[81, 1024], help="81 = the shipped Sudoku model; others: the AQA benchmark model"
    )
    b.add_argument("--samplers", type=_split_specs, default=["boe", "boe:point=mask"])
    b.add_argument("--batch", type=_positive_int, help="default: 64 at L = 81, else 1")
    b.add_argument("--repeats", type=_positive_int, default=5)
    b.add_argument("--json", action="store_true", help="print a JSON list of rows")
    b.set_defaults(func=cmd_bench_step)
    b = bench.add_parser("fidelity", help="TIS of each AQA mode against the dense backward, on a puzzle file")
    b.add_argument("--file", required=True)
    b.add_argument("--limit", type=_positive_int, default=50)
    b.add_argument("--r", type=_positive_int, default=4)
    b.add_argument("--max-steps", type=_positive_int, default=20, help="steered steps per puzzle")
    b.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_fidelity)
    b = bench.add_parser("entropy", help="plot mean remaining masked entropy per step for each sampler")
    b.add_argument("--file", required=True)
    b.add_argument("--samplers", type=_split_specs, required=True)
    b.add_argument("--out", required=True, help="PNG file")
    b.add_argument("--limit", type=_positive_int, default=100)
    b.add_argument("--steps", type=_positive_int, default=81)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    b.set_defaults(func=cmd_bench_entropy)
    b = bench.add_parser("sudoku", help="accuracy vs compute of samplers on a puzzle file")
    b.add_argument("--file", required=True)
    b.add_argument("--samplers", type=_split_specs, required=True, help="comma-separated sampler specs, e.g. boe:rho=0.25,r=4,margin")
    b.add_argument("--steps", type=_csv_list(int), default=[81])
    b.add_argument("--out", required=True)
    b.add_argument("--limit", type=_positive_int)
    b.add_argument("--by-source", action="store_true", help="one cell per source band (default: all puzzles together)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--batch-size", type=_positive_int, default=64)
    b.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument(
        "--timing",
        type=_positive_int,
        help="then time every sampler/steps configuration side by side on the first N puzzles of each band (DIR/timing.json)",
    )
    b.add_argument("--timing-repeats", type=_positive_int, default=3)
    b.set_defaults(func=cmd_bench_sudoku)

    sub.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness with the 'tabes' model type registered (needs the eval extra)",
        description="Every argument goes to the harness's own command line, e.g. "
        "tabes lm-eval --model tabes --model_args pretrained=PATH,sampler=boe,steps=64,gen_length=64 --tasks TASK",
        add_help=False,
    )

    p = sub.add_parser("samplers", help="list the registered samplers and their options")
    p.set_defaults(func=cmd_samplers)
    return parser


def cmd_lm_eval(argv: list[str]) -> int:
    """Hand ``argv`` to lm-evaluation-harness's command line with the ``tabes`` model registered."""
    try:
        from tabes.integrations.lm_eval import main as lm_eval_main
    except ImportError as err:
        print(f"tabes: error: lm-eval needs the eval extra: pip install 'tabes[eval]' ({err})", file=sys.stderr)
        return 2
    return lm_eval_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # everything after it belongs to the harness's parser
        return cmd_lm_eval(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"tabes: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tabes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
