"""What every command shares: the one-line error parser, argument types and the error classes.

Exit codes: 0 success; 1 the input was read but has no good answer (a puzzle with no solution
or with several, an invalid decoded grid); 2 bad input (a malformed puzzle, an unknown
sampler, a bad option, a missing or unwritable file); 130 interrupted.
"""

from __future__ import annotations

import argparse
import re
import sys


class UserError(Exception):
    """An input problem that ends the command with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``tabes CMD: error: MESSAGE (see 'tabes CMD --help')``."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse's hook
        message = message.replace("\r", "\\r").replace("\n", "\\n")  # an argument with a line break stays on the line
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def _number(kind, text: str, low: float, low_ok: bool, high: float | None = None):
    """``kind(text)`` checked against ``low`` (inclusive when ``low_ok``) and ``high``, as argparse wants."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if not (value >= low if low_ok else value > low):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be {'>=' if low_ok else '>'} {low:g}, got {value}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {value}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, 0, False)


def nonneg_int(text: str) -> int:
    return _number(int, text, 0, True)


def nonneg_float(text: str) -> float:
    return _number(float, text, 0, True)


def fraction(text: str) -> float:
    return _number(float, text, 0, True, 1.0)


def csv_list(kind):
    def parse(text: str):
        try:
            items = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError(f"expected a non-empty comma-separated list, got {text!r}")
        return items

    return parse


def split_specs(text: str) -> list[str]:
    """Split "boe:rho=0.25,r=4,margin,lookahead:k=4" into specs: an item that starts with
    ``name=`` continues the previous spec's options (so "bon:n=4,base=boe:point=mask" is one spec)."""
    specs: list[str] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if re.match(r"[A-Za-z_]\w*=", item) and specs:
            specs[-1] += "," + item
        else:
            specs.append(item)
    if not specs:
        raise argparse.ArgumentTypeError(f"expected sampler specs, got {text!r}")
    return specs


def model_option(item: str) -> tuple[str, int | float | str]:
    """``key=value`` with an int, float or string value."""
    key, eq, value = item.partition("=")
    if not eq or not key:
        raise UserError(f"option {item!r} must look like key=value")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value
