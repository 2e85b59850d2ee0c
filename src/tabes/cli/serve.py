"""``tabes serve``: an OpenAI-compatible server with a live view of the denoising (the serve extra)."""

from __future__ import annotations

import argparse
import signal
import sys

from tabes.cli.common import UserError, positive_int


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over the OpenAI API (completions, chat, streaming) with a live page at /",
        description="Serve a model over OpenAI's /v1/completions and /v1/chat/completions, batching concurrent "
        "requests, with the denoising shown live at http://HOST:PORT/. Requests may set sampler, steps, "
        "block_length and cache beside OpenAI's fields. Needs the serve extra: pip install 'tabes[serve]'.",
    )
    p.add_argument("--model", required=True, help="local checkpoint folder, or text-demo (the shipped word-problem model)")
    p.add_argument("--name", help="the model id clients send and /v1/models lists (default: --model's name)")
    p.add_argument("--sampler", default="confidence", help="default sampler spec (requests may set their own)")
    p.add_argument("--steps", type=positive_int, default=64, help="default steps for --gen-length tokens (scaled to max_tokens)")
    p.add_argument("--gen-length", type=positive_int, default=64, help="default max_tokens")
    p.add_argument("--block-length", type=positive_int, help="default block length (none: one block)")
    p.add_argument("--cache", choices=["none", "prefix", "dual"], default="none", help="default block KV cache")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=positive_int, default=16, help="most requests decoded together")
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=10.0,
        help="how long a request waits for companions (again after each one, 4 windows at most)",
    )
    p.add_argument("--max-queue", type=positive_int, default=256, help="most requests queued or running; more get 429")
    p.add_argument("--request-timeout", type=_positive_float, help="seconds after which a request ends with a 504")
    p.add_argument("--kind", choices=["masked-lm", "llada", "dream", "diffusion-gemma"], help="default: from the checkpoint's config")
    p.add_argument("--mask-id", type=int, help="mask token id when the tokenizer has none")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own model code to run")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights' dtype (default: as stored)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from tabes.serve.app import Defaults, make_app
    except ImportError as err:
        raise UserError(f"tabes serve needs the serve extra: pip install 'tabes[serve]' ({err})") from None
    from pathlib import Path

    from tabes.loading import load
    from tabes.samplers import get_sampler

    get_sampler(args.sampler)  # a bad default fails here, in one line
    if not 0 <= args.batch_window_ms <= 10_000:
        raise UserError(f"--batch-window-ms must be in [0, 10000], got {args.batch_window_ms}")
    opts = {"trust_remote_code": args.trust_remote_code, "device": args.device, "dtype": args.dtype}
    if args.kind:
        opts["kind"] = args.kind
    if args.mask_id is not None:
        opts["mask_id"] = args.mask_id
    model = load(args.model, **opts)
    if getattr(model, "tokenizer", None) is None:
        raise UserError(f"{args.model}: serving text needs a checkpoint with tokenizer files")
    name = args.name or Path(args.model).name
    defaults = Defaults(args.sampler, args.steps, args.gen_length, args.block_length, args.cache, args.request_timeout)
    app = make_app(model, name, defaults, max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, max_queue=args.max_queue)
    print(f"tabes: serving {name} at http://{args.host}:{args.port}/ (OpenAI API under /v1)", file=sys.stderr, flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and captured and captured[-1] == sig:
                captured.pop()  # a SIGTERM that let the requests in flight finish is a clean exit (0), not a kill

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=None)
    Server(config).run()
    return 0
