"""transformers adapters on tiny random models built here (no downloads)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers

import tabes
from tabes import generate
from tabes.models.hf import HFDenoiser
from tabes.protocol import predict
from tabes.samplers.base import top_k_mask
from tabes.samplers.boe import token_influence
from tests.conftest import StubDenoiser

V, MASK = 50, 49


def _llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg)


def _bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64
    )
    return transformers.BertForMaskedLM(cfg)


def _modernbert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.ModernBertConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
    )
    return transformers.ModernBertForMaskedLM(cfg)


def _ids(B=2, L=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, MASK, (B, L), generator=g)
    ids[:, 4:] = MASK
    return ids


@pytest.mark.parametrize("build", [_bert, _modernbert, _llama])
def test_boe_runs_on_each_architecture(build):
    model = HFDenoiser(build(), mask_id=MASK, bidirectional=build is _llama)
    out = generate(model, _ids(), sampler="boe", steps=4)
    assert not (out.sequences == MASK).any() and (out.backwards > 0).all()
    assert all(p.grad is None for p in model.model.parameters())


@pytest.mark.parametrize("build", [_bert, _modernbert, _llama])
def test_routed_attention_keeps_the_padding_mask(build):
    """After the switch to ``tabes_aqa`` (BoE's first backward), a left-padded batch must give the logits it
    gave before: transformers builds no mask for a custom attention unless one is registered for it."""
    model = HFDenoiser(build().double(), mask_id=MASK, bidirectional=build is _llama)
    ids = _ids(B=3)
    am = torch.ones_like(ids, dtype=torch.bool)
    am[1, :3] = am[2, :1] = False  # left padding
    before = model.logits(ids, attention_mask=am)
    routed = model.routes_attention  # the switch (masked LMs reach the registry from transformers 5 on)
    after = model.logits(ids, attention_mask=am)
    torch.testing.assert_close(after[am], before[am], atol=1e-9, rtol=1e-9)
    assert routed or int(transformers.__version__.split(".")[0]) < 5


def test_llama_stand_in_is_bidirectional_and_routes_aqa():
    model = HFDenoiser(_llama(), mask_id=MASK, bidirectional=True)
    assert model.routes_attention
    ids = _ids()
    ids2 = ids.clone()
    ids2[0, 11] = 5 if ids[0, 11] != 5 else 6
    assert (model.logits(ids2)[0, 0] - model.logits(ids)[0, 0]).abs().max() > 0  # a later token changes position 0


def _tis(model, active):
    ids = _ids()
    masked = ids == MASK
    with torch.no_grad():
        pred = predict(model, ids, where=masked)
    cand = top_k_mask(pred.confidence, masked, torch.tensor([3, 3]))
    return token_influence(model, ids, pred.probs, cand, masked & ~cand, tau=0.5, active=active)[0]


def test_registry_aqa_gradients_equal_the_reference():
    exact = HFDenoiser(_llama(), mask_id=MASK, bidirectional=True, aqa_mode="exact")
    ref = HFDenoiser(_llama(), mask_id=MASK, bidirectional=True, aqa_mode="reference")
    for active in ("candidates", "candidates+probes"):
        torch.testing.assert_close(_tis(exact, active), _tis(ref, active), atol=1e-5, rtol=1e-4)
    assert (_tis(exact, "candidates") - _tis(exact, "dense")).abs().max() > 1e-6  # AQA really changes the backward


def _llada(aqa_mode="exact", seed=0):
    from tests.llada_double import LLaDAModelLM, llada_config

    torch.manual_seed(seed)
    return HFDenoiser(LLaDAModelLM(llada_config(vocab_size=V, n_kv_heads=2)).double(), mask_id=MASK, aqa_mode=aqa_mode)


def test_llada_layout_gets_aqa_through_its_blocks():
    """LLaDA's remote code calls attention inside its own blocks, past transformers' registry:
    the adapter patches each block's attention method, and the gradients equal the reference."""
    exact, ref = _llada("exact"), _llada("reference")
    plain = _tis(_llada(), "dense")  # before any switch: the model's own attention
    assert exact.routes_attention and ref.routes_attention
    for active in ("candidates", "candidates+probes"):
        torch.testing.assert_close(_tis(exact, active), _tis(ref, active), atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(_tis(exact, "dense"), plain, atol=1e-10, rtol=1e-8)  # same forward and dense backward as LLaDA's own
    assert (_tis(exact, "candidates") - plain).abs().max() > 1e-6  # AQA really changes the backward
    with torch.no_grad():  # a later token changes position 0: bidirectional, as LLaDA is
        ids = _ids()
        ids2 = ids.clone()
        ids2[0, 11] = 5 if ids[0, 11] != 5 else 6
        assert (exact.logits(ids2)[0, 0] - exact.logits(ids)[0, 0]).abs().max() > 0


def test_model_without_registry_falls_back_to_dense_with_one_warning(caplog):
    bert = _bert()

    def refuse(*args, **kwargs):  # what transformers 4.x BERT does; 5.x BERT routes through the registry
        raise ValueError("BertForMaskedLM does not support setting its attention implementation dynamically")

    bert.set_attn_implementation = refuse
    model = HFDenoiser(bert, mask_id=MASK)
    assert not model.routes_attention
    with caplog.at_level(logging.WARNING, logger="tabes.models.hf"):
        a = _tis(model, "candidates")
        b = _tis(model, "candidates")
    assert sum("dense backward" in r.message for r in caplog.records) == 1
    torch.testing.assert_close(a, _tis(model, "dense"))
    torch.testing.assert_close(a, b)


def test_dream_shift_maps_logits_and_gradients():
    base = _llama()
    plain = HFDenoiser(base, mask_id=MASK, bidirectional=True)
    dream = HFDenoiser(base, mask_id=MASK, bidirectional=True, logit_shift=1)
    e = plain.embed(_ids()).detach().requires_grad_(True)
    raw = plain.logits_from_embeds(e)
    shifted = dream.logits_from_embeds(e)
    torch.testing.assert_close(shifted[:, 1:], raw[:, :-1])
    torch.testing.assert_close(shifted[:, 0], raw[:, 0])
    # the gradient of position i's prediction equals the raw model's gradient at i - 1
    (g_dream,) = torch.autograd.grad(shifted[:, 5].logsumexp(-1).sum(), e, retain_graph=True)
    (g_raw,) = torch.autograd.grad(raw[:, 4].logsumexp(-1).sum(), e)
    torch.testing.assert_close(g_dream, g_raw)


def test_load_local_checkpoints(tmp_path):
    _bert().save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="no tokenizer files"):
        tabes.load(tmp_path / "bert")
    model = tabes.load(tmp_path / "bert", mask_id=MASK)
    assert isinstance(model, HFDenoiser) and model.logit_shift == 0 and model.vocab_size == V
    with pytest.raises(ValueError, match="outside the model's input vocabulary"):
        tabes.load(tmp_path / "bert", mask_id=10_000)
    _llama().save_pretrained(tmp_path / "dream")
    cfg = json.loads((tmp_path / "dream" / "config.json").read_text())
    assert tabes.load(tmp_path / "dream", kind="dream", mask_id=MASK).logit_shift == 1
    cfg["auto_map"] = {"AutoModel": "modeling_llada.LLaDAModelLM"}
    cfg["model_type"] = "llada"
    (tmp_path / "dream" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        tabes.load(tmp_path / "dream")


def _bert_with_tokenizer(path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "[EOS]"]
    words += [f"w{i}" for i in range(V - len(words) - 1)] + ["[MASK]"]
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizer(str(path / "vocab.txt"), do_lower_case=True, eos_token="[EOS]")
    tok.save_pretrained(path)
    _bert().save_pretrained(path)
    return tok


def test_generate_cli_on_a_local_checkpoint(tmp_path, capsys):
    from tabes.cli import main

    tok = _bert_with_tokenizer(tmp_path / "bert")
    assert tok.mask_token_id == MASK
    code = main(
        [
            "generate",
            "--model",
            str(tmp_path / "bert"),
            "--prompt",
            "the cat sat",
            "--steps",
            "4",
            "--gen-length",
            "8",
            "--block-length",
            "4",
            "--json",
            "--sampler",
            "boe:r=1",
        ]
    )
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["prompt"] == "the cat sat" and isinstance(rec["completion"], str)
    assert rec["forwards"] >= 4 and rec["backwards"] >= 1
    assert rec["backward_attention"] == ("aqa" if tabes.load(tmp_path / "bert").routes_attention else "dense")
    assert main(["generate", "--model", str(tmp_path / "bert"), "--prompt", "the cat", "--steps", "2", "--gen-length", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backward_attention"] is None  # confidence runs no backward
    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "model not found" in capsys.readouterr().err


def test_row_stops_growing_after_eos():
    def fill(logits):  # confident EOS at position 5, flat elsewhere
        logits[:, :, 3] = 1.0
        logits[:, 5, 12] = 10.0

    stub = StubDenoiser(14, fill)
    ids = torch.tensor([[1, 2, 3, 4] + [13] * 6])
    out = generate(stub, ids, sampler="confidence", steps=6, eos_id=12)
    assert out.sequences[0].tolist() == [1, 2, 3, 4, 3, 12, 12, 12, 12, 12]
    assert out.steps[0] == 2  # EOS at step 1 fills 6..9; step 2 decodes position 4
    given_eos = generate(stub, torch.tensor([[12, 2, 3, 4] + [13] * 6]), sampler="confidence", steps=6, eos_id=12)
    assert given_eos.sequences[0, 0] == 12 and given_eos.steps[0] == 2  # a given EOS does not end the row


def test_pickle_weights_need_allow_pickle(tmp_path):
    path = tmp_path / "bert_bin"
    model = _bert()
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")  # transformers 5 saves safetensors only
    assert list(path.glob("*.bin")) and not list(path.glob("*.safetensors"))
    with pytest.raises(ValueError, match="only pickle weights.*allow_pickle"):
        tabes.load(path, mask_id=MASK)
    assert isinstance(tabes.load(path, mask_id=MASK, allow_pickle=True), HFDenoiser)


def test_bfloat16_weights_decode_on_the_cpu(tmp_path):
    from tabes.tasks.text import generate_text

    path = tmp_path / "bert"
    _bert_with_tokenizer(path)
    model = tabes.load(path, dtype="bfloat16")
    assert model.token_embeddings().dtype == torch.bfloat16
    for sampler in ("confidence", "boe"):
        res = generate_text(model, ["the cat"], gen_length=4, steps=4, sampler=sampler)
        assert len(res.texts) == 1 and res.output.forwards[0] >= 4
    with pytest.raises(ValueError, match="dtype must be one of"):
        tabes.load(path, dtype="float8")


def test_clear_errors_for_long_generations_and_wrong_kinds(tmp_path):
    from tabes.cli import main
    from tabes.tasks.text import generate_text

    path = tmp_path / "bert"
    _bert_with_tokenizer(path)
    model = tabes.load(path)
    with pytest.raises(ValueError, match="more than the model's"):
        generate_text(model, ["the cat"], gen_length=model.max_positions, steps=4)
    with pytest.raises(ValueError, match="kind 'llada' does not fit"):
        tabes.load(path, kind="llada")
    assert main(["generate", "--model", str(path), "--prompt", "the", "--gen-length", "100000"]) == 2


def test_attention_is_switched_only_for_a_backward_with_one_warning_at_most(caplog, capfd):
    """Samplers without a backward never touch the attention implementation; the first backward
    probes it once, and a model that refuses it is reported in one line (transformers' own
    refusal is silenced)."""
    model = HFDenoiser(_bert(), mask_id=MASK)
    generate(model, _ids(), sampler="confidence", steps=4)
    assert model._routes is None
    with caplog.at_level(logging.WARNING):
        generate(model, _ids(), sampler="boe", steps=4)
        generate(model, _ids(), sampler="boe", steps=4)
    assert model._routes is not None
    ours = [r for r in caplog.records if "dense backward" in r.message]
    assert len(ours) == (0 if model.routes_attention else 1)
    assert "attention implementation" not in capfd.readouterr().err


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_generate_boe_in_bfloat16_reports_the_backward_attention(arch, tmp_path, capsys):
    """Under transformers 5 BERT and ModernBERT route attention through the registry, so BoE's
    backward runs through ActiveQueryAttention; under 4.x they fall back to a dense backward."""
    from tabes.cli import main
    from tabes.tasks.text_demo import build_tokenizer

    tok = build_tokenizer(seed=0, n_texts=200, vocab_size=300)
    small = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if arch == "bert":
        model = transformers.BertForMaskedLM(transformers.BertConfig(**small, max_position_embeddings=128))
    else:
        ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
        ids.update(cls_token_id=tok.eos_token_id, sep_token_id=tok.eos_token_id)
        model = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**small, **ids, max_position_embeddings=128))
    model.save_pretrained(tmp_path / arch)
    tok.save_pretrained(tmp_path / arch)
    args = ["generate", "--model", str(tmp_path / arch), "--prompt", "Question: Ann has 12 cards.", "--sampler", "boe"]
    from tabes.hardware import _bf16_warned, cpu_info

    _bf16_warned.cache_clear()
    assert main([*args, "--dtype", "bfloat16", "--steps", "4", "--gen-length", "8", "--json"]) == 0
    captured = capsys.readouterr()
    rec = json.loads(captured.out)
    assert rec["backwards"] >= 1
    warned = [line for line in captured.err.splitlines() if "bfloat16 on this CPU" in line]
    assert len(warned) == (1 if cpu_info().bf16_native is False else 0)  # one line where bf16 is emulated
    major = int(transformers.__version__.split(".")[0])
    assert rec["backward_attention"] == ("aqa" if major >= 5 else "dense")


def _slow_attention(mode):
    """The reference of ``mode`` by detaching (whatever mode the call names), grad_rows as detached rows."""
    from tabes.ops.aqa import attention_kv_reference, attention_reference, dense_attention

    def attend(q, k, v, *, bias=None, active=None, mode_in_call=None, grad_rows=None, **kwargs):
        if active is None:
            return dense_attention(q, k, v, bias)
        ref = attention_kv_reference if mode == "kv" else attention_reference
        return ref(q, k, v, bias=bias, active=active, grad_rows=grad_rows)

    return attend


@pytest.mark.parametrize("mode", ["exact", "kv"])
@pytest.mark.parametrize("build", [_llama, _bert, _llada])
def test_sparse_backward_of_hf_models_equals_the_reference(build, mode, monkeypatch):
    """Row-skipping linears, grad_rows in the first layer and each AQA mode, in float64, against
    plain autograd through the slow references (no row skipping, grad_rows only as detached inputs)."""
    import tabes.models.attention as shared
    from tabes.ops import rows

    def make():
        if build is _llada:
            return _llada(mode)
        return HFDenoiser(build().double(), mask_id=MASK, bidirectional=build is _llama, aqa_mode=mode)

    calls = []
    real = rows._LinearRows.backward
    monkeypatch.setattr(rows._LinearRows, "backward", staticmethod(lambda ctx, g: calls.append(1) or real(ctx, g)))
    fast = _tis(make(), "candidates+probes")
    assert calls, "the row-skipping linears were not used"
    slow_model = make()
    slow_model.skip_rows = False
    monkeypatch.setattr(shared, "attention", _slow_attention(mode))
    slow = _tis(slow_model, "candidates+probes")
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=1e-8)
    assert fast.abs().max() > 1e-8


def test_a_diffusiongemma_checkpoint_without_the_model_in_transformers_is_refused_in_one_line(tmp_path, monkeypatch):
    """Under a transformers that ships no DiffusionGemma (4.x), loading one says so in one line,
    instead of failing deep inside transformers or decoding it as a masked LM."""
    from tabes.models import diffusion_gemma

    monkeypatch.setattr(diffusion_gemma, "_model_class", lambda: None)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "diffusion_gemma", "architectures": ["DiffusionGemmaForBlockDiffusion"]})
    )
    with pytest.raises(ValueError, match="needs a transformers that ships DiffusionGemmaForBlockDiffusion") as err:
        tabes.load(tmp_path)
    assert "\n" not in str(err.value)


def test_position_ids_follow_the_mask_they_are_given():
    """The adapter keeps the position ids of the last mask: a new mask (even at a reused address) or
    an in-place change gives new ones."""
    model = HFDenoiser(_llama(), mask_id=MASK, bidirectional=True)
    a = torch.tensor([[False, True, True, True]])
    assert model._positions(a).tolist() == [[0, 0, 1, 2]]
    a[0, 1] = False  # in place: the version changes
    assert model._positions(a).tolist() == [[0, 0, 0, 1]]
    for pad in range(4):  # fresh masks, which the allocator may place where an old one was
        m = torch.ones(1, 4, dtype=torch.bool)
        m[0, :pad] = False
        assert model._positions(m).tolist() == [[max(0, i - pad) for i in range(4)]]
