from __future__ import annotations

import pytest
import torch

import tabes
from tabes.models.mdm import MDM, MDMConfig
from tabes.protocol import Denoiser


def test_protocol_and_shapes(tiny_sudoku_model, sudoku_ids):
    m = tiny_sudoku_model
    assert isinstance(m, Denoiser)
    e = m.embed(sudoku_ids)
    assert e.shape == (3, 81, 32)
    assert torch.equal(e, m.token_embeddings()[sudoku_ids])
    logits = m.logits_from_embeds(e)
    assert logits.shape == (3, 81, 10)
    torch.testing.assert_close(logits, m.logits(sudoku_ids))


def test_attention_mask_hides_padding(tiny_seq_model):
    ids = torch.randint(0, 12, (1, 10))
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 7:] = False
    a = tiny_seq_model.logits(ids, attention_mask=mask)
    ids2 = ids.clone()
    ids2[0, 7:] = 3  # change only padded tokens
    b = tiny_seq_model.logits(ids2, attention_mask=mask)
    torch.testing.assert_close(a[0, :7], b[0, :7])


def test_save_load_round_trip(tmp_path, tiny_sudoku_model, sudoku_ids):
    tiny_sudoku_model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = tabes.load(tmp_path / "m")
    assert loaded.config == tiny_sudoku_model.config
    torch.testing.assert_close(loaded.logits(sudoku_ids), tiny_sudoku_model.logits(sudoku_ids), rtol=0, atol=0)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        tabes.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        tabes.load(tmp_path / "empty")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"d_model": 30, "n_heads": 4}, "divisible"), ({"mask_id": 10}, "mask_id"), ({"layout": "grid"}, "layout"), ({"seq_len": 80}, "grid")],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MDMConfig(**kwargs)


def test_shipped_model_loads():
    model = tabes.load()
    assert isinstance(model, MDM) and model.vocab_size == 10 and model.mask_id == 9
