"""lm-evaluation-harness model type ``tabes`` (needs the ``eval`` extra: ``pip install 'tabes[eval]'``).

The harness (0.4.x) does not discover third-party models on its own. Importing this module
registers ``tabes`` in the harness's model registry. ``tabes lm-eval ARGS`` imports it and
hands ARGS to the harness's own command line::

    tabes lm-eval --model tabes --model_args pretrained=PATH,sampler=boe,steps=64,gen_length=64,block_length=32 --tasks gsm8k

Tasks shipped with tabes (``lm_eval_tasks/``, found by ``tabes lm-eval`` without
``--include_path``; from Python pass ``TaskManager(include_path=TASKS_DIR)``):

- ``tabes_text_demo``: the word problems of the shipped ``text-demo`` model (GSM8K format,
  exact match on the ``#### N`` answer), read from a local JSONL, offline::

    tabes lm-eval --model tabes --model_args pretrained=text-demo,sampler=boe --tasks tabes_text_demo --limit 200

  Another problem file of the same format (``tabes word-problems --seed S --out F``):
  ``--metadata '{"data_file": "F"}'``.

From Python::

    import lm_eval
    import tabes.integrations.lm_eval  # registers "tabes"

    lm_eval.simple_evaluate(model="tabes", model_args="pretrained=PATH,sampler=boe,steps=64,gen_length=64", tasks=["gsm8k"])

Model arguments (``model_args``, comma-separated ``key=value``):

- ``pretrained``: a local checkpoint folder (see :func:`tabes.load`; nothing is downloaded);
- ``sampler``: a sampler spec; its own options go after ``:`` separated by ``;`` because
  the harness splits ``model_args`` at commas, e.g. ``sampler=boe:r=4;rho=0.25``;
- ``steps``, ``gen_length``, ``block_length``: denoising steps for ``gen_length`` tokens and
  the block length. A request asking for fewer tokens (``max_gen_toks``) decodes
  ``min(max_gen_toks, gen_length)`` tokens with proportionally fewer steps;
- ``temperature`` (0 = greedy), ``seed``, ``batch_size``, ``eos_fill`` (``true``: once a row
  commits EOS its later masks become EOS at once; faster, but not the reference decoders'
  tokens, see :mod:`tabes.tasks.text`; default ``false``);
- ``kind``, ``mask_id``, ``trust_remote_code``, ``device``, ``dtype`` (``float32``,
  ``bfloat16``, ``float16``), ``allow_pickle``: passed to :func:`tabes.load` (``device``
  defaults to CUDA when available; a CUDA device on a machine without one falls back to the
  CPU with a warning);
- ``cache``: ``none`` (default), ``prefix`` or ``dual``, the block KV cache of
  :func:`tabes.generate` (it needs ``block_length``; without blocks it is not used).

``generate_until`` cuts each completion at the first of the request's stop strings.
``loglikelihood`` and ``loglikelihood_rolling`` raise ``NotImplementedError``: a masked
diffusion model has no exact token likelihood, and a Monte-Carlo ELBO estimate is not
implemented, so multiple-choice and perplexity tasks cannot run on this model type.

Determinism: a greedy completion does not depend on which other requests share its batch
(left padding is hidden by the attention mask and position ids start at each prompt's first
token). With ``temperature > 0`` each request is decoded alone with the seed
``seed + crc32(prompt)``, so its sample does not depend on batching or sharding either.

Multi-process: under ``torchrun`` or ``accelerate launch`` the model reports ``rank`` and
``world_size`` from the launcher's environment (starting a gloo or nccl process group); the
harness then gives each rank its share of requests and gathers the metrics on rank 0.
"""

from __future__ import annotations

import logging
import sys
import zlib
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (the harness's own model types: it adds them only to an empty registry)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from tabes import dist
from tabes.cache import check_cache_mode
from tabes.loading import load
from tabes.samplers import get_sampler
from tabes.tasks.text import generate_text

log = logging.getLogger(__name__)

TASKS_DIR = str(Path(__file__).with_name("lm_eval_tasks"))


class _Collectives:
    """The collectives lm-eval 0.4.0-0.4.9 asks of ``lm.accelerator`` when world_size > 1."""

    def wait_for_everyone(self) -> None:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.barrier()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-gather along dim 0 (a 0-dim tensor counts as one element), like accelerate's."""
        import torch.distributed as tdist

        t = tensor.reshape(1) if tensor.dim() == 0 else tensor
        if not tdist.is_initialized():
            return t
        parts = [torch.zeros_like(t) for _ in range(tdist.get_world_size())]
        tdist.all_gather(parts, t.contiguous())
        return torch.cat(parts)


def _device(device: str | None) -> str:
    """The harness's device argument: None picks CUDA when there is one; a CUDA device asked for
    on a machine without one falls back to the CPU with a warning (the harness's command line
    defaults to "cuda" in some 0.4.x versions)."""
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        log.warning("tabes: device %r requested but CUDA is not available; running on the CPU", device)
        return "cpu"
    return str(device)


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _to_int(name: str, value: Any, minimum: int = 1) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


@register_model("tabes")
class TabesLM(LM):
    """A tabes denoiser behind the harness's ``LM`` interface (generation tasks)."""

    def __init__(
        self,
        pretrained: str,
        sampler: str = "confidence",
        steps: int = 64,
        gen_length: int = 64,
        block_length: int | str | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int | str = 1,
        eos_fill: bool | str = False,
        kind: str | None = None,
        mask_id: int | None = None,
        trust_remote_code: bool | str = False,
        device: str | None = None,
        dtype: str | None = None,
        allow_pickle: bool | str = False,
        cache: str = "none",
        **unknown: Any,
    ) -> None:
        super().__init__()
        # the harness adds these when the command line sets them; they mean nothing here
        unknown = {k: v for k, v in unknown.items() if k not in ("max_batch_size",) and v is not None}
        if unknown:
            raise ValueError(f"unknown tabes model_args: {sorted(unknown)}")
        opts: dict[str, Any] = {
            "trust_remote_code": _to_bool("trust_remote_code", trust_remote_code),
            "allow_pickle": _to_bool("allow_pickle", allow_pickle),
        }
        if dtype not in (None, "", "auto"):
            opts["dtype"] = dtype
        if kind:
            opts["kind"] = kind
        if mask_id is not None:
            opts["mask_id"] = int(mask_id)
        device = _device(device)
        if device != "cpu":
            opts["device"] = device
        self.model = load(pretrained, **opts)
        if getattr(self.model, "tokenizer", None) is None:
            raise ValueError(f"{pretrained}: lm-eval needs a checkpoint with tokenizer files")
        self.sampler = get_sampler(str(sampler).replace(";", ","))
        self.steps = _to_int("steps", steps)
        self.gen_length = _to_int("gen_length", gen_length)
        self.block_length = None if block_length in (None, "", "None", "none") else _to_int("block_length", block_length)
        self.temperature = float(temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.seed = int(seed)
        # "auto" (the harness's batch-size search) is not supported: it falls back to 1
        self.batch_size_per_gpu = 1 if str(batch_size).startswith("auto") else _to_int("batch_size", batch_size)
        self.eos_fill = _to_bool("eos_fill", eos_fill)
        self.cache = check_cache_mode(str(cache))
        self._device = torch.device(device)  # where the harness puts its small tensors
        self._rank, self._world_size = dist.world()
        self.accelerator = _Collectives()

    @property
    def device(self) -> torch.device:
        return self._device

    # collectives: lm-eval >= 0.4.10 calls these methods, earlier 0.4.x calls ``self.accelerator``
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            return [obj]
        out = [None] * tdist.get_world_size() if self.rank == dst else None
        tdist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    @property
    def tokenizer_name(self) -> str:
        return type(self.model.tokenizer).__name__

    def _decode(self, prompts: list[str], gen: int, seed: int) -> list[str]:
        steps = max(1, round(self.steps * gen / self.gen_length))
        block = self.block_length if self.block_length is not None and self.block_length < gen else None
        res = generate_text(
            self.model,
            prompts,
            gen_length=gen,
            steps=steps,
            block_length=block,
            sampler=self.sampler,
            temperature=self.temperature,
            seed=seed,
            eos_fill=self.eos_fill,
            cache=self.cache if block is not None else "none",  # the cache works per block
        )
        return res.texts

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One completion per request: ``(context, {"until": [...], "max_gen_toks": n, ...})``."""
        from tqdm import tqdm

        args = [r.args for r in requests]
        lengths = [min(self.gen_length, _to_int("max_gen_toks", kw.get("max_gen_toks", self.gen_length))) for _, kw in args]
        # batches of consecutive requests with the same generation length; sampled decoding goes one by one
        size = 1 if self.temperature > 0 else self.batch_size_per_gpu
        batches: list[list[int]] = []
        for i, n in enumerate(lengths):
            if batches and len(batches[-1]) < size and lengths[batches[-1][0]] == n:
                batches[-1].append(i)
            else:
                batches.append([i])
        out: list[str] = [""] * len(args)
        bar = tqdm(total=len(args), disable=disable_tqdm or self.rank != 0, desc="tabes generate_until")
        for idx in batches:
            prompts = [args[i][0] for i in idx]
            seed = self.seed + (zlib.crc32(prompts[0].encode()) if self.temperature > 0 else 0)
            for i, text in zip(idx, self._decode(prompts, lengths[idx[0]], seed)):
                until = args[i][1].get("until") or []
                for stop in [until] if isinstance(until, str) else until:
                    if stop and stop in text:
                        text = text[: text.index(stop)]
                out[i] = text
            bar.update(len(idx))
        bar.close()
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "tabes: loglikelihood is not available: a masked diffusion model has no exact token likelihood and a "
            "Monte-Carlo ELBO estimate is not implemented; use generate_until tasks"
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "tabes: loglikelihood_rolling is not available: a masked diffusion model has no exact token likelihood; "
            "use generate_until tasks"
        )


def main(argv: list[str]) -> int:
    """Run the harness's own command line with the ``tabes`` model type registered and the
    shipped tasks (:data:`TASKS_DIR`) on the task path, beside any ``--include_path``."""
    import lm_eval.tasks
    from lm_eval.__main__ import cli_evaluate

    manager = lm_eval.tasks.TaskManager

    def with_shipped_tasks(*args, include_path=None, **kwargs):
        paths = list(include_path) if isinstance(include_path, (list, tuple)) else [include_path] if include_path else []
        return manager(*args, include_path=[*paths, TASKS_DIR], **kwargs)

    old = sys.argv
    sys.argv = ["lm_eval", *argv]
    lm_eval.tasks.TaskManager = with_shipped_tasks
    try:
        cli_evaluate()
    except SystemExit as exc:  # argparse errors and --help
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
    finally:
        sys.argv = old
        lm_eval.tasks.TaskManager = manager
    return 0
