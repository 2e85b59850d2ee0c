"""Deepen a Sudoku MDM run folder without changing what it computes, to continue training it.

    python scripts/grow_model.py training/sudoku_v7 runs/sudoku_d11 --layers 11
    tabes train sudoku --out runs/sudoku_d11 --resume ...

Writes DST/model.safetensors and config.json with ``tabes.models.mdm.grow_depth`` (new blocks
spread between the old ones, each starting as the identity), and copies the source's
``train_log.jsonl`` and ``train_state.json`` (step, samples, wall-clock, data random state) so
the lineage's step count and log continue. The optimizer moments and the weight average are
not copied (the parameter shapes changed): ``--resume`` then warms the learning rate up again
from the source's step and starts a fresh average from the grown weights.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from tabes.models.mdm import MDM, grow_depth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="model or run folder (config.json + model.safetensors)")
    ap.add_argument("dst", help="new run folder (must not hold a model)")
    ap.add_argument("--layers", type=int, required=True, help="blocks of the grown model")
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    if (dst / "model.safetensors").exists():
        raise SystemExit(f"{dst} already holds a model")
    model = MDM.from_pretrained(src)
    grown = grow_depth(model, args.layers)
    grown.save_pretrained(dst)
    for name in ("train_log.jsonl", "train_state.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    print(f"{src} ({model.config.n_layers} blocks, {model.num_parameters():,} parameters) -> ", end="")
    print(f"{dst} ({args.layers} blocks, {grown.num_parameters():,} parameters)")


if __name__ == "__main__":
    main()
