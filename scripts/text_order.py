"""When does a sampler commit the final answer of a word problem, against ``confidence``?

Decodes the first N test problems with ``confidence`` and with SAMPLER (greedy, 64 steps for
64 tokens, one problem at a time, traced). For each problem SAMPLER gets wrong it prints the
step at which each finished the final answer (``#### N``, its last digit committed) and the
last equation's result, and what SAMPLER wrote. The docs' account of BoE on the text task
comes from this.

    python scripts/text_order.py [--sampler boe] [--problems 40]
"""

from __future__ import annotations

import argparse

import tabes
from tabes.generate import generate
from tabes.tasks import word_problems as wp
from tabes.tasks.text import encode_prompts
from tabes.tasks.text_demo import chain_tokens


def finish_steps(model, p: wp.Problem, sampler: str) -> tuple[int, int, str]:
    """(step the last equation's result was complete, step the final answer was, decoded text)."""
    tok = model.tokenizer
    ids, mask, P = encode_prompts(model, [p.prompt], 64)
    out = generate(model, ids, sampler=sampler, steps=64, attention_mask=mask, trace=True)
    when = {q - P: r["step"] for r in out.trace for q in r["positions"]}
    answer = " " + p.answer
    results, _ = chain_tokens(answer, tok(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"])
    last, final = results[-2], results[-1]  # results are two digits wide
    gen = out.sequences[0, P:].tolist()
    text = tok.decode(gen[: gen.index(tok.eos_token_id)] if tok.eos_token_id in gen else gen)
    return max(when[last], when[last + 1]), max(when[final], when[final + 1]), text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sampler", default="boe")
    ap.add_argument("--problems", type=int, default=40)
    args = ap.parse_args()
    model = tabes.load("text-demo")
    wrong = 0
    for p in wp.split("test")[: args.problems]:
        eq_s, fin_s, text = finish_steps(model, p, args.sampler)
        if wp.extract_answer(text) == str(p.result):
            continue
        wrong += 1
        eq_c, fin_c, _ = finish_steps(model, p, "confidence")
        print(
            f"{p.answer.splitlines()[0]} | {args.sampler} wrote {text.split('####')[-1].strip()!r}: last result done at step {eq_s}, "
            f"final answer at {fin_s}; confidence: {eq_c} and {fin_c}"
        )
    print(f"{args.sampler}: {wrong} wrong of {args.problems}")


if __name__ == "__main__":
    main()
