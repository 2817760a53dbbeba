"""Row statistics tuned for XLA:GPU; the portable ones are `_softmax.one_pass_stats`.

XLA:GPU fuses a max-then-sum row normalization (the pattern of `jax.nn.softmax`) into a single
kernel that reads each row once, when the row is short enough (measured on H100 descriptions,
JAX 0.10.2: one Triton kernel up to 16384 classes, 2.0·B for `log_softmax` at 1024×1000, where
the portable variadic reduction takes 3.0·B in three kernels). Longer rows are split into
several kernels either way, and there the portable one-pass reduction reads the logits once where
max-then-sum reads them twice (4096×32000: 3.0·B against 4.0·B). So short rows take the
max-then-sums form below and long rows the portable kernel. Figures: docs/cpu-tuning.md.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import Array

from jaxloss._xla_cpu import max_shift


@dataclasses.dataclass(frozen=True)
class GpuConfig:
    """The numbers behind the XLA:GPU kernels (measured in docs/cpu-tuning.md)."""

    #: Rows of at most this many classes take the max-then-sums form XLA:GPU fuses into one
    #: kernel; longer rows take the portable one-pass reduction.
    max_fused_row: int = 16384


CONFIG = GpuConfig()


def row_stats(cfg: GpuConfig, xf: Array, portable) -> tuple[Array, Array]:
    """(m, t) as `_softmax.one_pass_stats` returns them; `portable` computes them for long rows.

    Short rows: the maximum, then the count of entries equal to it and the mass below it, by
    exact comparison (XLA:GPU fuses the selects with the reductions).
    """
    if xf.shape[-1] > cfg.max_fused_row:
        return portable(xf)
    # Started from the lowest finite number, so an all −inf row shifts by it and stays −inf
    # without a select between the reductions (which would split XLA:GPU's fused kernel).
    m = max_shift(xf, xf.dtype)
    d = xf - m
    top = d == 0
    r = jnp.sum(jnp.where(top, 0.0, jnp.exp(d)), axis=-1, keepdims=True)
    c = jnp.sum(top.astype(xf.dtype), axis=-1, keepdims=True)
    return m, (c - 1) + r
