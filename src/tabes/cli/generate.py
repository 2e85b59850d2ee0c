"""``tabes generate`` (complete a prompt with a transformers MDM) and ``tabes lm-eval``."""

from __future__ import annotations

import argparse
import json
import sys

from tabes.cli.common import nonneg_float, positive_int


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="complete a text prompt with a transformers MDM checkpoint")
    p.add_argument("--model", required=True, help="local checkpoint folder, or text-demo (the shipped word-problem model)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--sampler", default="confidence")
    p.add_argument("--steps", type=positive_int, default=64)
    p.add_argument("--gen-length", type=positive_int, default=64)
    p.add_argument("--block-length", type=positive_int)
    p.add_argument("--temperature", type=nonneg_float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=["masked-lm", "llada", "dream", "diffusion-gemma"], help="default: from the checkpoint's config")
    p.add_argument("--mask-id", type=int, help="mask token id when the tokenizer has none")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own model code to run")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle .bin weights when the folder has no safetensors")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights' dtype (default: as stored, float32)")
    p.add_argument(
        "--cache",
        choices=["none", "prefix", "dual"],
        default="none",
        help="block KV cache (Fast-dLLM): refreshed at each block start; use with --block-length",
    )
    p.add_argument(
        "--blocks",
        choices=["tabes", "llada2"],
        default="tabes",
        help="llada2: LLaDA 2's block refinement as diffusers' LLaDA2Pipeline runs it (aligned, block-causal blocks, "
        "EOS early stop; with --sampler llada2 its threshold commit and editing; --steps = steps per block x blocks)",
    )
    p.add_argument(
        "--eos-fill",
        action="store_true",
        help="once a row commits EOS, fill its later masks with EOS (fewer passes, but not the reference decoders' tokens)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print completion, forward/backward counts, time and backward_attention (aqa, dense, or null without a backward) as JSON",
    )
    p.set_defaults(func=cmd_generate)

    sub.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness with the 'tabes' model type registered (needs the eval extra)",
        description="Every argument goes to the harness's own command line, e.g. "
        "tabes lm-eval --model tabes --model_args pretrained=PATH,sampler=boe,steps=64,gen_length=64 --tasks TASK",
        add_help=False,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from tabes.loading import load
    from tabes.samplers import get_sampler
    from tabes.tasks.text import generate_text

    sampler = get_sampler(args.sampler)
    opts = {"trust_remote_code": args.trust_remote_code, "allow_pickle": args.allow_pickle, "device": args.device, "dtype": args.dtype}
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
        eos_fill=args.eos_fill,
        cache=args.cache,
        blocks=args.blocks,
    )
    out = res.output
    if args.json:
        rec = {"prompt": args.prompt, "completion": res.texts[0], "sampler": sampler.name, "cache": args.cache}
        rec.update(forwards=int(out.forwards[0]), backwards=int(out.backwards[0]), steps=int(out.steps[0]), seconds=round(out.seconds, 4))
        # how BoE's backward ran: through ActiveQueryAttention, or dense (a model whose attention skips the registry)
        rec["backward_attention"] = None if not int(out.backwards[0]) else "aqa" if getattr(model, "routes_attention", True) else "dense"
        print(json.dumps(rec))
    else:
        print(res.texts[0])
    return 0


def cmd_lm_eval(argv: list[str]) -> int:
    """Hand ``argv`` to lm-evaluation-harness's command line with the ``tabes`` model registered."""
    try:
        from tabes.integrations.lm_eval import main as lm_eval_main
    except ImportError as err:
        print(f"tabes: error: lm-eval needs the eval extra: pip install 'tabes[eval]' ({err})", file=sys.stderr)
        return 2
    return lm_eval_main(argv)
