"""The serving engine: a queue of decoding jobs and one worker thread that batches them.

Requests become :class:`Job` s. The worker takes the oldest waiting job, waits up to
``batch_window_ms`` for more, and decodes together up to ``max_batch`` jobs whose settings
are compatible (:meth:`Settings.batch_key`): the same sampler spec, steps, block length, cache
and generation length, at temperature 0, with a sampler that draws no random numbers. Each
row of a batch is then decoded as it would be alone (the loop's per-row budgets; the sampler
conformance suite checks that a row alone equals the row in a batch). A sampled request
(``temperature > 0``), a sampler that draws noise (``random``, ``lookahead``, ReMDM's random
schedule) and a search (``bon``) run alone: their random draws depend on the batch.

Each job receives events through its ``emit`` callable (called on the worker thread):

- ``{"type": "step", "step", "positions", "tokens", "texts", "remasked", "edited", "edited_texts",
  "tis"?}`` after every
  denoising step that touched the row (positions count from the first generated token);
- ``{"type": "text", "text"}``: the stream's new text, a delta (see :func:`stream_text`);
- ``{"type": "done", "text", "finish_reason", "usage"}`` or ``{"type": "error", "status",
  "message"}``, once, last.

A job whose ``cancelled`` event is set (its client went away) or whose deadline has passed is
ended at the next step: its row sits out every later step of the batch, which goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tabes.search import decode, is_search

log = logging.getLogger("tabes.serve")


@dataclass(frozen=True)
class Settings:
    """How one request is decoded (all validated before a job is made)."""

    sampler: str
    steps: int
    gen_length: int
    block_length: int | None = None
    cache: str = "none"
    temperature: float = 0.0
    seed: int = 0
    blocks: str = "tabes"

    def batch_key(self, sampler: Any) -> tuple | None:
        """Jobs with equal keys decode together; None: this job runs alone (and so does a LLaDA 2
        pace, whose counts are batch-wide: a row there depends on its batch, as in the pipeline)."""
        if self.temperature > 0 or is_search(sampler) or getattr(sampler, "stochastic", False) or self.blocks != "tabes":
            return None
        return (self.sampler, self.steps, self.gen_length, self.block_length, self.cache)


@dataclass
class Job:
    """One prompt to complete. ``emit`` receives the events of the module docstring."""

    prompt_ids: list[int]
    settings: Settings
    emit: Callable[[dict[str, Any]], None]
    stop: list[str] = field(default_factory=list)
    watch: bool = False  # send "step" and "text" events (streaming requests); otherwise only the last
    deadline: float | None = None  # time.monotonic() after which the job is ended
    cancelled: threading.Event = field(default_factory=threading.Event)
    sampler: Any = None  # the parsed spec, set by the engine


class QueueFull(Exception):
    """The engine holds ``max_queue`` jobs already."""


def stream_text(text: str, stops: list[str], final: bool) -> str:
    """The part of a growing completion that is safe to stream.

    ``text`` is the detokenized run of committed tokens from the first generated position up to
    the first position still masked (or the first EOS). A diffusion model fills positions in
    any order, so only that leading run can be streamed: it never changes again. The last word
    is held back while the canvas is still open (a token added after it may join it), and so is
    a tail that could start a stop sequence. Text after a stop sequence is never streamed.
    """
    for s in stops:
        if s and s in text:
            return text[: text.index(s)]
    if final:
        return text
    cut = max(text.rfind(" "), text.rfind("\n"))
    text = text[: cut + 1] if cut >= 0 else ""
    hold = max((len(s) - 1 for s in stops if s), default=0)
    return text[: len(text) - hold] if hold else text


class Engine:
    """Decodes :class:`Job` s in batches on one worker thread (see the module docstring).

    Args:
        model: a denoiser with a tokenizer (``tabes.load(...)``).
        max_batch: most jobs decoded together.
        batch_window_ms: how long the oldest waiting job waits for companions.
        max_queue: most jobs waiting or running; :meth:`submit` raises :class:`QueueFull` beyond.
    """

    def __init__(self, model: Any, *, max_batch: int = 16, batch_window_ms: float = 10.0, max_queue: int = 256) -> None:
        from tabes.samplers import get_sampler
        from tabes.tasks.text import completion, pad_prompts, pad_to_blocks

        if max_batch < 1 or max_queue < 1 or batch_window_ms < 0:
            raise ValueError(
                f"max_batch and max_queue must be >= 1 and batch_window_ms >= 0, got {max_batch}, {max_queue}, {batch_window_ms}"
            )
        self.model = model
        self.tok = model.tokenizer
        self.max_batch, self.window, self.max_queue = max_batch, batch_window_ms / 1000.0, max_queue
        self._get_sampler = get_sampler
        self._pad_prompts, self._pad_to_blocks, self._completion = pad_prompts, pad_to_blocks, completion
        self._waiting: collections.deque[Job] = collections.deque()
        self._running = 0
        self._cv = threading.Condition()
        self._closing = False
        self.batches: list[int] = []  # the size of every batch decoded (for tests and the load bench)
        self._thread = threading.Thread(target=self._work, name="tabes-engine", daemon=True)
        self._thread.start()

    # -- the request side -------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFull` or ``RuntimeError`` when closing."""
        job.sampler = self._get_sampler(job.settings.sampler)
        with self._cv:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            if len(self._waiting) + self._running >= self.max_queue:
                raise QueueFull(f"{len(self._waiting) + self._running} requests queued or running (max {self.max_queue})")
            self._waiting.append(job)
            self._cv.notify()

    @property
    def load(self) -> int:
        """Jobs waiting or running."""
        with self._cv:
            return len(self._waiting) + self._running

    def close(self, timeout: float | None = None) -> None:
        """Finish every queued job, then stop the worker."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)

    # -- the worker -------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """Wait for the oldest job, give it ``window`` seconds for companions, return its batch.

        The window starts again at each companion's arrival (a burst of requests arriving over
        more than one window still decodes together), up to 4 windows in all."""
        with self._cv:
            while not self._waiting:
                if self._closing:
                    return None
                self._cv.wait()
            first = self._waiting[0]
            key = first.settings.batch_key(first.sampler)
            now = time.monotonic()
            end, cap, seen = now + self.window, now + 4 * self.window, 1
            while key is not None and not self._closing:
                n = sum(self._key(j) == key for j in self._waiting)
                if n >= self.max_batch:
                    break
                if n > seen:  # a companion came: wait one more window for the next
                    seen, end = n, min(cap, time.monotonic() + self.window)
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch = [first] if key is None else [j for j in self._waiting if self._key(j) == key][: self.max_batch]
            for j in batch:
                self._waiting.remove(j)
            self._running += len(batch)
            return batch

    @staticmethod
    def _key(job: Job) -> tuple | None:
        return job.settings.batch_key(job.sampler)

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._run([j for j in batch if not self._gone(j)])
            except Exception as err:  # a failing decode ends its requests, never the server
                log.error("decoding failed for %d request(s): %s: %s", len(batch), type(err).__name__, err)
                for j in batch:
                    j.emit({"type": "error", "status": 500, "message": f"decoding failed: {type(err).__name__}: {err}"})
            finally:
                with self._cv:
                    self._running -= len(batch)

    def _gone(self, job: Job) -> bool:
        """True (and the job ended) when its client left or its deadline passed while it waited."""
        if job.cancelled.is_set():
            return True
        if job.deadline is not None and time.monotonic() > job.deadline:
            job.emit({"type": "error", "status": 504, "message": "the request timed out before decoding started"})
            return True
        return False

    def _run(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        self.batches.append(len(jobs))
        s, model, tok = jobs[0].settings, self.model, self.tok
        mask, eos = model.mask_id, tok.eos_token_id
        ends = getattr(model, "completion_eos", None)  # a model's own end of text (DiffusionGemma: its generation config's)
        ids, attn, P = self._pad_prompts(model, [j.prompt_ids for j in jobs], s.gen_length)
        B = len(jobs)
        if s.blocks == "llada2":  # whole blocks, the tail hidden, as LLaDA 2's pipeline lays them out
            ids, attn = self._pad_to_blocks(ids, attn, s.block_length or 32, mask)
        ended = torch.zeros(B, dtype=torch.bool)
        sent = [""] * B
        live = not is_search(jobs[0].sampler)

        def text_of(row: torch.Tensor) -> str:  # the completion up to the first position still masked
            gen = row[P : P + s.gen_length].tolist()
            return self._completion(tok, gen[: gen.index(mask)] if mask in gen else gen, ends)[0]

        def on_step(step: int, x: torch.Tensor, records: list[dict]) -> torch.Tensor | None:
            for rec in records:
                b = rec["row"]
                if ended[b] or not jobs[b].watch:
                    continue
                ev = {"type": "step", "step": step, "positions": [p - P for p in rec["positions"]], "tokens": rec["tokens"]}
                ev["texts"] = [tok.decode([t]) for t in rec["tokens"]]
                ev["remasked"] = [p - P for p in rec.get("remasked", [])]
                ev["edited"] = [p - P for p in rec.get("edited", [])]  # llada2's in-place edits, and their new tokens
                ev["edited_texts"] = [tok.decode([t]) for t in rec.get("edited_tokens", [])]
                if "tis" in rec:  # BoE: the Token Influence Score of each candidate
                    ev["tis"] = {"positions": [p - P for p in rec["candidates"]], "values": rec["tis"]}
                jobs[b].emit(ev)
                safe = stream_text(text_of(x[b]), jobs[b].stop, final=False)
                if safe.startswith(sent[b]) and len(safe) > len(sent[b]):
                    jobs[b].emit({"type": "text", "text": safe[len(sent[b]) :]})
                    sent[b] = safe
            now = time.monotonic()
            for b, j in enumerate(jobs):
                if ended[b]:
                    continue
                if j.cancelled.is_set():
                    ended[b] = True
                elif j.deadline is not None and now > j.deadline:
                    ended[b] = True
                    j.emit({"type": "error", "status": 504, "message": "the request timed out while decoding"})
            return ended.clone() if bool(ended.any()) else None

        out = decode(
            model,
            ids,
            sampler=jobs[0].sampler,
            steps=s.steps,
            block_length=s.block_length or (32 if s.blocks == "llada2" else None),
            temperature=s.temperature,
            generator=torch.Generator().manual_seed(s.seed),
            attention_mask=attn,
            **({"on_step": on_step} if live else {}),
            **({} if s.cache == "none" else {"cache": s.cache}),
            **({} if s.blocks == "tabes" else {"blocks": s.blocks, "eos_id": eos}),
        )
        seqs = out.sequences.cpu()
        for b, j in enumerate(jobs):
            if ended[b]:
                continue
            gen = seqs[b, P : P + s.gen_length].tolist()
            full, n_gen = self._completion(tok, gen, ends)
            text = stream_text(full, j.stop, final=True)
            hit_stop = text != full
            if j.watch and text.startswith(sent[b]) and len(text) > len(sent[b]):
                j.emit({"type": "text", "text": text[len(sent[b]) :]})
            usage = {
                "prompt_tokens": len(j.prompt_ids),
                "completion_tokens": n_gen,
                "total_tokens": len(j.prompt_ids) + n_gen,
                "tabes": {
                    "forwards": int(out.forwards[b]),
                    "backwards": int(out.backwards[b]),
                    "steps": int(out.steps[b]),
                    "batch": B,
                    "seconds": round(out.seconds, 4),
                },
            }
            reason = "stop" if hit_stop or n_gen < len(gen) else "length"
            j.emit({"type": "done", "text": text, "finish_reason": reason, "usage": usage})
