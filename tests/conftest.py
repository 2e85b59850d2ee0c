"""Shared fixtures: tiny random-initialised models and a few real-format puzzles."""

from __future__ import annotations

import os

import pytest
import torch

from tabes.models.mdm import MDM, MDMConfig
from tabes.tasks import sudoku

# tests never reach a model or dataset hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# two puzzles from the public domain examples (Wikipedia's, and a 17-clue one)
PUZZLES = [
    "530070000600195000098000060800060003400803001700020006060000280000419005000080079",
    "000000010400000000020000000000050407008000300001090000300400200050100000000806000",
]


@pytest.fixture(scope="session")
def tiny_sudoku_model() -> MDM:
    torch.manual_seed(0)
    return MDM(MDMConfig(d_model=32, n_layers=2, n_heads=2)).eval()


@pytest.fixture(scope="session")
def tiny_seq_model() -> MDM:
    torch.manual_seed(1)
    return MDM(MDMConfig(vocab_size=13, mask_id=12, seq_len=24, d_model=32, n_layers=2, n_heads=2, layout="sequence")).eval()


@pytest.fixture()
def sudoku_ids() -> torch.Tensor:
    """(3, 81) ids: two puzzles and a fully masked grid."""
    rows = [sudoku.to_ids(sudoku.parse_puzzle(p)) for p in PUZZLES] + [[sudoku.MASK_ID] * 81]
    return torch.tensor(rows, dtype=torch.long)


class StubDenoiser:
    """A denoiser whose logits ignore the input: one-hot embeddings, ``fill(logits)`` writes the
    (B, L, V) logits in place (they start at zero). The mask id is the last token."""

    def __init__(self, vocab_size: int, fill) -> None:
        self.vocab_size, self.mask_id, self.fill = vocab_size, vocab_size - 1, fill

    def embed(self, ids):
        return torch.nn.functional.one_hot(ids, self.vocab_size).float()

    def token_embeddings(self):
        return torch.eye(self.vocab_size)

    def logits_from_embeds(self, embeds, *, attention_mask=None, active=None, grad_rows=None):
        logits = torch.zeros(embeds.shape[0], embeds.shape[1], self.vocab_size)
        self.fill(logits)
        return logits

    def logits(self, ids, *, attention_mask=None):
        return self.logits_from_embeds(self.embed(ids))


@pytest.fixture(params=["kept", "fused", "recomputed"])
def probs_path(request):
    """Run a test through every ActiveQueryAttention backward: P kept from the forward (small
    problems), the fused kernel on the active rows, and P recomputed from the log-sum-exp
    (large problems)."""
    from tabes.ops.aqa import kernels

    with kernels(keep_probs_max=1 << 40 if request.param == "kept" else 0, fused_backward=request.param == "fused"):
        yield request.param


@pytest.fixture()
def model_dir(tmp_path, tiny_sudoku_model) -> str:
    """A folder holding the tiny Sudoku model, for the command line's --model."""
    tiny_sudoku_model.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


@pytest.fixture(scope="session")
def model_dir_session(tmp_path_factory, tiny_sudoku_model) -> str:
    """Like ``model_dir``, once per session (for property-based tests)."""
    path = tmp_path_factory.mktemp("model")
    tiny_sudoku_model.save_pretrained(path)
    return str(path)
