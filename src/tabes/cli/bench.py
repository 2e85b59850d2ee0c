"""``tabes bench ...``: benchmarks. They measure and write reports; the tests assert behaviour."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tabes.cli.common import UserError, csv_list, positive_int, split_specs


def _blocks(text: str) -> list[int | None]:
    """'none,16' -> [None, 16]."""
    return [None if item.strip().lower() == "none" else positive_int(item.strip()) for item in text.split(",")]


def add_parsers(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (they measure; tests assert)")
    bench = p.add_subparsers(dest="bench", required=True, metavar="{sudoku,search,serve,peers,text,train,aqa,cache,step,fidelity,entropy}")
    b = bench.add_parser("sudoku", help="accuracy vs compute of samplers on a puzzle file")
    b.add_argument("--file", required=True)
    b.add_argument("--samplers", type=split_specs, required=True, help="comma-separated sampler specs, e.g. boe:rho=0.25,r=4,margin")
    b.add_argument("--steps", type=csv_list(int), default=[81])
    b.add_argument("--out", required=True, help="folder for results.jsonl, report.md and pareto.png")
    b.add_argument("--force-new", action="store_true", help="start --out afresh even if it holds cells of another puzzle set")
    b.add_argument("--limit", type=positive_int)
    b.add_argument("--by-source", action="store_true", help="one cell per source band (default: all puzzles together)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--batch-size", type=positive_int, default=64)
    b.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--timing", type=positive_int, help="then time every configuration side by side on the first N puzzles of each band")
    b.add_argument("--timing-repeats", type=positive_int, default=3)
    b.set_defaults(func=cmd_bench_sudoku)

    b = bench.add_parser("text", help="samplers on the text-demo word problems: exact match, compute, wall-clock, error kinds")
    b.add_argument("--model", default="text-demo", help="model folder or shipped name (default: text-demo)")
    b.add_argument(
        "--samplers",
        type=split_specs,
        help="sampler specs (default: random, confidence, margin, entropy, eb, threshold, boe and "
        "boe:steer_below=0.99, the BoE variant closest to paying for itself in docs/evidence.md)",
    )
    b.add_argument("--steps", type=csv_list(int), default=[64, 16], help="step counts for --gen-length tokens (default 64,16)")
    b.add_argument("--blocks", type=_blocks, default=[None, 16], help="block lengths, 'none' for no blocks (default none,16)")
    b.add_argument("--gen-length", type=positive_int, default=64)
    b.add_argument("--file", help="JSONL of problems (default: the shipped test split)")
    b.add_argument("--limit", type=positive_int, default=200, help="first N problems (default 200)")
    b.add_argument("--batch-size", type=positive_int, default=100)
    b.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    b.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    b.add_argument("--cache", choices=["none", "prefix", "dual"], default="none", help="block KV cache for the rows with blocks")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="folder for text_bench.json and report.md")
    b.add_argument("--json", action="store_true", help="print a JSON list of rows")
    b.set_defaults(func=cmd_bench_text)

    b = bench.add_parser("serve", help="concurrent clients against a live tabes serve, and the same requests one at a time")
    b.add_argument("--clients", type=positive_int, default=16)
    b.add_argument("--requests", type=positive_int, default=2, help="requests per client")
    b.add_argument("--max-tokens", type=positive_int, default=64)
    b.add_argument("--steps", type=positive_int, default=64)
    b.add_argument("--sampler", default="confidence")
    b.add_argument("--block-length", type=positive_int, default=16, help="each request's block_length (default 16)")
    b.add_argument(
        "--cache",
        choices=["none", "prefix", "dual"],
        default="dual",
        help="each request's block KV cache (default dual, as Fast-dLLM serves)",
    )
    b.add_argument("--model", default="text-demo", help="what the started server serves (default text-demo)")
    b.add_argument("--url", help="an already running server (http://127.0.0.1:PORT) instead of starting one")
    b.add_argument("--max-batch", type=positive_int, default=16, help="the started server's --max-batch")
    b.add_argument("--json", action="store_true", help="print the row as JSON")
    b.set_defaults(func=cmd_bench_serve)

    b = bench.add_parser(
        "peers",
        help="tabes against the installed reference decoders (diffusers' LLaDA2Pipeline, transformers' DiffusionGemma generate), "
        "same tokens, s/token",
    )
    b.add_argument("--repeats", type=positive_int, default=3)
    b.add_argument("--gen", type=positive_int, default=64, help="tokens generated per prompt")
    b.add_argument("--json", action="store_true", help="print the rows as JSON")
    b.set_defaults(func=cmd_bench_peers)

    b = bench.add_parser("search", help="decode vs decode-then-search on a puzzle file, and dfs branching rules (nodes, backtracks)")
    b.add_argument("--file", required=True)
    b.add_argument("--out", required=True, help="folder for results.jsonl and report.md")
    b.add_argument("--rules", type=csv_list(str), default=["mrv", "confidence", "margin", "entropy", "boe"])
    b.add_argument("--limit", type=positive_int, help="first N puzzles of each band")
    b.add_argument("--rule-limit", type=positive_int, help="the rules' searches: only the first N wrong decodes of each band")
    b.add_argument("--off-limit", type=int, default=3, help="puzzles per band searched without propagation (0: none)")
    b.add_argument("--batch-size", type=positive_int, default=64)
    b.add_argument(
        "--rule-batch-size",
        type=positive_int,
        default=1,
        help="puzzles searched together in the rules' part (default 1: each puzzle's own wall-clock, median and p95)",
    )
    b.add_argument("--skip-solve", action="store_true", help="leave out the decode-then-search part (rules only)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    b.add_argument("--json", action="store_true", help="print the rows as JSON")
    b.set_defaults(func=cmd_bench_search)

    b = bench.add_parser("train", help="training samples/s of the shipped Sudoku architecture per setting (side by side)")
    names = "baseline, bf16-sdpa, bf16, fp32-compile, default"
    b.add_argument(
        "--settings",
        type=csv_list(str),
        help=f"{names} (default: baseline, default, and bf16 where the CPU has native bf16)",
    )
    b.add_argument("--steps", type=positive_int, default=60)
    b.add_argument("--batch-size", type=positive_int, default=128)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="folder for train_bench.json (with the per-step losses) and train_curve.png")
    b.add_argument("--json", action="store_true", help="print the rows (without the per-step losses) as JSON")
    b.set_defaults(func=cmd_bench_train)

    b = bench.add_parser("aqa", help="ActiveQueryAttention backward vs dense backward")
    b.add_argument("--lengths", type=csv_list(int), default=[256, 1024, 2048, 4096])
    b.add_argument("--rhos", type=csv_list(float), default=[0.1, 0.25, 0.5, 1.0])
    b.add_argument("--d-model", type=positive_int, default=512)
    b.add_argument("--layers", type=csv_list(int), default=[8], help="model depths, e.g. 2,8,32 (default: the shipped model's 8)")
    b.add_argument("--repeats", type=positive_int, default=5)
    b.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    b.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print a JSON list of rows")
    b.set_defaults(func=cmd_bench_aqa)

    b = bench.add_parser("cache", help="s per generated token with and without the block KV cache (random Llama-style model)")
    b.add_argument("--samplers", type=split_specs, default=["confidence", "boe"])
    b.add_argument("--caches", type=csv_list(str), default=["none", "prefix", "dual"])
    b.add_argument("--prompt", type=positive_int, default=768)
    b.add_argument("--gen", type=positive_int, default=256)
    b.add_argument("--block", type=positive_int, default=32)
    b.add_argument("--steps", type=positive_int, help="denoising steps for --gen tokens (default: one token per step)")
    b.add_argument("--layers", type=positive_int, default=4)
    b.add_argument("--width", type=positive_int, default=256)
    b.add_argument("--vocab", type=positive_int, default=8192)
    b.add_argument("--repeats", type=positive_int, default=1)
    b.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    b.add_argument("--device", default="cpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print a JSON list of rows")
    b.set_defaults(func=cmd_bench_cache)

    b = bench.add_parser("step", help="wall-clock of one sampler step over one confidence step (medians, side by side)")
    b.add_argument(
        "--lengths", type=csv_list(int), default=[81, 1024], help="81 = the shipped Sudoku model; others: the AQA benchmark model"
    )
    b.add_argument("--samplers", type=split_specs, default=["boe", "boe:point=mask"])
    b.add_argument("--batch", type=positive_int, help="default: 64 at L = 81, else 1")
    b.add_argument("--repeats", type=positive_int, default=5)
    b.add_argument("--json", action="store_true", help="print a JSON list of rows")
    b.set_defaults(func=cmd_bench_step)

    b = bench.add_parser("fidelity", help="TIS of each AQA mode against the dense backward, on a puzzle file")
    b.add_argument("--file", required=True)
    b.add_argument("--limit", type=positive_int, default=50)
    b.add_argument("--r", type=positive_int, default=4)
    b.add_argument("--max-steps", type=positive_int, default=20, help="steered steps per puzzle")
    b.add_argument("--model", help="model folder (default: the shipped Sudoku model; text-demo with a .jsonl --file)")
    b.add_argument(
        "--cache",
        choices=["prefix", "dual"],
        help="instead: BoE's TIS through the block KV cache against the uncached TIS (needs --block-length)",
    )
    b.add_argument("--block-length", type=positive_int, help="with --cache: block length (Sudoku: cells, text: tokens)")
    b.add_argument("--steps", type=positive_int, help="with --cache: denoising steps (default: one position per step)")
    b.add_argument("--gen-length", type=positive_int, default=64, help="with --cache and a .jsonl --file: tokens to generate")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_fidelity)

    b = bench.add_parser("entropy", help="plot mean remaining masked entropy per step for each sampler")
    b.add_argument("--file", required=True)
    b.add_argument("--samplers", type=split_specs, required=True)
    b.add_argument("--out", required=True, help="PNG file")
    b.add_argument("--limit", type=positive_int, default=100)
    b.add_argument("--steps", type=positive_int, default=81)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--model", help="model folder (default: the shipped Sudoku model)")
    b.set_defaults(func=cmd_bench_entropy)


def cmd_bench_sudoku(args: argparse.Namespace) -> int:
    from tabes.bench.sudoku import run_sudoku_bench
    from tabes.files import check_output_dir
    from tabes.loading import load

    check_output_dir(args.out, "--out")
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
        force_new=args.force_new,
    )
    print(f"{len(records)} cells in {args.out}/results.jsonl; report: {args.out}/report.md")
    return 0


def cmd_bench_text(args: argparse.Namespace) -> int:
    from tabes.bench.text import DEFAULT_SAMPLERS, report, run_text_bench
    from tabes.files import atomic_write_text, check_output_dir
    from tabes.loading import load
    from tabes.tasks import word_problems as wp

    out = check_output_dir(args.out, "--out") if args.out else None
    problems = (wp.read_jsonl(args.file) if args.file else wp.split("test"))[: args.limit]
    model = load(args.model, dtype=args.dtype, device=args.device)
    rows = run_text_bench(
        model,
        args.samplers or DEFAULT_SAMPLERS,
        steps=args.steps,
        blocks=args.blocks,
        problems=problems,
        gen_length=args.gen_length,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.json,
        cache=args.cache,
    )
    header = (
        f"text-demo word problems: first {len(problems)} of {args.file or 'the test split'}, gen_length {args.gen_length}, "
        f"batch {args.batch_size}, {args.dtype} on {args.device}, cache {args.cache}, {rows[0]['threads']} threads, seed {args.seed}\n\n"
    )
    if out is not None:
        atomic_write_text(out / "text_bench.json", json.dumps(rows, indent=1) + "\n")
        atomic_write_text(out / "report.md", header + report(rows))
    if args.json:
        print(json.dumps(rows))
    else:
        print(header + report(rows), end="")
    return 0


def cmd_bench_peers(args: argparse.Namespace) -> int:
    from tabes.bench.peers import run_peers_bench

    rows = run_peers_bench(repeats=args.repeats, gen=args.gen)
    if not rows:
        raise UserError("no reference decoder is installed: pip install diffusers (the dev extra)")
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        print(
            f"{r['model']:18} batch {r['batch']} {r['setting']:48} identical {r['identical']!s:5}  "
            f"tabes {r['tabes_s_per_token'] * 1e3:.3f} ms/token "
            f"(loop {r['tabes_loop_s_per_token'] * 1e3:.3f})  {r['reference']} {r['reference_s_per_token'] * 1e3:.3f} "
            f"(loop {r['reference_loop_s_per_token'] * 1e3:.3f})  ratio {r['ratio']}"
        )
    print(f"{rows[0]['cpu']}, {rows[0]['threads']} threads, median of {rows[0]['repeats']} alternating repeats")
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from tabes.bench.serve import run_serve_bench
    from tabes.samplers import get_sampler

    get_sampler(args.sampler)
    if args.url and not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise UserError(f"--url must be a server on this machine (127.0.0.1, localhost or [::1]), got {args.url!r}")
    row = run_serve_bench(
        clients=args.clients,
        requests=args.requests,
        max_tokens=args.max_tokens,
        steps=args.steps,
        sampler=args.sampler,
        block_length=args.block_length,
        cache=args.cache,
        model=args.model,
        url=args.url,
        server_args=["--max-batch", str(args.max_batch)],
    )
    if args.json:
        print(json.dumps([row]))
    else:
        print(
            f"{row['answered']}/{row['requests']} answered ({row['lost']} lost, {row['duplicated']} duplicated) "
            f"from {row['clients']} clients: "
            f"{row['requests_per_s']} requests/s ({row['tokens_per_s']} tokens/s), p50 {row['p50_s']} s, p95 {row['p95_s']} s; "
            f"one at a time {row['serial_requests_per_s']} requests/s: speedup {row['speedup']}x, "
            f"identical: {row['identical']}, mean batch {row['mean_batch']} ({row['cpu']}, {row['threads']} threads)"
        )
    return 0


def cmd_bench_search(args: argparse.Namespace) -> int:
    from tabes.bench.search import report, run_search_bench
    from tabes.files import atomic_write_text, check_output_dir
    from tabes.loading import load
    from tabes.tasks.sudoku import DEFAULT_SEARCH

    out = check_output_dir(args.out, "--out")
    part_file = out / "results.jsonl"
    part_file.write_text("")

    def sink(rows: list[dict]) -> None:
        with part_file.open("a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))

    rows = run_search_bench(
        args.file,
        rules=args.rules,
        search=DEFAULT_SEARCH,
        limit=args.limit,
        rule_limit=args.rule_limit,
        off_limit=args.off_limit,
        sink=sink,
        batch_size=args.batch_size,
        rule_batch_size=args.rule_batch_size,
        solve=not args.skip_solve,
        seed=args.seed,
        model=load(args.model),
        progress=not args.json,
    )
    atomic_write_text(out / "report.md", report(rows))
    print(json.dumps(rows) if args.json else report(rows), end="" if not args.json else "\n")
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from tabes.bench.train import default_settings, loss_curve_png, run_train_bench
    from tabes.files import atomic_write_text, check_output_dir

    out = check_output_dir(args.out, "--out") if args.out else None
    settings = args.settings or default_settings()
    rows = run_train_bench(settings, steps=args.steps, batch_size=args.batch_size, seed=args.seed, progress=not args.json)
    if out is not None:
        atomic_write_text(out / "train_bench.json", json.dumps(rows, indent=1) + "\n")
        loss_curve_png(rows, out / "train_curve.png")
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "losses"} for r in rows]))
        return 0
    print(f"Training throughput, shipped Sudoku architecture, batch {args.batch_size}, {args.steps} steps, {rows[0]['threads']} threads")
    print(f"CPU: {rows[0]['cpu']}")
    print(f"{'setting':<14}{'precision':>10}{'compile':>8}{'samples/s':>10}{'speedup':>9}{'loss first':>12}{'loss last':>11}")
    for r in rows:
        cells = f"{r['setting']:<14}{r['precision']:>10}{'on' if r['compile'] else 'off':>8}{r['samples_per_s']:>10.1f}"
        print(cells + f"{r['speedup'] or 0:>9.2f}{r['loss_first']:>12.4f}{r['loss_last']:>11.4f}")
    default = next((r for r in rows if r["setting"] == "default"), None)
    if default is not None:
        print(f"default: {default['why']}")
    return 0


def cmd_bench_aqa(args: argparse.Namespace) -> int:
    from tabes.bench.aqa import AQABenchConfig, run_aqa_bench
    from tabes.hardware import warn_slow_bf16

    warn_slow_bf16(args.dtype, args.device)
    if any(n <= 0 for n in args.layers):
        raise ValueError(f"--layers must be positive, got {args.layers}")
    rows = []
    for layers in args.layers:
        cfg = AQABenchConfig(
            d_model=args.d_model, n_layers=layers, repeats=args.repeats, seed=args.seed, device=args.device, dtype=args.dtype
        )
        rows += run_aqa_bench(args.lengths, args.rhos, cfg, progress=not args.json)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(
        f"ActiveQueryAttention backward vs dense (d_model={cfg.d_model}, heads={cfg.n_heads}, layers={args.layers}, "
        f"batch={cfg.batch}, {cfg.candidates} candidates, median of {cfg.repeats})"
    )
    cols = ["layers", "L", "rho", "dense_ms", "aqa_ms", "ratio", "attn_only_ms", "attn_only_ratio", "kv_ms", "kv_ratio"]
    cols += ["attn_share", "bound"]
    print(" ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:>12.3f}" if isinstance(r[c], float) else f"{r[c]:>12}" for c in cols))
    return 0


def cmd_bench_cache(args: argparse.Namespace) -> int:
    import sys

    import torch

    from tabes.bench.cache import CacheBenchConfig, run_cache_bench
    from tabes.cache import check_cache_mode
    from tabes.hardware import warn_slow_bf16

    warn_slow_bf16(args.dtype, args.device)
    for c in args.caches:
        check_cache_mode(c)
    cfg = CacheBenchConfig(
        prompt=args.prompt,
        gen=args.gen,
        block=args.block,
        steps=args.steps,
        layers=args.layers,
        width=args.width,
        vocab=args.vocab,
        repeats=args.repeats,
        seed=args.seed,
        dtype=args.dtype,
        device=args.device,
    )
    log = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    rows = run_cache_bench(cfg, tuple(args.samplers), tuple(args.caches), progress=log)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(
        f"block KV cache: Llama-style, {cfg.layers} layers, width {cfg.width}, vocab {cfg.vocab}, {cfg.dtype} on {cfg.device}, "
        f"{torch.get_num_threads()} threads, batch 1, prompt {cfg.prompt}, gen {cfg.gen}, block {cfg.block}, "
        f"{rows[0]['steps']} steps, median of {cfg.repeats}"
    )
    cols = ["sampler", "cache", "s_per_token", "speedup", "vs_confidence", "agree_with_none"]
    print(" ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(" ".join(f"{'-' if r[c] is None else r[c]:>16}" for c in cols))
    return 0


def cmd_bench_step(args: argparse.Namespace) -> int:
    from tabes.bench.aqa import step_ratio
    from tabes.loading import load

    rows = []
    sudoku_model = load() if 81 in args.lengths else None
    for L in args.lengths:
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


def cmd_bench_fidelity(args: argparse.Namespace) -> int:
    from tabes.bench.fidelity import tis_fidelity
    from tabes.loading import load
    from tabes.samplers.boe import BoEConfig
    from tabes.tasks import sudoku

    if args.cache:
        return _cache_fidelity(args)
    records = sudoku.read_csv(args.file)[: args.limit]
    rows = tis_fidelity(load(args.model), [r.cells for r in records], config=BoEConfig(r=args.r), max_steps_per_puzzle=args.max_steps)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"TIS fidelity vs dense backward ({len(records)} puzzles, r={args.r}, up to {args.max_steps} steered steps each)")
    for r in rows:
        head = f"{r['mode']:>10} {r['active']:<18} point={r['point']:<5}"
        agree = f"top-b agreement {r['top_b_agreement']}  vs true drop {r['spearman_true_drop']}"
        print(f"{head} spearman {r['spearman']}  {agree}  ({r['n_steps']} steps)")
    return 0


def _cache_fidelity(args: argparse.Namespace) -> int:
    """``tabes bench fidelity --cache MODE``: Sudoku puzzles (.csv) or word problems (.jsonl)."""
    import torch

    from tabes.bench.fidelity import cache_fidelity
    from tabes.loading import load
    from tabes.samplers.boe import BoEConfig

    if args.block_length is None:
        raise ValueError("--cache needs --block-length: the cache is refreshed per block")
    if str(args.file).endswith(".jsonl"):
        from tabes.tasks import word_problems as wp
        from tabes.tasks.text import encode_prompts

        model = load(args.model or "text-demo")
        items = wp.read_jsonl(args.file)[: args.limit]
        ids, am, _ = encode_prompts(model, [p.prompt for p in items], args.gen_length)
        steps = args.steps or args.gen_length
    else:
        from tabes.tasks import sudoku

        model = load(args.model)
        records = sudoku.read_csv(args.file)[: args.limit]
        ids, am = torch.tensor([sudoku.to_ids(r.cells) for r in records]), None
        steps = args.steps or 81
    row = cache_fidelity(
        model, ids, steps=steps, block_length=args.block_length, cache=args.cache, attention_mask=am, config=BoEConfig(r=args.r)
    )
    row.update(file=Path(args.file).name, n=int(ids.shape[0]), threads=torch.get_num_threads())
    if args.json:
        print(json.dumps(row))
    else:
        print(
            f"TIS through the {args.cache} cache vs uncached ({row['n']} items of {row['file']}, block {args.block_length}, "
            f"{steps} steps, r={args.r}): spearman {row['spearman']}  same commit {row['same_commit']}  "
            f"(confidence vs uncached TIS: {row['confidence_spearman']}; {row['n_steps']} steered row-steps)"
        )
    return 0


def cmd_bench_entropy(args: argparse.Namespace) -> int:
    from tabes.bench.plots import entropy_curves, entropy_plot
    from tabes.files import check_output_file
    from tabes.loading import load
    from tabes.samplers import get_sampler
    from tabes.tasks import sudoku

    for spec in args.samplers:
        get_sampler(spec)
    check_output_file(args.out, "--out")
    records = sudoku.read_csv(args.file)[: args.limit]
    curves = entropy_curves(load(args.model), [r.cells for r in records], args.samplers, steps=args.steps, seed=args.seed)
    entropy_plot(curves, args.out, title=f"{len(records)} puzzles from {Path(args.file).name}, {args.steps} steps")
    for spec, ys in curves.items():
        print(f"{spec}: {' '.join(f'{v:.2f}' for v in ys[:: max(1, len(ys) // 10)])}")
    print(f"wrote {args.out}")
    return 0
