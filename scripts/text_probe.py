"""Which route does a text-demo model use to compute each equation of a word problem?

For each dev problem and each equation k of its answer, the answer is made visible up to the
last digit of equation k's result and masked from there on, and the model predicts that
digit (teacher forcing: everything it needs is in front of it). Then equation 1 is probed
again with the question's start count changed by 3 while the answer keeps the true count:
a model that reads the equation's own operand follows the answer; one that computes from the
question follows the question. Last, equation 2 is probed with equation 1's result (and so
equation 2's first operand) changed by 3 in the answer while the question stays true. Last,
each result is predicted whole (both digits) with the chain hidden from it on, as the trainer's
chain samples do (:func:`tabes.tasks.text_demo.chain_tokens`), once with the question whole
and once with every digit of the question masked: only the answer's operands are then left.

    python scripts/text_probe.py [MODEL] [--problems N]

MODEL is a folder or a shipped name (default: text-demo). Prints five lines.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import torch

from tabes.loading import default_model_path
from tabes.tasks import text_demo as td
from tabes.tasks import word_problems as wp


def result_last_digits(tokens: list[str]) -> list[int]:
    """Index of each equation result's last digit among the answer's tokens."""
    out = []
    for e in (j for j, t in enumerate(tokens) if t == "Ġ="):
        j = e + 2  # "Ġ=", "Ġ", first digit
        while j + 1 < len(tokens) and tokens[j + 1].isdigit():
            j += 1
        out.append(j)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="text-demo")
    ap.add_argument("--problems", type=int, default=60)
    args = ap.parse_args()
    folder = default_model_path(args.model) if args.model == "text-demo" and not Path(args.model).exists() else Path(args.model)
    model, tok = td.load(folder)
    model.eval()
    logits = td.MaskedLMLogits(model)
    right: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    follows = {"answer": 0, "question": 0, "n": 0}
    second = {"answer": 0, "question": 0, "n": 0}
    whole: dict[tuple[bool, int], list[int]] = defaultdict(lambda: [0, 0])
    for p in wp.split("dev")[: args.problems]:
        start = int(re.search(r"has (\d+)", p.question).group(1))
        fake = start + (3 if start % 10 < 5 else -3)  # same tens digit, another ones digit
        x0, op, b = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)", p.answer)[0][:3]
        change = int(b) if op == "+" else -int(b)
        for question in (p.question, p.question.replace(f"has {start}", f"has {fake}", 1)):
            prompt = tok(wp.prompt_text(question), add_special_tokens=False)["input_ids"]
            answer = tok(" " + p.answer, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer + [tok.eos_token_id] * (td.GEN_MAX - len(answer))])
            tokens = tok.convert_ids_to_tokens(answer)
            for k, j in enumerate(result_last_digits(tokens)):
                pos = len(prompt) + j
                x = ids.clone()
                x[0, pos:] = tok.mask_token_id
                with torch.no_grad():
                    guess = tok.convert_ids_to_tokens([int(logits(x, torch.ones_like(x, dtype=torch.bool))[0, pos].argmax())])[0]
                if question == p.question:
                    right[k][0] += guess == tokens[j]
                    right[k][1] += 1
                elif k == 0:
                    follows["answer"] += guess == str((start + change) % 10)
                    follows["question"] += guess == str((fake + change) % 10)
                    follows["n"] += 1
                    break
        eqs = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)", p.answer)
        if len(eqs) >= 2:  # equation 2 with its first operand (equation 1's result) changed in the answer
            r1, op2, b2 = int(eqs[0][3]), eqs[1][1], int(eqs[1][2])
            f1 = r1 + (3 if r1 % 10 < 5 else -3)
            first, rest = p.answer.split(". ", 1)
            answer_text = first[: first.rindex("= ") + 2] + str(f1) + ". " + rest.replace(f"{r1} {op2}", f"{f1} {op2}", 1)
            prompt = tok(p.prompt, add_special_tokens=False)["input_ids"]
            answer = tok(" " + answer_text, add_special_tokens=False)["input_ids"]
            tokens = tok.convert_ids_to_tokens(answer)
            j = result_last_digits(tokens)[1]
            x = torch.tensor([prompt + answer + [tok.eos_token_id] * (td.GEN_MAX - len(answer))])
            x[0, len(prompt) + j :] = tok.mask_token_id
            with torch.no_grad():
                guess = tok.convert_ids_to_tokens([int(logits(x, torch.ones_like(x, dtype=torch.bool))[0, len(prompt) + j].argmax())])[0]
            sign = 1 if op2 == "+" else -1
            second["answer"] += guess == str((f1 + sign * b2) % 10)
            second["question"] += guess == str((r1 + sign * b2) % 10)
            second["n"] += 1
        penc = tok(p.prompt, add_special_tokens=False, return_offsets_mapping=True)
        aenc = tok(" " + p.answer, add_special_tokens=False, return_offsets_mapping=True)
        prompt, answer = penc["input_ids"], aenc["input_ids"]
        ids = torch.tensor([prompt + answer + [tok.eos_token_id] * (td.GEN_MAX - len(answer))])
        digits = [j for j, (a, e) in enumerate(penc["offset_mapping"]) if e > a and p.prompt[a:e].isdigit()]
        results, chain = td.chain_tokens(" " + p.answer, aenc["offset_mapping"])
        for k, cut in enumerate(results[:-1]):  # every equation's result (the final answer is a copy)
            for hide in (False, True):
                x = ids.clone()
                if hide:
                    x[0, digits] = tok.mask_token_id
                x[0, [len(prompt) + j for j in chain if j >= cut]] = tok.mask_token_id
                with torch.no_grad():
                    guess = logits(x, torch.ones_like(x, dtype=torch.bool))[0].argmax(-1)
                span = [len(prompt) + cut, len(prompt) + cut + 1]  # results are two digits wide
                whole[(hide, k)][0] += bool((guess[span] == ids[0, span]).all())
                whole[(hide, k)][1] += 1
    print("teacher-forced last digit of each result:", ", ".join(f"equation {k + 1}: {v[0]}/{v[1]}" for k, v in sorted(right.items())))
    n = follows["n"]
    print(
        f"equation 1 with the question's count changed: follows the answer's operand {follows['answer']}/{n}, "
        f"the question {follows['question']}/{n}"
    )
    n = second["n"]
    print(
        f"equation 2 with equation 1's result changed in the answer: follows the answer {second['answer']}/{n}, "
        f"the question {second['question']}/{n}"
    )
    for hide, label in ((False, "question whole"), (True, "question's digits masked")):
        cells = ", ".join(f"equation {k + 1}: {v[0]}/{v[1]}" for (h, k), v in sorted(whole.items()) if h == hide)
        print(f"whole result, chain hidden from it on, {label}: {cells}")


if __name__ == "__main__":
    main()
