"""An OpenAI-compatible HTTP API over :class:`tabes.serve.engine.Engine` (FastAPI).

Endpoints:

- ``POST /v1/completions``, ``POST /v1/chat/completions``: OpenAI's request and response
  bodies. Extra request fields (the official client sends them with ``extra_body``):
  ``sampler`` (any spec), ``steps``, ``block_length``, ``cache``, ``blocks`` (``"llada2"``:
  LLaDA 2's pace, as ``tabes generate --blocks llada2``). ``usage.tabes`` holds the
  row's forward and backward passes, steps, batch size and the batch's seconds.
- ``stream: true`` sends server-sent events in OpenAI's chunk format. What streams is the text
  from the first generated position up to the first position still masked, as it grows
  (:func:`tabes.serve.engine.stream_text`); the chunks add up to the final text.
- ``POST /tabes/denoise``: the viewer's stream, one event per denoising step with the
  positions and tokens committed (and BoE's TIS), then the completion.
- ``GET /v1/models``, ``GET /health``, ``GET /tabes/samplers``, and the live page at ``/``.

Every error is OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``, with a
4xx status for bad input (the message names the field), 429 with ``Retry-After`` when the
queue is full, 504 when a request passes ``request_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from tabes.serve.engine import Engine, Job, QueueFull, Settings

log = logging.getLogger("tabes.serve")
PAGE = Path(__file__).with_name("page.html")


@dataclass
class Defaults:
    """The server's settings for fields a request leaves out."""

    sampler: str = "confidence"
    steps: int = 64
    gen_length: int = 64
    block_length: int | None = None
    cache: str = "none"
    request_timeout: float | None = None


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _int(body: dict, name: str, default: int | None, minimum: int = 1) -> int | None:
    v = body.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}, got {v!r}", name)
    return v


def make_app(model: Any, name: str, defaults: Defaults | None = None, **engine_opts: Any) -> FastAPI:
    """The FastAPI app serving ``model`` as ``name``; ``engine_opts`` go to :class:`Engine`."""
    from tabes.cache import check_cache_mode, supports_cache
    from tabes.protocol import unwrap
    from tabes.samplers import available, get_sampler
    from tabes.tasks.text import canvas_layout, prompt_specials

    d = defaults or Defaults()
    tok = model.tokenizer
    limit = getattr(model, "max_positions", None)
    engine = Engine(model, **engine_opts)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(engine.close)  # after the last connection: the queue is empty by then

    app = FastAPI(title="tabes", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine = engine

    def settings(body: dict, n_prompt: int) -> Settings:
        """The decoding settings of a request body, each field checked."""
        spec = body.get("sampler", d.sampler)
        if not isinstance(spec, str):
            raise BadRequest(f"sampler must be a spec string, got {spec!r}", "sampler")
        try:
            sampler = get_sampler(spec)
        except (ValueError, KeyError, TypeError) as err:
            raise BadRequest(f"sampler: {err}", "sampler") from None
        if getattr(sampler, "name", "") == "dfs":
            raise BadRequest("sampler: dfs needs a task's constraint check and does not decode text; use a step sampler or bon", "sampler")
        gen = _int(body, "max_tokens", body.get("max_completion_tokens", d.gen_length))
        block = _int(body, "block_length", d.block_length)
        try:  # a model that decodes whole canvases (DiffusionGemma) sets both
            gen, block = canvas_layout(unwrap(model), gen, block, body.get("blocks", "tabes"))
        except ValueError as err:
            raise BadRequest(str(err), "blocks" if str(err).startswith("blocks") else "block_length") from None
        if limit is not None and n_prompt + gen > limit:
            raise BadRequest(
                f"max_tokens: {n_prompt} prompt tokens + max_tokens {gen} = {n_prompt + gen}, more than the model's {limit} positions",
                "max_tokens",
            )
        steps = _int(body, "steps", max(1, round(d.steps * gen / d.gen_length)))
        if block is not None and steps < -(-gen // block):
            raise BadRequest(f"steps ({steps}) must be at least the number of blocks ({-(-gen // block)})", "steps")
        cache = body.get("cache", d.cache)
        try:
            check_cache_mode(cache)
        except ValueError as err:
            raise BadRequest(f"cache: {err}", "cache") from None
        if cache != "none" and not supports_cache(unwrap(model)):
            raise BadRequest(f"cache: {cache!r} needs a model with KV cache support; this one has none", "cache")
        temp = body.get("temperature", 0.0)
        temp = 0.0 if temp is None else temp
        if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not 0 <= temp <= 100:
            raise BadRequest(f"temperature must be a number in [0, 100], got {temp!r}", "temperature")
        seed = body.get("seed", 0)
        seed = 0 if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BadRequest(f"seed must be an integer, got {seed!r}", "seed")
        if body.get("n", 1) not in (1, None):
            raise BadRequest(f"n must be 1, got {body.get('n')!r}: send one request per seed", "n")
        blocks = body.get("blocks", "tabes")
        if blocks not in ("tabes", "llada2"):
            raise BadRequest(f"blocks must be 'tabes' or 'llada2', got {blocks!r}", "blocks")
        if blocks == "llada2" and limit is not None and -(-(n_prompt + gen) // (block or 32)) * (block or 32) > limit:
            raise BadRequest(
                f"max_tokens: the prompt and max_tokens padded to whole blocks pass the model's {limit} positions", "max_tokens"
            )
        return Settings(spec, steps, gen, block, cache, float(temp), seed, blocks)

    def stops(body: dict) -> list[str]:
        s = body.get("stop")
        if s is None:
            return []
        if isinstance(s, str):
            return [s]
        if isinstance(s, list) and all(isinstance(x, str) for x in s):
            return s
        raise BadRequest(f"stop must be a string or a list of strings, got {s!r}", "stop")

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=prompt_specials(unwrap(model)))["input_ids"]

    async def read_body(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadRequest(f"the body is not valid JSON: {err}", None) from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object", None)
        m = body.get("model")
        if m not in (None, "", name):
            raise BadRequest(f"model {m!r} is not served here; this server serves {name!r}", "model", 404, "model_not_found")
        return body

    def start(prompt_ids: list[int], st: Settings, stop: list[str], watch: bool) -> tuple[Job, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        deadline = None if d.request_timeout is None else time.monotonic() + d.request_timeout
        job = Job(prompt_ids, st, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev), stop, watch, deadline)
        try:
            engine.submit(job)
        except QueueFull as err:
            raise BadRequest(f"the server is busy: {err}; retry later", None, 429, "queue_full") from None
        except RuntimeError as err:
            raise BadRequest(str(err), None, 503, "shutting_down") from None
        return job, queue

    async def finish(request: Request, jobs: list[tuple[Job, asyncio.Queue]]) -> list[dict]:
        """Wait for every job's last event; a client that leaves cancels its jobs."""
        out = []
        try:
            for _, q in jobs:
                while True:
                    try:
                        ev = await asyncio.wait_for(q.get(), 0.25)
                    except TimeoutError:
                        if await request.is_disconnected():
                            raise asyncio.CancelledError from None
                        continue
                    if ev["type"] in ("done", "error"):
                        out.append(ev)
                        break
        finally:
            for j, _ in jobs:
                j.cancelled.set()  # a no-op for finished jobs; frees the rows of a client that left
        return out

    def prompts_of(body: dict) -> list[list[int]]:
        p = body.get("prompt")
        if isinstance(p, str):
            return [encode(p)]
        if isinstance(p, list) and p and all(isinstance(x, str) for x in p):
            return [encode(x) for x in p]
        if isinstance(p, list) and p and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
            return [p]
        if isinstance(p, list) and p and all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in p):
            return p
        raise BadRequest(f"prompt must be a string, a list of strings or token ids, got {type(p).__name__}", "prompt")

    def chat_prompt(body: dict) -> list[int]:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise BadRequest("messages must be a non-empty list of {role, content} objects", "messages")
        if not getattr(tok, "chat_template", None):
            raise BadRequest(f"model {name!r} has no chat template: use /v1/completions", "messages")
        try:
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except Exception as err:
            raise BadRequest(f"messages: the chat template failed: {err}", "messages") from None
        return encode(text)

    def usage_of(evs: list[dict]) -> dict:
        u = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        extra = {"forwards": 0, "backwards": 0, "steps": 0}
        for ev in evs:
            for k in u:
                u[k] += ev["usage"][k]
            for k in extra:
                extra[k] += ev["usage"]["tabes"][k]
        extra["batch"] = max(ev["usage"]["tabes"]["batch"] for ev in evs)
        return {**u, "tabes": extra}

    def first_error(evs: list[dict]) -> JSONResponse | None:
        for ev in evs:
            if ev["type"] == "error":
                kind = "timeout" if ev["status"] == 504 else "server_error"
                return JSONResponse(error_body(ev["message"], None, kind), status_code=ev["status"])
        return None

    async def sse(request: Request, job: Job, queue: asyncio.Queue, chunk, last, viewer: bool = False):
        """Server-sent events of one job: OpenAI chunks (``chunk(text)``, ``last(ev)``) or the viewer's."""
        try:
            if not viewer:  # an empty first chunk (the role, in chat) at once: the client sees the stream open
                yield f"data: {json.dumps(chunk(''))}\n\n"
            while True:
                ev = await queue.get()
                if ev["type"] == "error":
                    yield f"data: {json.dumps(error_body(ev['message'], None, 'server_error'))}\n\n"
                    break
                if viewer:
                    yield f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n"
                elif ev["type"] == "text":
                    yield f"data: {json.dumps(chunk(ev['text']))}\n\n"
                elif ev["type"] == "done":
                    for piece in last(ev):
                        yield f"data: {json.dumps(piece)}\n\n"
                if ev["type"] == "done":
                    break
            if not viewer:
                yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, err: BadRequest) -> JSONResponse:
        headers = {"Retry-After": "1"} if err.status == 429 else None
        kind = "invalid_request_error" if err.status < 429 else "server_busy"
        return JSONResponse(error_body(err.message, err.param, kind, err.code), status_code=err.status, headers=headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        log.error("request failed: %s: %s", type(err).__name__, err)
        return JSONResponse(error_body(f"internal error: {type(err).__name__}: {err}", None, "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": name, "load": engine.load}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tabes"}]}

    @app.get("/tabes/samplers")
    async def samplers() -> dict:
        return {"samplers": sorted(set(available()) - {"dfs"}), "default": d.sampler, "steps": d.steps, "max_tokens": d.gen_length}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text()

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompts = prompts_of(body)
        stop, stream = stops(body), bool(body.get("stream", False))
        sts = [settings(body, len(p)) for p in prompts]
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": name}
        if stream:
            if len(prompts) != 1:
                raise BadRequest("stream needs a single prompt", "prompt")
            job, q = start(prompts[0], sts[0], stop, True)
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

            def chunk(text: str) -> dict:
                return {**head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]}

            def last(ev: dict) -> list[dict]:
                out = [{**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": ev["finish_reason"]}]}]
                if include_usage:
                    out.append({**head, "choices": [], "usage": usage_of([ev])})
                return out

            return StreamingResponse(sse(request, job, q, chunk, last), media_type="text/event-stream")
        jobs = [start(p, st, stop, False) for p, st in zip(prompts, sts)]
        evs = await finish(request, jobs)
        if (err := first_error(evs)) is not None:
            return err
        choices = [{"index": i, "text": ev["text"], "logprobs": None, "finish_reason": ev["finish_reason"]} for i, ev in enumerate(evs)]
        return {**head, "choices": choices, "usage": usage_of(evs)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_body(request)
        ids = chat_prompt(body)
        st, stop, stream = settings(body, len(ids)), stops(body), bool(body.get("stream", False))
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "object": "chat.completion.chunk" if stream else "chat.completion", "created": created, "model": name}
        job, q = start(ids, st, stop, stream)
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            sent_role = [False]

            def chunk(text: str) -> dict:
                delta = {"content": text} if sent_role[0] else {"role": "assistant", "content": text}
                sent_role[0] = True
                return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}

            def last(ev: dict) -> list[dict]:
                out = [{**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": ev["finish_reason"]}]}]
                if include_usage:
                    out.append({**head, "choices": [], "usage": usage_of([ev])})
                return out

            return StreamingResponse(sse(request, job, q, chunk, last), media_type="text/event-stream")
        evs = await finish(request, [(job, q)])
        if (err := first_error(evs)) is not None:
            return err
        ev = evs[0]
        msg = {"role": "assistant", "content": ev["text"]}
        return {
            **head,
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": ev["finish_reason"]}],
            "usage": usage_of(evs),
        }

    @app.post("/tabes/denoise")
    async def denoise(request: Request):
        """The viewer's stream: ``prompt`` (or ``messages``) and the same fields as a completion."""
        body = await read_body(request)
        ids = chat_prompt(body) if "messages" in body else prompts_of(body)[0]
        st = settings(body, len(ids))
        job, q = start(ids, st, stops(body), True)
        return StreamingResponse(sse(request, job, q, None, None, viewer=True), media_type="text/event-stream")

    return app
