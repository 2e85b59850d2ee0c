"""``tabes bench peers`` on a tiny model: the rows' keys, and the same tokens as diffusers' pipeline."""

from __future__ import annotations

import pytest
import torch

try:  # diffusers 0.42 cannot import beside transformers 4.x (they need different huggingface-hub majors)
    import diffusers  # noqa: F401
except ImportError as err:
    pytest.skip(f"needs diffusers importable (the dev extra, with transformers 5): {err}", allow_module_level=True)

from tabes.bench.peers import _llada2_rows, _random_bert  # noqa: E402

KEYS = {"model", "reference", "setting", "identical", "tabes_s_per_token", "reference_s_per_token", "ratio"}


def test_rows_have_the_keys_and_identical_tokens():
    prompts = torch.randint(5, 99, (2, 10), generator=torch.Generator().manual_seed(0))
    rows = _llada2_rows("tiny", _random_bert(vocab=100, mask_id=99), 99, 3, prompts, gen=16, repeats=1)
    assert len(rows) == 3
    for r in rows:
        assert set(r) >= KEYS and r["identical"] is True
        assert r["tabes_s_per_token"] > 0 and r["reference_s_per_token"] > 0
        assert 0 <= r["tabes_loop_s_per_token"] <= r["tabes_s_per_token"]


def test_diffusion_gemma_rows_give_model_generates_tokens():
    pytest.importorskip("transformers.models.diffusion_gemma", reason="this transformers ships no DiffusionGemma")
    from tabes.bench.peers import _diffusion_gemma_rows

    native, boe = _diffusion_gemma_rows(2, repeats=1, gen=32)
    assert set(native) >= KEYS and native["identical"] is True and native["reference"].startswith("transformers")
    assert boe["identical"] is None and boe["tabes_s_per_token"] > 0  # BoE's cost beside the model's own rule
