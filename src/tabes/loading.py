"""``tabes.load``: a denoiser from a folder on disk (never from the network)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tabes.protocol import Denoiser

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


SHIPPED = ("sudoku", "text-demo")


def default_model_path(name: str = "sudoku") -> Path:
    """Folder of a shipped model: ``"sudoku"`` (the 9x9 Sudoku MDM) or ``"text-demo"`` (the
    word-problem ModernBERT, a transformers folder)."""
    if name not in SHIPPED:
        raise ValueError(f"shipped models are {SHIPPED}, got {name!r}")
    return Path(__file__).parent / "checkpoints" / name


def load(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
    **kwargs,
) -> Denoiser:
    """Load a model folder behind the :class:`tabes.protocol.Denoiser` protocol.

    Args:
        path: a folder with ``config.json``; None loads the shipped Sudoku model, and the names
            ``"sudoku"`` and ``"text-demo"`` load a shipped model (a folder of that name in the
            working directory wins).
        device: torch device for the weights, e.g. ``"cuda"``.
        dtype: weights' dtype, ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype;
            None keeps the stored float32. Entropies, TIS and scores are computed in float32
            whatever this is.
        allow_pickle: load pickle ``.bin`` weights of a transformers folder that has no
            safetensors (pickle can run code; the default refuses).
        kwargs: for transformers checkpoints, passed to :func:`tabes.models.hf.load_hf`
            (``kind``, ``trust_remote_code``, ``mask_id``, ``aqa_mode``).

    Example:
        >>> model = load("path/to/LLaDA-8B-Instruct", device="cuda", dtype="bfloat16", trust_remote_code=True)  # doctest: +SKIP

    Raises ``FileNotFoundError`` for a missing folder or file and ``ValueError`` for a folder
    that holds no model this version can load.
    """
    from tabes.hardware import warn_slow_bf16
    from tabes.models.mdm import MDM, MODEL_TYPE

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    warn_slow_bf16(dtype, device)  # one line on a CPU that emulates bf16
    if path is None or (str(path) in SHIPPED and not Path(path).exists()):
        path = default_model_path(str(path or "sudoku"))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"model file not found: {cfg_file}")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type == MODEL_TYPE:
        if kwargs:
            raise ValueError(f"unexpected options for a {MODEL_TYPE} model: {sorted(kwargs)}")
        model = MDM.from_pretrained(path, map_location=device)
        return model if dtype is None else model.to(dtype)
    from tabes.models.hf import load_hf

    return load_hf(path, device=device, dtype=dtype, allow_pickle=allow_pickle, **kwargs)
