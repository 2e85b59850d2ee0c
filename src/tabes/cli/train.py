"""``tabes train sudoku|text``: train or resume the Sudoku MDM or the text-demo masked LM."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tabes.cli.common import UserError, fraction, model_option, nonneg_int, positive_int


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train (or resume) a Sudoku MDM on generated puzzles, or the text-demo model on word problems",
        formatter_class=_MachineHelp,
    )
    p.add_argument("task", choices=["sudoku", "text"], help="sudoku: our MDM; text: a ModernBERT masked LM on generated word problems")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this invocation")
    p.add_argument("--max-steps", type=positive_int, default=20000, help="schedule length")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=nonneg_int, default=200, help="linear learning-rate warm-up steps")
    p.add_argument("--decay-frac", type=fraction, default=0.2, help="the last fraction of --max-steps decays the learning rate to 5%%")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16: bfloat16 autocast, float32 weights; auto: bf16 only where this machine runs it faster than float32 (here: @PRECISION@)",
    )
    p.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="torch.compile the training step; auto: only where it pays (here: @COMPILE@)",
    )
    p.add_argument("--no-compile", action="store_true", help="the same as --compile off")
    p.add_argument("--hard-frac", type=fraction, default=0.5, help="share of each batch drawn from puzzles that singles do not solve")
    p.add_argument(
        "--hard-min-blanks",
        type=positive_int,
        default=45,
        help="a puzzle counts as hard when naked and hidden singles leave at least this many blanks (1: singles do not solve it)",
    )
    p.add_argument(
        "--closure-frac",
        type=fraction,
        default=0.5,
        help="share of puzzle samples that are stuck states: what is left after every cell singles deduce is shown",
    )
    p.add_argument(
        "--result-frac",
        type=fraction,
        default=0.8,
        help="text: share of chain samples, which hide one result and every later copy of it (see tabes.tasks.text_demo)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=positive_int, default=500)
    p.add_argument(
        "--eval-puzzles", type=positive_int, default=128, help="held-out generated puzzles (text: dev problems) decoded at each evaluation"
    )
    p.add_argument("--eval-file", help="CSV of real puzzles (with solutions and sources) scored per band at each evaluation")
    p.add_argument("--eval-per-band", type=positive_int, default=50, help="puzzles per band of --eval-file")
    p.add_argument("--pool-size", type=positive_int, default=20000, help="generated training puzzles to hold")
    p.add_argument("--pool-dir", action="append", help="extra folder of generated puzzle .npz files")
    p.add_argument(
        "--ema", type=float, default=0.0, help="keep an exponential moving average of the weights with this decay in OUT/ema (0: none)"
    )
    p.add_argument(
        "--harden",
        type=nonneg_int,
        default=0,
        help="also hold this many hill-climbed hard puzzles (made before the first step; see tabes.tasks.sudoku.harden)",
    )
    p.add_argument("--harden-blanks", type=positive_int, default=55, help="the hill climb's target: blanks that singles leave")
    p.add_argument("--workers", type=nonneg_int, default=0, help="processes generating the puzzle pool (0: one per core)")
    p.add_argument("--weighting", choices=["none", "1/t"], default="none")
    p.add_argument("--model-opt", action="append", help="model option key=value for a new run, e.g. d_model=128")
    p.add_argument("--resume", action="store_true", help="continue from the model and state in --out")
    p.add_argument("--init-from", help="copy a model folder ('shipped' = the shipped Sudoku model) into --out and continue training it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


class _MachineHelp(argparse.HelpFormatter):
    """Fills the help's @PRECISION@ and @COMPILE@ with this machine's choice, only when help is shown."""

    def _expand_help(self, action: argparse.Action) -> str:
        text = super()._expand_help(action)
        if "@PRECISION@" in text or "@COMPILE@" in text:
            from tabes.hardware import choose_compile, choose_precision

            precision, why_p = choose_precision("cpu")
            compile, why_c = choose_compile("cpu", precision)
            text = text.replace("@PRECISION@", f"{precision}, {why_p}").replace("@COMPILE@", f"{'on' if compile else 'off'}, {why_c}")
        return text


def cmd_train(args: argparse.Namespace) -> int:
    from tabes.files import check_output_dir
    from tabes.train import TrainConfig, train

    same = ("out", "minutes", "max_steps", "batch_size", "lr", "warmup", "decay_frac", "precision", "hard_frac", "seed")
    same += ("task", "eval_every", "eval_puzzles", "eval_file", "eval_per_band", "pool_size", "workers", "weighting", "result_frac")
    same += ("hard_min_blanks", "closure_frac", "harden", "harden_blanks", "ema")
    cfg = TrainConfig(
        **{name: getattr(args, name) for name in same},
        compile=False if args.no_compile else {"auto": None, "on": True, "off": False}[args.compile],
        pool_dirs=args.pool_dir or [],
        model=dict(model_option(item) for item in args.model_opt or []),
    )
    dst = check_output_dir(args.out, "--out")
    resume = args.resume
    if args.init_from:
        from tabes.loading import default_model_path

        src = Path(args.init_from)
        if args.init_from == "shipped":
            src = default_model_path() if args.task == "sudoku" else default_model_path("text-demo")
        if (dst / "model.safetensors").exists():
            raise UserError(f"--init-from: {dst} already holds a model; use --resume to continue it")
        if not (src / "model.safetensors").is_file():
            raise FileNotFoundError(f"model file not found: {src / 'model.safetensors'}")
        for f in src.iterdir():  # weights, config, tokenizer files, training record (not a pool folder)
            if f.is_file():
                shutil.copy(f, dst / f.name)
        resume = True
    state = train(cfg, resume=resume, progress=not args.no_progress)
    print(json.dumps(state))
    return 0
