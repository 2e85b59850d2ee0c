"""``tabes bench serve``: concurrent clients against a live ``tabes serve``, and the same requests one at a time.

One run: a server is started on 127.0.0.1 (or ``url`` is used), warmed with one request, then
``clients`` threads send ``requests`` completions each, all at once; then the same requests are sent
one at a time. Each request is a word problem from the shipped ``tabes_text_demo`` task (or any
prompts given), decoded at temperature 0, so every concurrent answer must equal its serial twin.
Every request asks for ``block_length`` and ``cache`` (the command's defaults: 16 and the dual
cache, as Fast-dLLM serves LLaDA; ``docs/serve.md`` has both that and the uncached loop).

Row keys: ``clients``, ``requests``, ``answered``, ``lost`` (no 200 answer), ``duplicated`` (a
completion id seen twice), ``p50_s``, ``p95_s`` (latency of the concurrent requests), ``requests_per_s``,
``tokens_per_s`` (completion tokens), ``serial_requests_per_s``, ``serial_p50_s``, ``speedup``
(requests_per_s / serial_requests_per_s), ``identical``, ``mean_batch`` (the server's batch sizes),
``max_tokens``, ``steps``, ``sampler``, ``block_length``, ``cache``, ``cpu``, ``threads``.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tabes.bench.search import percentile
from tabes.hardware import cpu_info


def _post(url: str, body: dict, timeout: float) -> tuple[int, dict, float]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.perf_counter() - start
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), time.perf_counter() - start
    except OSError as err:  # refused, reset, timed out: lost
        return 0, {"error": {"message": str(err)}}, time.perf_counter() - start


def shipped_prompts() -> list[str]:
    """The word problems of the shipped lm-eval task, as its prompts."""
    import tabes.integrations

    path = Path(tabes.integrations.__file__).with_name("lm_eval_tasks") / "tabes_text_demo" / "test.jsonl"
    return [f"Question: {json.loads(line)['question']}\nAnswer:" for line in path.read_text().splitlines() if line.strip()]


def run_serve_bench(
    *,
    clients: int = 16,
    requests: int = 2,
    max_tokens: int = 64,
    steps: int = 64,
    sampler: str = "confidence",
    block_length: int | None = None,
    cache: str = "none",
    model: str = "text-demo",
    url: str | None = None,
    prompts: list[str] | None = None,
    server_args: list[str] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """One row of the module docstring; starts (and stops) a server unless ``url`` is given."""
    from tabes.serve.process import LiveServer

    if clients < 1 or requests < 1:
        raise ValueError(f"clients and requests must be >= 1, got {clients} and {requests}")
    srv = None
    if url is None:
        srv = LiveServer("--model", model, *(server_args or []))
        url = srv.url
    try:
        pool = prompts or shipped_prompts()
        n = clients * requests
        extra = {"cache": cache} | ({} if block_length is None else {"block_length": block_length})
        bodies = [
            {"prompt": pool[i % len(pool)], "max_tokens": max_tokens, "steps": steps, "sampler": sampler, "seed": 0, **extra}
            for i in range(n)
        ]
        endpoint = url.rstrip("/") + "/v1/completions"
        _post(endpoint, bodies[0], timeout)  # warm-up: first-call costs are not the server's steady state
        results: list[tuple[int, dict, float] | None] = [None] * n

        def client(c: int) -> None:
            for k in range(requests):
                i = c * requests + k
                results[i] = _post(endpoint, bodies[i], timeout)

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        start = time.perf_counter()
        serial = [_post(endpoint, b, timeout) for b in bodies]
        serial_wall = time.perf_counter() - start
    finally:
        if srv is not None:
            srv.stop()
    ok = [r for r in results if r is not None and r[0] == 200]
    ids = [r[1]["id"] for r in ok]
    text = lambda r: r[1]["choices"][0]["text"] if r is not None and r[0] == 200 else None
    identical = all(text(a) is not None and text(a) == text(b) for a, b in zip(results, serial))
    lat = [r[2] for r in ok]
    tokens = sum(r[1]["usage"]["completion_tokens"] for r in ok)
    batches = [r[1]["usage"]["tabes"]["batch"] for r in ok]
    rps, srps = len(ok) / wall, sum(r[0] == 200 for r in serial) / serial_wall
    import torch

    return {
        "clients": clients,
        "requests": n,
        "answered": len(ok),
        "lost": n - len(ok),
        "duplicated": len(ids) - len(set(ids)),
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p95_s": round(percentile(lat, 0.95), 3) if lat else None,
        "requests_per_s": round(rps, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "serial_requests_per_s": round(srps, 3),
        "serial_p50_s": round(statistics.median(r[2] for r in serial), 3),
        "speedup": round(rps / srps, 2) if srps else None,
        "identical": identical,
        "mean_batch": round(sum(batches) / len(batches), 2) if batches else None,
        "max_tokens": max_tokens,
        "steps": steps,
        "sampler": sampler,
        "block_length": block_length,
        "cache": cache,
        "cpu": cpu_info().describe(),
        "threads": torch.get_num_threads(),
    }
