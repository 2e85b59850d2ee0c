"""Sampler registry: one file per sampler, each registered by name.

Example:
    >>> from tabes.samplers import get_sampler
    >>> get_sampler("margin").name
    'margin'
    >>> get_sampler("threshold:threshold=0.8").config.threshold
    0.8
"""

from __future__ import annotations

# importing the modules registers the samplers
from tabes.samplers import boe, confidence, dus, eb, entropy, klass, llada2, lookahead, margin, pc, random, remdm, threshold  # noqa: E402,F401
from tabes.samplers.base import Sampler, StepResult, StepState, top_k_mask
from tabes.samplers.registry import available, describe, get_sampler, parse_spec, register, spec_label

__all__ = [
    "Sampler",
    "StepResult",
    "StepState",
    "available",
    "describe",
    "get_sampler",
    "parse_spec",
    "register",
    "spec_label",
    "top_k_mask",
]
