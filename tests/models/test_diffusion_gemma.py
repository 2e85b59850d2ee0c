"""DiffusionGemma: the native rule against transformers' own ``model.generate()`` (the oracle),
loading, the CLI, every tabes sampler on a uniform-noise canvas, and BoE's TIS by finite differences."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers.models.diffusion_gemma", reason="this transformers ships no DiffusionGemma")

from transformers import DiffusionGemmaForBlockDiffusion  # noqa: E402
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig  # noqa: E402

import tabes  # noqa: E402
from tabes import decode  # noqa: E402
from tabes.models.diffusion_gemma import DiffusionGemmaDenoiser  # noqa: E402
from tabes.protocol import predict  # noqa: E402
from tabes.samplers import available  # noqa: E402
from tabes.samplers.base import top_k_mask  # noqa: E402
from tabes.samplers.boe import future_entropy, token_influence  # noqa: E402
from tests.diffusion_gemma_tiny import BOS, EOS, PAD, V, save_folder, sharpen, tiny_model, tokenizer  # noqa: E402

PROMPT = torch.tensor([[5, 6, 7, 8]])
BATCH = torch.tensor([[PAD, PAD, 5, 6], [9, 10, 11, 12], [PAD, 3, 4, 5]])


def _reference(m, ids, am, new, seed, **kw):
    torch.manual_seed(seed)
    if am is not None:
        kw["attention_mask"] = am
    return m.generate(ids, max_new_tokens=new, **kw).sequences


# (name, sharpened head, EOS in the generation config, generate's kwargs, the native rule's overrides)
GRID = [
    ("defaults", False, False, {}, {}),
    ("entropy bound", False, False, {"sampler_config": EntropyBoundSamplerConfig(entropy_bound=1.5)}, {"entropy_bound": 1.5}),
    ("no adaptive stop", True, False, {"stability_threshold": None}, {"stopping": False}),
    ("adaptive stop", True, False, {}, {}),
    (
        "stability 2, 6 steps",
        True,
        False,
        {"stability_threshold": 2, "max_denoising_steps": 6},
        {"stability_threshold": 2, "max_denoising_steps": 6},
    ),
    ("EOS and pad", True, True, {}, {}),
    ("no temperature", True, False, {"t_min": None, "t_max": None}, {"t_min": None, "t_max": None}),
]


@pytest.mark.parametrize("name,sharp,eos,kw,ours", GRID, ids=[g[0] for g in GRID])
@pytest.mark.parametrize("batch", [1, 3])
def test_native_rule_gives_model_generates_tokens(name, sharp, eos, kw, ours, batch):
    m = tiny_model()
    hook = sharpen(m, eos_every=3 if eos else 0) if sharp else None  # two EOS in a canvas: only the first stays
    if eos:
        m.generation_config.eos_token_id, m.generation_config.pad_token_id = EOS, PAD
    d = DiffusionGemmaDenoiser(m)
    ids, am = (PROMPT, None) if batch == 1 else (BATCH, BATCH != PAD)
    settings = d.native_settings(**ours)
    if "t_min" in ours:  # generate() drops the schedule when an end is unset; None overrides are ignored, so set it here
        settings.t_min = settings.t_max = None
    for seed, new in [(0, 24), (1, 13)]:  # three canvases; a length that is not a multiple of the canvas
        ref = _reference(m, ids, am, new, seed, **kw)
        got = d.native_generate(
            ids, new_tokens=new, generator=torch.Generator().manual_seed(seed), attention_mask=am, settings=settings
        ).sequences
        assert torch.equal(got, ref), (name, seed, new, got, ref)
    if hook is not None:
        hook.remove()


def test_the_grid_reaches_the_adaptive_stop_and_eos():
    """The grid's hard cases happen: rows stop denoising early, and rows end at EOS with pads after it."""
    m = tiny_model()
    sharpen(m, eos_every=5)
    m.generation_config.eos_token_id, m.generation_config.pad_token_id = EOS, PAD
    d = DiffusionGemmaDenoiser(m)
    out = d.native_generate(BATCH, new_tokens=24, generator=torch.Generator().manual_seed(0), attention_mask=BATCH != PAD)
    assert (out.forwards < 48).any()  # every row ended in its first canvas, which takes 48 steps without the stop
    tail = out.sequences[:, BATCH.shape[1] :]
    assert (tail == EOS).any() and (tail == PAD).any()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_folder(tmp_path_factory.mktemp("dg") / "model")


def test_load_recognises_the_folder_and_refuses_a_wrong_kind(folder):
    model = tabes.load(folder)
    assert isinstance(model, DiffusionGemmaDenoiser) and model.vocab_size == V + 1 and model.mask_id == V
    assert isinstance(tabes.load(folder, kind="diffusion-gemma"), DiffusionGemmaDenoiser)
    with pytest.raises(ValueError, match="kind 'llada' does not fit"):
        tabes.load(folder, kind="llada")
    with pytest.raises(ValueError, match="no mask token"):
        tabes.load(folder, mask_id=3)
    assert tabes.load(folder, dtype="bfloat16").model.dtype == torch.bfloat16


@pytest.mark.parametrize("bos", [False, True])
def test_cli_native_gives_the_completion_of_model_generate(folder, tmp_path, capsys, bos):
    """The prompt as the tokenizer makes it (with its BOS where it adds one), as generate() takes it."""
    from tabes.cli import main

    if bos:
        folder = save_folder(tmp_path / "bos", bos=True)
    m = DiffusionGemmaForBlockDiffusion.from_pretrained(folder).eval()
    tok = tokenizer(bos)
    for prompt, n, seed in [("w5 w6 w7", 16, 0), ("w9 w10", 20, 3), ("w40 w41 w42 w43 w44", 8, 7)]:
        ids = tok(prompt, return_tensors="pt").input_ids
        assert (ids[0, 0] == BOS) == bos
        torch.manual_seed(seed)
        ref = m.generate(ids, max_new_tokens=n).sequences
        want = tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
        main(
            [
                "generate",
                "--model",
                str(folder),
                "--prompt",
                prompt,
                "--sampler",
                "native",
                "--gen-length",
                str(n),
                "--seed",
                str(seed),
                "--json",
            ]
        )
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["completion"] == want


@pytest.mark.parametrize("spec", ["confidence", "eb", "boe"])
def test_cli_runs_tabes_samplers(folder, capsys, spec):
    from tabes.cli import main

    main(["generate", "--model", str(folder), "--prompt", "w5 w6 w7", "--sampler", spec, "--gen-length", "16", "--steps", "16", "--json"])
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["forwards"] >= 16 and (rec["backwards"] > 0) == (spec == "boe")
    if spec == "boe":
        assert rec["backward_attention"] == "aqa"


# every registered spec but dfs (a task's search), with BoE's one-pass variant
SAMPLERS = [*sorted(set(available()) - {"dfs"}), "boe:point=mask"]


@pytest.fixture(scope="module")
def dg():
    return DiffusionGemmaDenoiser(tiny_model())


def _ids(rows: int = 2) -> torch.Tensor:
    """(rows, 4 + 16) prompts and two canvases of masks."""
    prompts = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12], [13, 3, 4, 40]])[:rows]
    return torch.cat([prompts, torch.full((rows, 16), V)], 1)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_fills_the_canvases(dg, name):
    ids = _ids()
    kw = dict(sampler=name, steps=16, block_length=8, generator=torch.Generator().manual_seed(0))
    out = decode(dg, ids, **kw)
    assert out.sequences.shape == ids.shape
    assert torch.equal(out.sequences[:, :4], ids[:, :4])
    assert ((out.sequences[:, 4:] >= 0) & (out.sequences[:, 4:] < V)).all()  # real tokens, no mask left
    again = decode(dg, ids, **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert torch.equal(out.sequences, again.sequences)  # the same seed, the same tokens (noise included)
    alone = decode(dg, ids[1:], **{**kw, "generator": torch.Generator().manual_seed(0)})
    if not get_stochastic(name):  # a row's tokens do not depend on its batch
        assert torch.equal(alone.sequences[0], out.sequences[1])


def get_stochastic(name: str) -> bool:
    from tabes.samplers import get_sampler

    return bool(getattr(get_sampler(name), "stochastic", False))


def test_noise_is_fixed_within_a_step_fresh_after_a_commit_and_seeded(dg):
    ids = _ids(1)
    a, b = dg.noised(ids), dg.noised(ids)
    assert torch.equal(a, b) and not (a == V).any()
    committed = ids.clone()
    committed[0, 4] = 7
    assert not torch.equal(dg.noised(committed)[0, 5:], a[0, 5:])  # a commit renoises the rest
    other = DiffusionGemmaDenoiser(dg.model, noise_seed=1)
    assert not torch.equal(other.noised(ids), a)


def _tis_problem(seed: int = 0):
    m = tiny_model(seed, dtype=torch.float64)
    sharpen(m, scale=3.0)
    d = DiffusionGemmaDenoiser(m)
    x = _ids(2)
    x[:, 4] = torch.tensor([9, 17])  # one committed token in the current canvas
    canvas = torch.zeros_like(x, dtype=torch.bool)
    canvas[:, 4:12] = True
    masked = (x == V) & canvas
    pred = predict(d, x, where=masked)
    cand = top_k_mask(pred.confidence, masked, torch.full((2,), 3))
    return d, x, pred, cand, masked & ~cand


def test_boe_tis_is_the_first_order_entropy_change_on_a_uniform_noise_canvas():
    """Moving candidate i from e~_i towards its noise token's embedding e_i by eps changes H~ by
    eps * TIS_i to first order (central differences, float64 weights), with TIS_i = -<dH~/de_i, e~_i - e_i>. Fails if TIS's sign flips or
    if its reference embedding is the (virtual) mask's instead of the noise token's."""
    d, x, pred, cand, probes = _tis_problem()
    tis, h0 = token_influence(d, x, pred.probs, cand, probes, tau=0.5, active="dense")
    E = d.token_embeddings().detach()
    with torch.no_grad():
        noise = d.embed(x)  # e_i: the noise tokens' embeddings at the masked positions
        pihat = torch.softmax(pred.probs[..., :V].clamp_min(1e-30).log() / 0.5, -1)
        soft = pihat.to(E.dtype) @ E[:V]
        base = torch.where(cand[..., None], soft, noise)
        checked = 0
        for b in range(2):
            for i in cand[b].nonzero().squeeze(-1).tolist():
                errors = []
                for eps in (1e-2, 1e-3):  # central differences: the model's norms and softmaxes run in float32
                    hs = []
                    for sign in (1, -1):
                        e = base.clone()
                        e[b, i] += sign * eps * (noise[b, i] - soft[b, i])
                        d.embed(x)  # the ids behind these embeddings
                        hs.append(float(future_entropy(d, e, probes)[b]))
                    dh = (hs[0] - hs[1]) / 2
                    errors.append(abs(dh - eps * float(tis[b, i])) / abs(eps * float(tis[b, i])))
                assert errors[-1] < 5e-3, errors  # a flipped sign or a wrong reference embedding gives O(1)
                checked += 1
    assert checked == 6


def test_the_loop_carries_each_rows_logits_into_the_next_steps_self_conditioning():
    """With a tabes sampler, step k's decoder reads step k - 1's logits over the canvas as its
    self-conditioning input (the native rule's carry); a canvas's first step reads none."""
    d = DiffusionGemmaDenoiser(tiny_model())
    seen, outs = [], []
    d._decoder.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw.get("self_conditioning_logits")), with_kwargs=True)
    real = d.logits_from_embeds

    def spy(*args, **kw):
        out = real(*args, **kw)
        outs.append(out.detach().clone())
        return out

    d.logits_from_embeds = spy
    ids = _ids(2)
    decode(d, ids, sampler="confidence", steps=8, block_length=8)  # 2 canvases of 8, 4 steps each
    assert len(seen) == len(outs) == 8
    for k in range(8):
        if k % 4 == 0:  # a canvas's first step
            assert seen[k] is None
        else:
            lo = 4 + 8 * (k // 4)
            torch.testing.assert_close(seen[k], outs[k - 1][:, lo : lo + 8, :V], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["exact", "kv"])
def test_aqa_backward_through_the_decoder(mode):
    """ActiveQueryAttention in the decoder's backward: with every canvas row active it is the dense
    backward; with the candidates and probes only, the forward is the same and the gradient is
    not (inactive rows' scores are constants). The model's own attention is back after the call."""
    from tabes.samplers.boe import _probe_entropy

    d, x, pred, cand, probes = _tis_problem()
    d.aqa_mode = mode

    def run(active):
        e = d.embed(x).detach().requires_grad_(True)
        with torch.enable_grad():
            out = d.logits_from_embeds(e, active=active)
            (g,) = torch.autograd.grad(_probe_entropy(out, probes, d.mask_id).sum(), e)
        return out.detach(), g

    canvas = torch.zeros_like(x, dtype=torch.bool)
    canvas[:, 4:12] = True
    dense, g_dense = run(None)
    full, g_full = run(canvas)
    sparse, g_sparse = run(cand | probes)
    torch.testing.assert_close(full, dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_full, g_dense, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-12)
    assert (g_sparse - g_dense).abs().max() > 1e-3
    assert d.model.config.text_config._attn_implementation == "sdpa"


def test_native_after_boe_still_gives_model_generates_tokens():
    """BoE switches the decoder's attention for its own calls only: the native rule on the same
    model stays exact."""
    m = tiny_model()
    d = DiffusionGemmaDenoiser(m)
    decode(d, _ids(1), sampler="boe", steps=8, block_length=8)
    got = d.native_generate(PROMPT, new_tokens=16, generator=torch.Generator().manual_seed(0)).sequences
    assert torch.equal(got, _reference(m, PROMPT, None, 16, 0))


def test_a_padded_batch_of_prompts_of_different_lengths(folder):
    """generate_text left-pads a batch: native gives model.generate()'s texts for that padded batch
    and mask; a masked-loop sampler decodes it too; and bfloat16 weights decode."""
    from tabes.tasks.text import generate_text

    prompts = ["w5 w6 w7 w8", "w9", "w10 w11"]
    model = tabes.load(folder)
    res = generate_text(model, prompts, sampler="native", gen_length=16, seed=4)
    tok = tokenizer()
    tok.padding_side = "left"  # as generate_text pads
    enc = tok(prompts, padding=True, return_tensors="pt")
    torch.manual_seed(4)
    ref = model.model.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=16).sequences
    assert res.texts == [tok.decode(r[enc.input_ids.shape[1] :], skip_special_tokens=True) for r in ref]
    other = generate_text(model, prompts, sampler="confidence", gen_length=16, steps=16)
    assert len(other.texts) == 3 and (other.output.forwards == 16).all()
    bf16 = generate_text(tabes.load(folder, dtype="bfloat16"), prompts[:1], sampler="native", gen_length=8)
    assert isinstance(bf16.texts[0], str) and int(bf16.output.forwards[0]) >= 1
