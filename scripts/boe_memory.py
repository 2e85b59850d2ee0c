"""Activation memory of BoE's backward for LLaDA-8B in bf16, from the formula in docs/memory.md.

python scripts/boe_memory.py            # prints the markdown table of docs/memory.md
"""

from __future__ import annotations

GiB = 1024**3

# LLaDA-8B (config.json of GSAI-ML/LLaDA-8B-Instruct): d_model, layers, heads, kv heads, MLP, vocabulary
D, N, H, H_KV, M, V = 4096, 32, 32, 32, 12288, 126464
PARAMS = 8.02e9
BF16, FP32 = 2, 4


def per_row_per_layer() -> int:
    """Bytes one computed row keeps in one layer for an input-gradient-only backward: the two
    RMSNorm inputs (2d), q, k, v and the attention output (4d), the SwiGLU gate and up
    pre-activations (2m), in bf16. Linear layers keep nothing: their input gradient needs the
    weight only."""
    return (2 * D + 4 * D + 2 * M) * BF16


def table(lengths=(256, 1024, 2048, 4096), block: int = 32) -> str:
    head = ["L", "weights", "activations, all rows", "+ eager attention P", "probe log-probs, rho=1", "rho=0.25"]
    head += ["dual cache: activations", "dual cache: cached K/V"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for L in lengths:
        act = N * L * per_row_per_layer()
        probs = N * H * L * L * BF16  # P of every layer, kept by an autograd (non-fused) attention
        block_act = N * block * per_row_per_layer() + N * H * block * L * BF16  # block rows; their P rows
        kv = N * 2 * L * (D // H) * H_KV * BF16
        logp = L * V * FP32  # log-probabilities at the probes (rho = 1: every row), float32
        cells = [PARAMS * BF16, act, probs, logp, 0.25 * logp, block_act, kv]
        rows.append(f"| {L} | " + " | ".join(f"{c / GiB:.2f} GiB" for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    row = per_row_per_layer()
    print(f"per computed row and layer: {row / 1024:.0f} KiB; per row, all {N} layers: {N * row / 2**20:.1f} MiB")
    print(table())
