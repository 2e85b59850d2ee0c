"""The block KV cache (tabes.cache) on our MDM and on a Llama-style transformers model."""

from __future__ import annotations

import pytest
import torch

from tabes import generate
from tabes.cache import BlockCache
from tabes.models.mdm import MDM, MDMConfig

V, MASK, L = 12, 11, 24


def _mdm(layout: str = "sequence", seed: int = 0) -> MDM:
    torch.manual_seed(seed)
    if layout == "sudoku":  # the shipped layout: relation bias between query and key cells
        cfg = MDMConfig(d_model=32, n_layers=3, n_heads=4)
    else:
        cfg = MDMConfig(vocab_size=V, mask_id=MASK, seq_len=L, d_model=32, n_layers=3, n_heads=4, layout=layout)
    model = MDM(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # a random model far from uniform, so that positions matter
            p.normal_(0, 0.3)
    return model


def _llama(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    from tabes.models.hf import HFDenoiser

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return HFDenoiser(transformers.LlamaForCausalLM(cfg).double(), mask_id=MASK, bidirectional=True)


def _ids(B: int = 3, length: int = L, prompt: int = 6, seed: int = 1, mask: int = MASK) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, mask, (B, length), generator=g)
    ids[:, prompt:] = mask
    return ids


def _llada(seed: int = 0):
    from tabes.models.hf import HFDenoiser
    from tests.llada_double import LLaDAModelLM, llada_config

    torch.manual_seed(seed)
    return HFDenoiser(LLaDAModelLM(llada_config(vocab_size=V, n_kv_heads=2)).double(), mask_id=MASK)


MODELS = {"mdm": lambda: _mdm(), "mdm-sudoku": lambda: _mdm("sudoku"), "llama": lambda: _llama(), "llada": lambda: _llada()}


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("name", list(MODELS))
def test_cached_step_equals_uncached_when_nothing_changed(name, mode):
    """On a block's first step the cache holds exactly the keys and values of the current ids,
    so the cached logits at the query positions equal a full forward (float64)."""
    model = MODELS[name]()
    length = 81 if name == "mdm-sudoku" else L
    x = _ids(length=length, mask=model.mask_id)
    am = torch.ones_like(x, dtype=torch.bool)
    am[1, :2] = False  # left padding in one row (LLaDA's own attention ignores it, and so does its cache)
    cache = BlockCache(model, mode, length, (8, 16), x.shape[0])
    cache.fill(x, torch.arange(3), am)
    rows = torch.tensor([2, 0, 1])
    out = cache.logits(model.embed(x[rows]), rows, attention_mask=am[rows])
    ref = model.logits(x[rows], attention_mask=am[rows])
    hi = 16 if mode == "dual" else length
    torch.testing.assert_close(out[:, 8:hi], ref[:, 8:hi], rtol=0, atol=1e-10)
    # outside the query positions the refresh forward's logits are returned as constants
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["mdm", "llama", "llada"])
def test_cached_step_sees_the_block_change_but_not_the_context(name):
    """After tokens change inside the block, a cached step uses the new block and the stale
    context: it differs from a full forward on the new ids, and from the first step's logits."""
    model = MODELS[name]()
    x = _ids()
    cache = BlockCache(model, "dual", L, (8, 16), 3)
    cache.fill(x, torch.arange(3), None)
    y = x.clone()
    y[:, 8:10] = 3
    rows = torch.arange(3)
    out = cache.logits(model.embed(y), rows)
    assert not torch.allclose(out[:, 10:16], cache.logits(model.embed(x), rows)[:, 10:16])
    assert not torch.allclose(out[:, 10:16], model.logits(y)[:, 10:16])
    # the reference of the approximation: every layer's context keys/values from x, queries from y
    cache_y = BlockCache(model, "dual", L, (8, 16), 3)
    cache_y.fill(y, rows, None)
    assert not torch.allclose(cache_y.kv.keys[-1], cache.kv.keys[-1])  # the context's keys depend on the block


@pytest.mark.parametrize("name", ["mdm", "llama", "llada"])
@pytest.mark.parametrize("sampler", ["confidence", "boe"])
def test_decoding_with_a_cache_does_not_depend_on_the_batch(name, sampler):
    model = MODELS[name]()
    x = _ids(B=3)
    batch = generate(model, x, sampler=sampler, steps=8, block_length=6, cache="dual").sequences
    alone = torch.cat([generate(model, x[i : i + 1], sampler=sampler, steps=8, block_length=6, cache="dual").sequences for i in range(3)])
    assert torch.equal(batch, alone)
    assert not (batch == MASK).any()


def test_the_cache_is_refreshed_at_every_block_start(monkeypatch):
    model = _mdm()
    fills: list[tuple[int, torch.Tensor]] = []
    original = BlockCache.fill

    def spy(self, x, rows, attention_mask):
        fills.append((self.lo, x.clone()))
        original(self, x, rows, attention_mask)

    monkeypatch.setattr(BlockCache, "fill", spy)
    x = _ids(B=2)
    out = generate(model, x, sampler="confidence", steps=9, block_length=6, cache="prefix")
    assert [lo for lo, _ in fills] == [6, 12, 18]  # one refresh per block, at its first position
    for lo, seen in fills:  # each refresh sees the ids decoded so far: earlier blocks done, later ones masked
        assert not (seen[:, :lo] == MASK).any() and (seen[:, lo:] == MASK).all()
        assert torch.equal(seen[:, :lo], out.sequences[:, :lo])


def test_first_block_step_matches_the_uncached_decode_and_a_wrong_cache_does_not():
    """One step per block with block length 1 commits exactly what the uncached loop commits
    (each step is a block's first); a cache filled with stale ids breaks it."""
    model = _mdm()
    x = _ids(B=2)
    ref = generate(model, x, sampler="confidence", steps=18, block_length=1).sequences
    for mode in ("prefix", "dual"):
        assert torch.equal(generate(model, x, sampler="confidence", steps=18, block_length=1, cache=mode).sequences, ref)


def test_gradients_flow_into_no_cached_tensor():
    model = _mdm()
    x = _ids(B=2)
    cache = BlockCache(model, "dual", L, (8, 16), 2)
    cache.fill(x, torch.arange(2), None)
    assert all(not t.requires_grad for t in cache.kv.keys + cache.kv.values + [cache.stale])
    emb = model.embed(x).detach().requires_grad_(True)
    active = torch.zeros(2, L, dtype=torch.bool)
    active[:, 8:16] = True
    out = cache.logits(emb, torch.arange(2), active=active)
    out[:, 8:16].logsumexp(-1).sum().backward()
    assert emb.grad[:, 8:16].abs().sum() > 0
    assert emb.grad[:, :8].abs().sum() == 0 and emb.grad[:, 16:].abs().sum() == 0  # the context is constant
    assert all(not t.requires_grad and t.grad is None for t in cache.kv.keys + cache.kv.values)


def test_boe_through_the_cache_counts_its_passes_and_keeps_parameters_clean():
    model = _mdm()
    x = _ids(B=2)
    out = generate(model, x, sampler="boe", steps=6, block_length=6, cache="dual")
    assert not (out.sequences == MASK).any()
    assert (out.backwards > 0).all()
    assert all(p.grad is None for p in model.parameters())
    # 3 blocks: one refresh forward each, which also serves the block's first step (Fast-dLLM)
    plain = generate(model, x, sampler="boe", steps=6, block_length=6)
    assert torch.equal(out.forwards, plain.forwards)


def test_cache_errors_name_the_problem():
    model = _mdm()
    with pytest.raises(ValueError, match="cache must be one of"):
        generate(model, _ids(), sampler="confidence", steps=4, cache="kv")
    from tests.conftest import StubDenoiser

    stub = StubDenoiser(V, lambda logits: None)  # mask id V - 1 = MASK
    with pytest.raises(ValueError, match="no KV cache support"):
        generate(stub, _ids(), sampler="confidence", steps=4, cache="prefix")


@pytest.mark.parametrize("aqa_mode", ["kv", "exact"])
def test_cache_fidelity_is_perfect_without_context_and_measured_with_it(aqa_mode):
    """Without context the cached TIS is the uncached TIS, under each AQA mode's own definition."""
    from tabes.bench.fidelity import cache_fidelity

    model = _mdm()
    model.config.aqa_mode = aqa_mode
    everything = torch.full((2, L), MASK)  # one block, no position outside it: the cache holds nothing
    row = cache_fidelity(model, everything, steps=12, block_length=None, cache="dual")
    assert row["n_steps"] > 0 and row["spearman"] == 1.0 and row["same_commit"] == 1.0
    row = cache_fidelity(model, _ids(B=2), steps=18, block_length=6, cache="dual")
    assert row["n_steps"] > 0 and row["spearman"] < 1.0


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_masked_lms_use_the_cache_where_their_attention_reaches_the_registry(arch):
    """transformers 5 routes BERT and ModernBERT attention through the registry: the cache is
    exact on a block's first step. Under 4.x they refuse with a one-line error naming why."""
    transformers = pytest.importorskip("transformers")
    from tabes.models.hf import HFDenoiser

    torch.manual_seed(0)
    common = dict(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64
    )
    if arch == "bert":
        net = transformers.BertForMaskedLM(transformers.BertConfig(**common))
    else:
        ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
        net = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**common, **ids, global_attn_every_n_layers=1))
    model = HFDenoiser(net.double(), mask_id=MASK)
    x = _ids()
    if not model.routes_attention:
        with pytest.raises(ValueError, match="AttentionInterface"):
            generate(model, x, sampler="confidence", steps=6, block_length=6, cache="dual")
        return
    cache = BlockCache(model, "dual", L, (8, 16), 3)
    cache.fill(x, torch.arange(3), None)
    out = cache.logits(model.embed(x), torch.arange(3))
    torch.testing.assert_close(out[:, 8:16], model.logits(x)[:, 8:16], rtol=0, atol=1e-10)


def test_sliding_window_models_refuse_the_cache():
    transformers = pytest.importorskip("transformers")
    from tabes.models.hf import HFDenoiser

    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    cfg = transformers.ModernBertConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, **ids
    )
    model = HFDenoiser(transformers.ModernBertForMaskedLM(cfg), mask_id=MASK)  # layers 1 and 2 attend within a window
    with pytest.raises(ValueError, match="sliding-window"):
        generate(model, _ids(), sampler="confidence", steps=6, block_length=6, cache="prefix")


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_decoding_makes_every_tensor_on_the_inputs_device(mode):
    """With the default device set to 'meta', a tensor made without ``device=`` lands on meta
    and the first operation mixing it with the CPU model fails."""
    model = _mdm()
    x = _ids(B=2)
    with torch.device("meta"):
        out = generate(model, x, sampler="boe", steps=6, block_length=6, cache=mode)
    assert out.sequences.device.type == "cpu" and not (out.sequences == MASK).any()
