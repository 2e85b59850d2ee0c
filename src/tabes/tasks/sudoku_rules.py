"""Sudoku's rules as :class:`tabes.dfs.Constraints`, for a search guided by the model.

Ids are the model's: 0..8 are the digits 1..9, 9 (``sudoku.MASK_ID``) an undecided cell.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tabes.tasks import sudoku

_PEERS = torch.from_numpy(sudoku._PEER_MAT)  # (81, 81) 1.0 where two cells share a row, column or box


class SudokuRules:
    """No digit twice in a row, column or box; propagation by naked and hidden singles."""

    def allowed(self, x: Tensor) -> Tensor:
        """(B, 81) ids -> (B, 81, 10) bool: the digits no peer holds (the mask id never)."""
        decided = x != sudoku.MASK_ID
        digits = torch.nn.functional.one_hot(x.clamp_max(8), 9).float() * decided[..., None]  # (B, 81, 9)
        used = torch.einsum("ij,bjd->bid", _PEERS.to(x.device), digits) > 0  # a peer holds the digit
        return torch.cat([~used, torch.zeros_like(used[..., :1])], -1)

    def propagate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Naked and hidden singles to a fixed point, per board (the numba kernel of the ``fast``
        extra where installed): ((B, 81) ids, (B,) bool, False where a blank lost every candidate)."""
        jit = sudoku._jit()
        out, ok = x.clone(), torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for b, row in enumerate(x.tolist()):
            cells = sudoku.from_ids(row)
            if jit is None:
                g = sudoku.singles_fixpoint(cells)
                good = g is not None
            else:
                g, good = jit.singles_fixpoint(np.asarray(cells, np.int64))
                g = [int(d) for d in g]
            if not good:
                ok[b] = False
                continue
            out[b] = torch.tensor(sudoku.to_ids(g), dtype=torch.long, device=x.device)
        return out, ok
