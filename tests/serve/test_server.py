"""``tabes serve`` as a user runs it: a live process on 127.0.0.1, driven by real clients (the official
``openai`` client, plain HTTP, lm-eval's ``local-completions``), checked against ``tabes generate``."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai", reason="needs the dev extra: pip install -e '.[dev]'")

from tabes.serve.process import LiveServer  # noqa: E402
from tabes.tasks.text import generate_text  # noqa: E402
from tests.serve.conftest import GEN  # noqa: E402

QUESTIONS = [
    "Leo has 56 stickers. He loses 6. Sam gives Leo 4 more. How many stickers does Leo have now?",
    "Mia has 12 shells. She finds 9 more. How many shells does Mia have now?",
    "Ben has 30 marbles. He gives away 7. How many marbles does Ben have now?",
    "Ava has 8 pens. She buys 5 more. She loses 2. How many pens does Ava have now?",
]
PROMPTS = [f"Question: {q}\nAnswer:" for q in QUESTIONS]


@pytest.fixture(scope="module")
def model(text_demo):
    return text_demo


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def reference(model, prompt: str, sampler: str = "confidence", gen: int = GEN, steps: int = GEN) -> str:
    return generate_text(model, [prompt], gen_length=gen, steps=steps, sampler=sampler, seed=0).texts[0]


def post(url: str, body: bytes | dict, timeout: float = 60) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), {k.lower(): v for k, v in err.headers.items()}


def health(srv) -> dict:
    with urllib.request.urlopen(srv.url + "/health", timeout=10) as r:
        return json.loads(r.read())


def test_completion_equals_tabes_generate(client, model):
    got = client.completions.create(model="text-demo", prompt=PROMPTS[0], max_tokens=GEN, seed=0, extra_body={"sampler": "confidence"})
    assert got.choices[0].text == reference(model, PROMPTS[0])
    assert got.usage.completion_tokens >= 1 and got.usage.prompt_tokens > 10
    extra = got.usage.model_extra["tabes"]
    assert extra["forwards"] == GEN and extra["backwards"] == 0


def test_sampler_and_steps_from_extra_body(client, model):
    got = client.completions.create(model="text-demo", prompt=PROMPTS[1], max_tokens=GEN, extra_body={"sampler": "boe", "steps": 12})
    assert got.choices[0].text == reference(model, PROMPTS[1], sampler="boe", steps=12)
    assert got.usage.model_extra["tabes"]["backwards"] > 0


def test_chat_uses_the_chat_template(client, model):
    got = client.chat.completions.create(model="text-demo", messages=[{"role": "user", "content": QUESTIONS[2]}], max_tokens=GEN)
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == reference(model, PROMPTS[2])


def test_stream_chunks_add_up_to_the_completion(client):
    whole = client.completions.create(model="text-demo", prompt=PROMPTS[3], max_tokens=GEN).choices[0].text
    chunks = list(client.completions.create(model="text-demo", prompt=PROMPTS[3], max_tokens=GEN, stream=True))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert sum(bool(t) for t in texts) >= 2, texts  # the text arrives in pieces as the canvas fills
    assert "".join(texts) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    chat = list(
        client.chat.completions.create(model="text-demo", messages=[{"role": "user", "content": QUESTIONS[3]}], max_tokens=GEN, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices) == whole


def test_stop_sequences_cut_the_text(client, model):
    full = reference(model, PROMPTS[0])
    stop = full.split()[1]  # the second word
    got = client.completions.create(model="text-demo", prompt=PROMPTS[0], max_tokens=GEN, stop=[stop])
    assert got.choices[0].text == full[: full.index(stop)] and got.choices[0].finish_reason == "stop"


def test_concurrent_requests_are_batched_and_equal_their_solo_answers(server, model):
    """Sixteen requests at once: all answered, decoded in batches, each equal to its decode alone."""
    prompts = [PROMPTS[i % 4].replace("has", f"has {i}") if i >= 4 else PROMPTS[i] for i in range(16)]
    out: dict[int, tuple] = {}

    def ask(i: int) -> None:
        out[i] = post(server.url + "/v1/completions", {"prompt": prompts[i], "max_tokens": GEN, "seed": 0})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(out) == list(range(16))
    assert all(code == 200 for code, _, _ in out.values())
    assert max(body["usage"]["tabes"]["batch"] for _, body, _ in out.values()) > 1, "nothing was batched"
    for i, (_, body, _) in out.items():
        assert body["choices"][0]["text"] == reference(model, prompts[i]), f"request {i} changed in its batch"


def test_bad_input_gets_a_4xx_naming_the_field(server):
    cases = [
        (b"{not json", None),
        ({"prompt": "x", "sampler": "nonsense"}, "sampler"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "max_tokens": 100000}, "max_tokens"),
        ({"prompt": "x", "temperature": -1}, "temperature"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "model": "gpt-4"}, "model"),
        ({"prompt": "x", "sampler": "dfs"}, "sampler"),
    ]
    for body, param in cases:
        code, err, _ = post(server.url + "/v1/completions", body)
        assert 400 <= code < 500, (body, code, err)
        assert err["error"]["param"] == param and err["error"]["message"], err
        if param:
            assert param in err["error"]["message"], err
    # and the server still answers
    code, body, _ = post(server.url + "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 4})
    assert code == 200 and body["choices"][0]["text"] is not None


def test_models_health_and_the_page(server):
    with urllib.request.urlopen(server.url + "/v1/models") as r:
        assert [m["id"] for m in json.loads(r.read())["data"]] == ["text-demo"]
    with urllib.request.urlopen(server.url + "/health") as r:
        assert json.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen(server.url + "/") as r:
        page = r.read().decode()
    assert "/tabes/denoise" in page and '<select id="sampler">' in page


def test_viewer_stream_has_every_steps_commits_and_boe_tis(server, model):
    req = urllib.request.Request(
        server.url + "/tabes/denoise",
        data=json.dumps({"prompt": PROMPTS[1], "max_tokens": 8, "steps": 4, "sampler": "boe"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    events = []
    with urllib.request.urlopen(req, timeout=60) as r:
        for block in r.read().decode().split("\n\n"):
            data = [ln[6:] for ln in block.splitlines() if ln.startswith("data: ")]
            if data:
                events.append(json.loads(data[0]))
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [0, 1, 2, 3]
    assert sorted(p for e in steps for p in e["positions"]) == list(range(8))  # each position committed once
    assert all(len(e["tis"]["values"]) == len(e["tis"]["positions"]) > 0 for e in steps[:-1])
    assert events[-1]["type"] == "done"
    assert events[-1]["text"] == reference(model, PROMPTS[1], sampler="boe", gen=8, steps=4)


def test_queue_limit_timeout_disconnect_and_sigterm():
    """A server with a queue of 2 and a 3-second timeout: a third request gets 429 with Retry-After; a long
    request ends with a 504 while a short one beside it is answered; a client that leaves frees its row;
    SIGTERM lets the request in flight finish and exits cleanly."""
    srv = LiveServer("--model", "text-demo", "--max-queue", "2", "--request-timeout", "3", "--batch-window-ms", "0")
    try:
        slow = {"prompt": PROMPTS[0], "max_tokens": 96, "steps": 96, "sampler": "lookahead:k=8"}  # about 9 s alone
        out: dict[str, tuple] = {}
        t_slow = threading.Thread(target=lambda: out.__setitem__("slow", post(srv.url + "/v1/completions", slow)))
        t_slow.start()
        time.sleep(0.5)
        t_short = threading.Thread(
            target=lambda: out.__setitem__("short", post(srv.url + "/v1/completions", {"prompt": PROMPTS[1], "max_tokens": 8}))
        )
        t_short.start()
        time.sleep(0.2)
        code, err, headers = post(srv.url + "/v1/completions", {"prompt": PROMPTS[2], "max_tokens": 8})
        assert code == 429 and "retry-after" in headers and err["error"]["code"] == "queue_full", (code, err)
        t_slow.join(60)
        t_short.join(60)
        assert out["slow"][0] == 504 and "timed out" in out["slow"][1]["error"]["message"], out["slow"]
        assert out["short"][0] == 200, out["short"]

        # a streaming client that leaves after its first chunk: its row is freed long before the decode would end
        body = json.dumps({**slow, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            got = b""
            while b"data:" not in got:
                got += s.recv(4096)
        left = time.monotonic()
        while time.monotonic() - left < 8 and health(srv)["load"]:
            time.sleep(0.05)
        assert time.monotonic() - left < 1.5, "the row of a client that left kept decoding"

        # SIGTERM with a request in flight: it is answered, then the process exits 0
        t = threading.Thread(
            target=lambda: out.__setitem__("last", post(srv.url + "/v1/completions", {"prompt": PROMPTS[3], "max_tokens": 48, "steps": 48}))
        )
        t.start()
        time.sleep(0.4)
        assert srv.stop() == 0
        t.join(30)
        assert out["last"][0] == 200 and out["last"][1]["choices"][0]["text"] is not None
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def test_llada2_blocks_over_the_api_equal_generate_text(client, model):
    """``blocks: "llada2"`` with the ``llada2`` sampler: the tokens of ``generate_text(..., blocks="llada2")``."""
    extra = {"sampler": "llada2", "blocks": "llada2", "block_length": 16, "steps": 24}
    got = client.completions.create(model="text-demo", prompt=PROMPTS[2], max_tokens=GEN, extra_body=extra)
    want = generate_text(model, [PROMPTS[2]], gen_length=GEN, steps=24, block_length=16, sampler="llada2", blocks="llada2").texts[0]
    assert got.choices[0].text == want
