"""``tabes.load``: a denoiser from a folder on disk (never from the network)."""

from __future__ import annotations

import json
from pathlib import Path

from tabes.protocol import Denoiser


def default_model_path() -> Path:
    """Folder of the shipped 9x9 Sudoku MDM."""
    return Path(__file__).parent / "checkpoints" / "sudoku"


def load(path: str | Path | None = None, *, device: str = "cpu", **kwargs) -> Denoiser:
    """Load a model folder behind the :class:`tabes.protocol.Denoiser` protocol.

    Args:
        path: a folder with ``config.json``; None loads the shipped Sudoku model.
        device: torch device for the weights.
        kwargs: for transformers checkpoints, passed to :func:`tabes.models.hf.load_hf`
            (``kind``, ``trust_remote_code``, ``mask_id``, ``aqa_mode``).

    Raises ``FileNotFoundError`` for a missing folder or file and ``ValueError`` for a folder
    that holds no model this version can load.
    """
    from tabes.models.mdm import MDM, MODEL_TYPE

    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"model file not found: {cfg_file}")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type == MODEL_TYPE:
        if kwargs:
            raise ValueError(f"unexpected options for a {MODEL_TYPE} model: {sorted(kwargs)}")
        return MDM.from_pretrained(path, map_location=device)
    from tabes.models.hf import load_hf

    return load_hf(path, device=device, **kwargs)
