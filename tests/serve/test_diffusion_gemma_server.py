"""``tabes serve`` with a DiffusionGemma folder: the official client's completion with ``native`` is
``model.generate()``'s text, and a masked-loop sampler answers too."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers.models.diffusion_gemma", reason="this transformers ships no DiffusionGemma")
openai = pytest.importorskip("openai")

from tabes.serve.process import LiveServer  # noqa: E402
from tests.diffusion_gemma_tiny import save_folder, tokenizer  # noqa: E402


def test_native_completion_over_the_api_is_model_generates_text(tmp_path):
    from transformers import DiffusionGemmaForBlockDiffusion

    folder = save_folder(tmp_path / "dg")
    srv = LiveServer("--model", str(folder), "--steps", "16", "--gen-length", "16")
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        m = DiffusionGemmaForBlockDiffusion.from_pretrained(folder).eval()
        tok = tokenizer()
        for prompt, seed in [("w5 w6 w7", 0), ("w9 w10", 2)]:
            got = client.completions.create(model="dg", prompt=prompt, max_tokens=12, seed=seed, extra_body={"sampler": "native"})
            ids = tok(prompt, return_tensors="pt").input_ids
            torch.manual_seed(seed)
            ref = m.generate(ids, max_new_tokens=12).sequences
            assert got.choices[0].text == tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
        other = client.completions.create(model="dg", prompt="w5 w6 w7", max_tokens=8, extra_body={"sampler": "confidence"})
        assert other.model_dump()["usage"]["tabes"]["forwards"] >= 8  # the masked loop ran: one canvas, 8 steps
        with pytest.raises(openai.BadRequestError, match="canvas_length"):
            client.completions.create(model="dg", prompt="w5", max_tokens=8, extra_body={"block_length": 4})
    finally:
        code = srv.stop()
    log = srv.log()
    assert code == 0 and "Traceback" not in log, log
