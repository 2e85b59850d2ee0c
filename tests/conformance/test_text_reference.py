"""Text decoding (``tabes.tasks.text.generate_text``) against LLaDA's ``generate.py`` on padded
batches: a tokenizer without a pad token, and no EOS fill unless asked for.

The reference is :func:`tests.conformance.test_llada_generate.llada_generate` (the file and
commit are named there), fed the prompts left-padded with the tokenizer's pad token, or its EOS token when it has none,
as such a tokenizer is padded in practice (``tokenizer.pad_token = tokenizer.eos_token``).
"""

from __future__ import annotations

import pytest
import torch

from tabes.models.hf import HFDenoiser
from tabes.tasks.text import generate_text
from tests.conformance._models import MASK, V, llada
from tests.conformance.test_llada_generate import llada_generate

WORDS = [f"w{i}" for i in range(V - 2)]  # ids 0..37; 38 is <eos>, 39 is [MASK]
EOS = V - 2


def _tokenizer(pad: bool = False, eos: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)} | {"<eos>": EOS, "[MASK]": MASK}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = {"mask_token": "[MASK]"}
    if eos:
        special["eos_token"] = "<eos>"
    if pad:
        special["pad_token"] = "w0"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


PROMPTS = ["w5 w9 w12 w3", "w7 w1 w30 w22 w8 w16 w2", "w11"]


def _reference(hf, tok, prompts, gen, block, steps):
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    P = max(map(len, enc))
    pad = tok.pad_token_id if tok.pad_token_id is not None else EOS
    ids = torch.tensor([[pad] * (P - len(e)) + e for e in enc])
    am = torch.tensor([[0] * (P - len(e)) + [1] * len(e) for e in enc])
    return llada_generate(hf, ids, am, steps, gen, block)[:, P:]


@pytest.mark.parametrize("head_scale", [1.0, 40.0])
def test_a_tokenizer_without_a_pad_token_gives_the_references_tokens(head_scale):
    hf, _ = llada(torch.float64, head_scale)
    tok = _tokenizer(pad=False)
    assert tok.pad_token_id is None
    model = HFDenoiser(hf, mask_id=MASK, tokenizer=tok)
    for gen, block, steps in [(16, 8, 16), (24, 8, 12)]:
        res = generate_text(model, PROMPTS, gen_length=gen, steps=steps, block_length=block)
        ref = _reference(hf, tok, PROMPTS, gen, block, steps)
        assert torch.equal(res.output.sequences[:, res.prompt_length :], ref)
        # nothing but the generated positions was decoded: the padding is still padding
        assert (res.output.sequences[:, : res.prompt_length] != MASK).all()
        for b, text in enumerate(res.texts):  # the text ends at the first EOS, as the references cut it
            gen_ids = ref[b].tolist()
            assert text == tok.decode(gen_ids[: gen_ids.index(EOS)] if EOS in gen_ids else gen_ids, skip_special_tokens=True)


def test_padding_that_cannot_be_told_from_the_mask_is_refused():
    hf, _ = llada(torch.float64, 1.0)
    with pytest.raises(ValueError, match="no pad token and no EOS token"):
        generate_text(HFDenoiser(hf, mask_id=MASK, tokenizer=_tokenizer(eos=False)), PROMPTS, gen_length=8, steps=8)
    tok = _tokenizer(pad=True)
    tok.pad_token = "[MASK]"
    with pytest.raises(ValueError, match=f"pad token id {MASK} is the mask id"):
        generate_text(HFDenoiser(hf, mask_id=MASK, tokenizer=tok), PROMPTS, gen_length=8, steps=8)
    # one prompt needs no padding, so it decodes whatever the tokenizer lacks
    assert len(generate_text(HFDenoiser(hf, mask_id=MASK, tokenizer=_tokenizer(eos=False)), PROMPTS[:1], gen_length=8, steps=8).texts) == 1


def test_eos_fill_is_off_by_default_and_changes_tokens_when_on():
    """By default every generated position is decoded, as in the reference; ``eos_fill`` is the
    shortcut that fills a row's later masks with EOS once it commits one."""
    hf, _ = llada(torch.float64, 1.0)
    head = hf.get_output_embeddings().weight
    with torch.no_grad():  # make EOS likely: it takes over a frequent token's direction
        head[EOS] = 1.1 * head[35]
    tok = _tokenizer(pad=True)
    model = HFDenoiser(hf, mask_id=MASK, tokenizer=tok)
    ref = _reference(hf, tok, PROMPTS, 16, 16, 8)
    assert (ref == EOS).any()  # the case that matters
    plain = generate_text(model, PROMPTS, gen_length=16, steps=8)
    assert torch.equal(plain.output.sequences[:, plain.prompt_length :], ref)
    filled = generate_text(model, PROMPTS, gen_length=16, steps=8, eos_fill=True)
    gen = filled.output.sequences[:, filled.prompt_length :]
    after = (gen == EOS).cumsum(-1) > 0
    assert (gen[after] == EOS).all()  # everything after a row's first EOS is EOS
    assert not torch.equal(gen, ref)
