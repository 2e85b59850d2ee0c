"""lm-evaluation-harness's ``local-completions`` model type against a live ``tabes serve``: every response
must equal the one ``--model tabes`` gives with the same settings, on the shipped ``tabes_text_demo``."""

from __future__ import annotations

import pytest

try:  # the harness and its datasets stack (the eval extra); under transformers 4.x today's datasets cannot import
    import lm_eval
    from lm_eval.tasks import TaskManager
except ImportError as err:
    pytest.skip(f"needs lm-eval importable (the eval extra): {err}", allow_module_level=True)
pytest.importorskip("tenacity", reason="lm-eval's API models need lm-eval[api] (the eval extra)")

from tabes.integrations.lm_eval import TASKS_DIR  # noqa: E402  (also registers the tabes model type)

LIMIT = 6


def _run(model: str, model_args: str) -> tuple[float, list[str]]:
    res = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=["tabes_text_demo"],
        limit=LIMIT,
        log_samples=True,
        task_manager=TaskManager(include_path=str(TASKS_DIR)),
    )
    samples = sorted(res["samples"]["tabes_text_demo"], key=lambda s: s["doc_id"])
    return res["results"]["tabes_text_demo"]["exact_match,strict-match"], [s["resps"][0][0] for s in samples]


def test_local_completions_scores_what_the_tabes_model_scores(server):
    url = server.url + "/v1/completions"
    remote = _run("local-completions", f"model=text-demo,base_url={url},tokenizer_backend=None,tokenized_requests=False,num_concurrent=4")
    local = _run("tabes", "pretrained=text-demo,steps=64,gen_length=64")
    assert len(remote[1]) == LIMIT
    assert remote[1] == local[1]  # response for response
    assert remote[0] == local[0]
