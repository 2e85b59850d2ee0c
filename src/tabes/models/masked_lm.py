"""Masked LMs (any transformers ``*ForMaskedLM``: BERT, RoBERTa, ModernBERT, ...) used as MDMs:
their own mask token, their own bidirectional attention; the shipped ``text-demo`` is one."""

from __future__ import annotations


def is_masked_lm(model_type: str | None) -> bool:
    """Whether transformers maps ``model_type`` to a ``*ForMaskedLM`` class (an encoder)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def model_class():
    """The auto class that loads a masked LM with its output head."""
    import transformers

    return transformers.AutoModelForMaskedLM
