"""``tabes word-problems``: write generated word problems (the text-demo task) as JSONL."""

from __future__ import annotations

import argparse
import sys

from tabes.cli.common import UserError, nonneg_int, positive_int


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "word-problems",
        help="write generated word problems (the text-demo task, GSM8K format) as JSONL",
        description=(
            "Write the first N problems of the seeded stream SEED, one {question, answer, result} object per line. "
            "Seed 1 is the dev split and seed 2 the test split (their first 1,000 problems); training uses seed 0 "
            "and skips every dev and test question. Score a file with: tabes lm-eval --model tabes "
            '--model_args pretrained=text-demo --tasks tabes_text_demo --metadata \'{"data_file": "FILE"}\''
        ),
    )
    p.add_argument("--seed", type=nonneg_int, required=True)
    p.add_argument("-n", "--n", type=positive_int, default=200, help="number of problems (default 200)")
    p.add_argument("--out", help="JSONL file to write (default: standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_problems)


def cmd_problems(args: argparse.Namespace) -> int:
    from tabes.files import check_output_file
    from tabes.tasks import word_problems as wp

    if args.out:
        path = check_output_file(args.out, "--out")
        if path.exists() and not args.overwrite:
            raise UserError(f"--out: {path} exists; pass --overwrite to replace it")
    items = wp.problems(args.n, args.seed)
    if args.out:
        wp.write_jsonl(args.out, items)
        print(f"wrote {len(items)} problems to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(wp.to_jsonl(items))
    return 0
