"""``tabes samplers``: the registered samplers (and searches) with their options."""

from __future__ import annotations

import argparse


def add_parsers(sub) -> None:
    p = sub.add_parser("samplers", help="list the registered samplers and their options")
    p.set_defaults(func=cmd_samplers)


def cmd_samplers(args: argparse.Namespace) -> int:
    from tabes.samplers import available, describe

    for name, cls in available().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        opts = ", ".join(f"{k}={d!r} ({t})" for k, t, d in describe(name)) or "no options"
        print(f"{name:<11} {doc}")
        print(f"{'':<11} options: {opts}")
    return 0
