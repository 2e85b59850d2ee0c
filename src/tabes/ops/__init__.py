"""Kernels: ActiveQueryAttention."""
