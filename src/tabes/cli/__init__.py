"""The ``tabes`` command line: one module per command group, one shared parser helper.

    solve             tabes.cli.solve
    samplers          tabes.cli.samplers
    train             tabes.cli.train
    bench ...         tabes.cli.bench
    generate, lm-eval tabes.cli.generate
    serve             tabes.cli.serve
    word-problems     tabes.cli.problems

Every user error (bad puzzle, clashing givens, unknown sampler, bad option, missing or
unwritable file, a checkpoint that cannot be loaded) exits with code 2 and one line on stderr,
without a traceback; exit codes are listed in :mod:`tabes.cli.common`.
"""

from __future__ import annotations

import os
import sys

from tabes.cli import bench, generate, problems, samplers, serve, solve, train
from tabes.cli.common import Parser, UserError


def build_parser() -> Parser:
    parser = Parser(prog="tabes", description="Decode masked diffusion models with BoE steering and baselines.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{solve,samplers,train,bench,generate,lm-eval,serve,word-problems}")
    for module in (solve, samplers, train, bench, generate, serve, problems):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # everything after it belongs to the harness's parser
        return generate.cmd_lm_eval(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`tabes samplers | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, ValueError, FileNotFoundError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"tabes: error: {message}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"tabes: error: a needed package is missing ({err}); see the README's extras", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tabes: interrupted", file=sys.stderr)
        return 130


__all__ = ["UserError", "build_parser", "main"]
