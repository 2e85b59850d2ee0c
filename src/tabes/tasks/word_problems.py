"""Multi-step arithmetic word problems in GSM8K's format: the text task of ``text-demo``.

A problem starts a person with a two-digit count of things and applies three or four changes,
each adding or taking away a one-digit number (2 to 9); the count stays two-digit throughout::

    Question: Mia has 47 shells. She finds 5 more. She gives 8 to Leo. She buys 6 more. How many shells does Mia have now?
    Answer: 47 + 5 = 52. 52 - 8 = 44. 44 + 6 = 50.
    #### 50

The reasoning writes one equation per change, and the line ``#### <answer>`` ends it, so the
harness's usual GSM8K answer extraction and exact match apply unchanged. Order matters: each
equation's result is the next one's operand, and the final answer repeats the last result.
Each step is one small sum, but the answer alone is the sum of four or five numbers: a decoder
that commits the answer (or a later result) before the steps that lead to it must do several
sums in one forward.

Splits are fixed by seeds: ``dev`` and ``test`` are the first problems of their own seeded
streams, and the training stream skips every question of both (:func:`held_out_questions`).
Any other seed gives a fresh set of problems (``tabes word-problems --seed S``).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SPLIT_SEEDS = {"train": 0, "dev": 1, "test": 2}
SPLIT_SIZES = {"dev": 1000, "test": 1000}
ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")

_NAMES = [
    ("Mia", "she"), ("Leo", "he"), ("Ava", "she"), ("Sam", "he"), ("Zoe", "she"), ("Max", "he"),
    ("Ivy", "she"), ("Ben", "he"), ("Emma", "she"), ("Noah", "he"), ("Lily", "she"), ("Jack", "he"),
    ("Nora", "she"), ("Owen", "he"), ("Ruby", "she"), ("Eli", "he"), ("Anna", "she"), ("Tom", "he"),
    ("Lucy", "she"), ("Adam", "he"),
]  # fmt: skip
_ITEMS = [
    "apples", "shells", "stickers", "marbles", "books", "coins", "cards", "stamps", "pencils", "cookies",
    "beads", "rocks", "toys", "flowers", "balloons", "candies", "buttons", "tickets", "eggs", "plums",
]  # fmt: skip
_ADD = ["{p} finds {n} more.", "{p} buys {n} more.", "{p} gets {n} more from {o}.", "{o} gives {q} {n} more."]
_SUB = ["{p} gives {n} to {o}.", "{p} loses {n}.", "{p} sells {n}.", "{p} eats {n}."]
_OBJ = {"she": "her", "he": "him"}


@dataclass(frozen=True)
class Problem:
    """One problem: ``question`` (no prefix), ``answer`` (reasoning then ``#### N``), ``result`` N."""

    question: str
    answer: str
    result: int

    @property
    def prompt(self) -> str:
        """What the model is given, as the harness's GSM8K-style tasks write it."""
        return prompt_text(self.question)


def prompt_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


COUNT_RANGE = (10, 99)  # the count before and after every change
CHANGE_RANGE = (2, 9)  # the size of one change


def make_problem(rng: random.Random, min_changes: int = 3, max_changes: int = 4) -> Problem:
    """A random problem with ``min_changes``..``max_changes`` changes, drawn from ``rng``."""
    if not 1 <= min_changes <= max_changes:
        raise ValueError(f"need 1 <= min_changes <= max_changes, got {min_changes} and {max_changes}")
    lo, hi = COUNT_RANGE
    name, pronoun = rng.choice(_NAMES)
    other = rng.choice([n for n, _ in _NAMES if n != name])
    item = rng.choice(_ITEMS)
    value = rng.randint(lo, hi)
    sentences = [f"{name} has {value} {item}."]
    steps = []
    for _ in range(rng.randint(min_changes, max_changes)):
        n = rng.randint(*CHANGE_RANGE)
        if value - n >= lo and (value + n > hi or rng.random() < 0.5):
            new, op, template = value - n, "-", rng.choice(_SUB)
        else:
            new, op, template = value + n, "+", rng.choice(_ADD)
        subject = pronoun.capitalize() if rng.random() < 0.7 else name
        sentences.append(template.format(p=subject, n=n, o=other, q=_OBJ[pronoun] if subject != name else name))
        steps.append(f"{value} {op} {n} = {new}.")
        value = new
    sentences.append(f"How many {item} does {name} have now?")
    return Problem(question=" ".join(sentences), answer=" ".join(steps) + f"\n#### {value}", result=value)


def problems(n: int, seed: int, *, exclude: set[str] | None = None) -> list[Problem]:
    """The first ``n`` problems of the stream ``seed`` (skipping questions in ``exclude``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    out: list[Problem] = []
    while len(out) < n:
        p = make_problem(rng)
        if exclude is None or p.question not in exclude:
            out.append(p)
    return out


def split(name: str) -> list[Problem]:
    """The fixed ``dev`` or ``test`` split (1,000 problems each)."""
    if name not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {name!r}")
    return problems(SPLIT_SIZES[name], SPLIT_SEEDS[name])


def held_out_questions() -> set[str]:
    """Every dev and test question: the training stream never yields one of them."""
    return {p.question for name in SPLIT_SIZES for p in split(name)}


class TrainStream:
    """Endless training problems from ``seed``, never a dev or test question."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.exclude = held_out_questions()

    def take(self, n: int) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            p = make_problem(self.rng)
            if p.question not in self.exclude:
                out.append(p)
        return out


def extract_answer(text: str) -> str | None:
    """The number after the first ``#### `` (commas dropped), as the harness's strict filter reads it."""
    m = ANSWER_RE.search(text)
    return m.group(1).replace(",", "").rstrip(".") if m else None


def to_jsonl(items: list[Problem]) -> str:
    """One ``{"question", "answer", "result"}`` object per line."""
    return "".join(json.dumps(asdict(p)) + "\n" for p in items)


def write_jsonl(path: str | Path, items: list[Problem]) -> None:
    """:func:`to_jsonl` written atomically to ``path``."""
    from tabes.files import atomic_write_text

    atomic_write_text(Path(path), to_jsonl(items))


def read_jsonl(path: str | Path) -> list[Problem]:
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                d = json.loads(line)
                out.append(Problem(question=d["question"], answer=d["answer"], result=int(d["result"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{i}: not a problem record ({type(err).__name__}: {err})") from None
    return out


_EQUATION = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")
PLACES = ("ones", "tens", "hundreds")


def diagnose(text: str, problem: Problem) -> dict:
    """Where a completion went wrong.

    Returns ``{"correct": bool, "kind": ..., "places": [...]}`` where ``kind`` is ``None`` for a
    correct answer, else the first of: ``"no_answer"`` (no ``#### N`` line), ``"arithmetic"``
    (an equation of the reasoning is false), ``"copy"`` (the answer is not the reasoning's
    last result), ``"reasoning"`` (true equations that do not follow the question). ``places``
    lists the answer digits that differ from the true answer (``"ones"``, ``"tens"``,
    ``"hundreds"``, right-aligned; ``"length"`` when the digit counts differ).
    """
    answer = extract_answer(text)
    truth = str(problem.result)
    if answer == truth:
        return {"correct": True, "kind": None, "places": []}
    if answer is None:
        return {"correct": False, "kind": "no_answer", "places": []}
    places = [] if len(answer) == len(truth) else ["length"]
    for i, (a, b) in enumerate(zip(reversed(answer), reversed(truth))):
        if a != b:
            places.append(PLACES[i] if i < len(PLACES) else f"10^{i}")
    equations = _EQUATION.findall(text.split("####")[0])
    if any(int(x) + (int(y) if op == "+" else -int(y)) != int(z) for x, op, y, z in equations):
        kind = "arithmetic"
    elif not equations or equations[-1][3] != answer:
        kind = "copy"
    else:
        kind = "reasoning"
    return {"correct": False, "kind": kind, "places": places}
