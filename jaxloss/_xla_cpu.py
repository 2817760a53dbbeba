"""Kernels tuned for XLA:CPU's compiler; the portable ones are in `_softmax` and `_cross_entropy`.

`jaxloss._impl.dispatch` runs these when a program is lowered for the CPU. They compute the same
numbers as the portable kernels, spelled for how XLA:CPU fuses (each trick below was measured;
`docs/cpu-tuning.md` gives the figures and the command that re-measures them):

* Variadic reductions run several times slower than plain ones, so the row statistics are a max
  pass and separate sums, not one (max, rest) reduction.
* A reduction whose producer is a `select` (or a `compare` feeding one) gets that producer
  written out as a full [..., K] buffer first, so "is this the label/the maximum" is asked
  with arithmetic: `min(|j − y|, 1)` over a float iota, `sign(m − x)`.
* Fused reductions run about 7× slower per element on rows longer than ~32K: long rows are cut
  into pieces (`CpuConfig.max_row`).
* A broadcast constant, or a per-row array, shared by two fusions is written out in full, so
  each sum gets its own name for the shift (`m + 0·sum`) and per-row arrays for constants.
* A reshape inside a fusion, or a gather sharing the logits with a convert, makes XLA write the
  converted logits out: those reads go through an optimization barrier.
* Integer-label cross-entropy: forward-only calls shift by the label's logit (one pass, no max)
  under a `lax.cond` that falls back to the maximum when a row would overflow, and sum the row
  in pieces without the 0/1 label weight, reading only the label's piece again with it (the
  weight's float arithmetic on every element cost more than the exp it masks); with a gradient,
  `exp(x − m)` is written once and scaled in place by the backward pass (one exp pass), except
  for large bf16/f16 logits, where recomputing it from the narrow logits moves fewer bytes.

Every size threshold is a field of `CpuConfig`; tests build other configs to run every path.

The 0/1 indicators asked with `sign` and `min` are piecewise constant, and their derivative is 0
on both sides of a tie: a Hessian that differentiates them sees the indicator's true derivative
(tests/test_saturated.py runs the XLA:CPU kernels on rows with tied maxima).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array


@dataclasses.dataclass(frozen=True)
class CpuConfig:
    """The numbers behind the XLA:CPU kernels (measured in docs/cpu-tuning.md)."""

    #: Rows longer than this are cut into pieces of at most this length for the sums.
    max_row: int = 32768
    #: Forward-only integer-label CE up to this many logits shifts by the max without trying
    #: the label first (a `lax.cond` costs more than the max pass it saves).
    label_shift_min_size: int = 2**16
    #: bf16/f16 logits up to this many elements keep exp(x − m) in float32 for the backward pass
    #: (cache-resident: cheaper than a second exp); larger ones recompute it.
    narrow_keep_exp_max: int = 2**22
    #: The label shift falls back to the maximum above this row sum (exp(−log s) would near
    #: float32's smallest normal number).
    label_shift_max_sum: float = 2.0**100
    #: Integer-label CE with a gradient up to this many logits marks the label with the 0/1
    #: weight `not_label` rather than B-element scatters: fewer, fused kernels, where each
    #: kernel's fixed cost outweighs its arithmetic.
    small_max: int = 2**14
    #: Labels index a float32 iota (`not_label`), exact below this many classes; larger
    #: vocabularies take the portable kernel.
    max_float_index: int = 2**24
    #: The off-label sum of forward-only CE cuts rows into pieces of at most this length (a
    #: divisor of the row), at least `label_pieces` of them and none shorter than
    #: `label_piece_min`; the 0/1 weight then runs only on the label's piece. The gathered label
    #: pieces and the per-piece sums are its scratch (about 2·√K numbers a row at 256).
    label_piece: int = 256
    label_pieces: int = 8
    label_piece_min: int = 64
    #: A recomputed gradient pass (`_impl.recompute`) keeps the optimization barrier that stops
    #: XLA from merging it with the forward pass: XLA:CPU's merged kernels were slower for
    #: `logsumexp` and kept a second float32 [B, K] buffer.
    tangent_barrier: bool = True


CONFIG = CpuConfig()


def _explicitly_sharded(x: Array) -> bool:
    """Whether `x` is traced with a sharding on an Explicit mesh axis (part of its type)."""
    mesh = jax.typeof(x).sharding.mesh
    return any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def _size(x: Array) -> int | None:
    """The number of elements, or None for a symbolic shape (exported with a symbolic batch)."""
    return int(x.size) if all(isinstance(n, int) for n in x.shape) else None


def _sub_rows(k: int, cfg: CpuConfig) -> int:
    """How many pieces to cut a row of `k` into for the sums (1: no cut)."""
    if k <= cfg.max_row:
        return 1
    for g in range(2, 257):
        if k % g == 0 and k // g <= cfg.max_row:
            return g
    return 1


def row_sums(cfg: CpuConfig, xf: Array, m: Array, term) -> tuple[Array, Array]:
    """Σ_j term(xf_j, m) per row, cutting long rows into pieces; returns (sum, m).

    The `m` returned is `m` under a new name (`m + 0·sum`), for the next sum to use, so XLA fuses
    each sum with its own producer instead of writing out a shared broadcast of `m`.
    """
    k = xf.shape[-1]
    g = _sub_rows(k, cfg)
    if g == 1:
        total = jnp.sum(term(xf, m), axis=-1, keepdims=True)
    else:
        lead = xf.shape[:-1]
        xs = jax.lax.optimization_barrier(xf.reshape((-1, k // g)))
        ms = jnp.repeat(m.reshape((-1, 1)), g, axis=0)
        total = jnp.sum(term(xs, ms), axis=-1).reshape((*lead, g)).sum(-1, keepdims=True)
    return total, m + 0.0 * total


def max_shift(xm: Array, cdt: Any) -> Array:
    """The row maximum in the compute dtype, [..., 1]; the dtype's lowest finite number for a
    row with no finite maximum (a fully masked row), so `x − m` stays −inf there, not NaN.

    The reduction starts from that number rather than being fixed up with a `where`: XLA fuses
    the fix-up into every consumer's element loop (the exp pass at 1024×1000 ran 2× slower).
    """
    lowest = jnp.finfo(xm.dtype).min
    return jnp.max(xm, axis=-1, keepdims=True, initial=lowest).astype(cdt)


def _below_max(x: Array, m: Array) -> Array:
    # exp(d) where d < 0, 0 at the maximum: sign(−d) is 1 below it and 0 at it, with no select.
    d = x - m
    return jnp.exp(d) * jnp.sign(-d)


def _at_max(x: Array, m: Array) -> Array:
    return 1.0 - jnp.sign(m - x)


def row_stats(cfg: CpuConfig, xf: Array) -> tuple[Array, Array]:
    """(m, t) as `_softmax.one_pass_stats` returns them: a max pass, then two sums.

    t = (c − 1) + r, with r the mass below the maximum and c the count of entries at it, found by
    exact equality (`sign(m − x) = 0`) at any scale.
    """
    m = max_shift(xf, xf.dtype)
    r, m2 = row_sums(cfg, xf, m, _below_max)
    c, _ = row_sums(cfg, xf, m2, _at_max)
    return m, (c - 1) + r


# ---------------------------------------------------------------------------------------------
# Integer-label cross-entropy.


def not_label(shape: tuple, y: Array, offset: Array | int = 0, one: Array | float = 1.0) -> Array:
    """1.0 off the label's column and 0.0 on it, as `min(|j − y|, 1)` over column indices `j`.

    `y` is the label as a float32 [..., 1]; `offset` is added to the iota (the first column of a
    row piece); `one` is 1, passed as a per-row array by the tangent.
    """
    j = jax.lax.broadcasted_iota(jnp.float32, shape, len(shape) - 1) + offset
    return jnp.minimum(jnp.abs(j - y), one)


def _label_piece(k: int, cfg: CpuConfig) -> int | None:
    """The length of the pieces a row of `k` is cut into for the off-label sum, or None (the row
    is summed whole). The longest divisor of `k` of at most `label_piece` that leaves at least
    `label_pieces` pieces and is no shorter than `label_piece_min`; failing that, rows longer
    than `max_row` are cut as the other sums cut them."""
    top = min(cfg.label_piece, k // cfg.label_pieces)
    for piece in range(top, cfg.label_piece_min - 1, -1):
        if k % piece == 0:
            return piece
    g = _sub_rows(k, cfg)
    return k // g if g > 1 else None


def _sum_exp_off_label(cfg: CpuConfig, x: Array, m: Array, y: Array) -> Array:
    """Σ_{j ≠ y} exp(x_j − m) per row in m's dtype, [..., 1], for int labels `y` [..., 1].

    The row is cut into pieces whose plain sums of exp (no weight) are added up, skipping the
    label's piece; that piece alone is read again, gathered, and summed with the exact 0/1
    weight, whose arithmetic then runs on one piece per row instead of on every element.
    """
    piece = _label_piece(x.shape[-1], cfg)
    if piece is None:
        weight = not_label(x.shape, y.astype(jnp.float32))
        return jnp.sum(jnp.exp(x.astype(m.dtype) - m) * weight, -1, keepdims=True)
    g = x.shape[-1] // piece
    m1, y1 = m.reshape((-1, 1)), y.reshape((-1, 1))
    n = m1.shape[0]
    # Each read of the logits goes through its own barrier (sharing one, XLA writes out the
    # converted bf16 logits).
    xs = jax.lax.optimization_barrier(x.reshape((-1, piece))).astype(m.dtype)
    sums = jnp.sum(jnp.exp(xs - jnp.repeat(m1, g, axis=0)), -1).reshape((n, g))
    home = y1 // piece
    others = jnp.sum(jnp.where(jnp.arange(g)[None, :] == home, 0.0, sums), -1, keepdims=True)
    start = home[:, 0] + g * jnp.arange(n, dtype=home.dtype)
    own = jax.lax.optimization_barrier(x).reshape((-1, piece))[start].astype(m.dtype)
    weight = not_label(own.shape, (y1 - home * piece).astype(jnp.float32))
    total = others + jnp.sum(jnp.exp(own - m1) * weight, -1, keepdims=True)
    return total.reshape(m.shape)


def _shift_and_sum(cfg: CpuConfig, xm: Array, x_y: Array, y: Array, rows: Array, cdt: Any):
    """(shift, Σ_{j≠y} exp(x_j − shift)) per row, in one pass over the logits where possible.

    The label's own logit is tried as the shift first: no max pass, and the label's term is
    exactly 1. When some row in use overflows (a logit more than about 69 above its label's, or
    a non-finite label logit), the whole batch falls back to the row maximum, in a `lax.cond`
    whose outputs are per-row numbers only.
    """
    r = _sum_exp_off_label(cfg, xm, x_y, y)
    ok = jnp.all(jnp.isfinite(x_y)) & jnp.all((r < cfg.label_shift_max_sum) | ~rows[..., None])

    def by_max():
        m = max_shift(xm, cdt)
        return m, _sum_exp_off_label(cfg, xm, m, y)

    return jax.lax.cond(ok, lambda: (x_y, r), by_max)


def gather(x: Array, y: Array) -> Array:
    """x[..., y] for y of shape [..., 1], in x's dtype, read through an optimization barrier
    (otherwise one converted copy of `x` is shared by the gather and the sums, written in full).
    """
    return jnp.take_along_axis(jax.lax.optimization_barrier(x), y, axis=-1)


def is_small(cfg: CpuConfig, x: Array) -> bool:
    """Whether `x` has at most `cfg.small_max` elements (a symbolic shape is not small)."""
    size = _size(x)
    return size is not None and size <= cfg.small_max


def keeps_exp(cfg: CpuConfig, x: Array) -> bool:
    """Whether the gradient keeps exp(x − m) (float32 and wider, or small narrow logits)."""
    if jnp.dtype(x.dtype).itemsize >= 4:
        return True
    size = _size(x)
    return size is not None and size <= cfg.narrow_keep_exp_max


def label_stats(cfg: CpuConfig, xm: Array, y: Array, rows: Array, keep_exp: bool):
    """(m, x_y, r, e0) for integer-label CE: the shift, the label's logit, Σ_{j≠y} exp(x_j − m).

    `xm` [..., K] are the masked logits in their own dtype, `y` [..., 1] labels in range,
    `rows` [...] the rows in use. With `keep_exp`, e0 = exp(x − m) with the label's entry 0 is
    written once and returned for the backward pass (r is then a plain sum over it).
    """
    cdt = jnp.promote_types(xm.dtype, jnp.float32)
    x_y = gather(xm, y).astype(cdt)
    yf = y.astype(jnp.float32)
    if keep_exp:
        m = max_shift(xm, cdt)
        e = jnp.exp(xm.astype(cdt) - m)
        if _explicitly_sharded(xm) or is_small(cfg, xm):
            # The 0/1 weight: a scatter cannot infer its output sharding on an Explicit mesh, and
            # on small arrays the scatters' extra kernels cost more than the arithmetic.
            e0 = e * not_label(xm.shape, yf)
        else:
            # The label's entry set to 0 by a B-element scatter in place: the 0/1 weight costs
            # its float iota arithmetic on every element (1024×1000 value_and_grad: the exp
            # pass 1.1 ms with it, 0.3 ms without).
            k = e.shape[-1]
            flat = e.reshape((-1, k))
            rows = jax.lax.broadcasted_iota(y.dtype, (flat.shape[0],), 0)
            flat = flat.at[rows, y.reshape(-1)].set(0.0, unique_indices=True)
            e0 = flat.reshape(e.shape)
        r, _ = row_sums(cfg, e0, m, lambda e, _m: e)
        return m, x_y, r, e0
    size = _size(xm)
    if size is not None and size <= cfg.label_shift_min_size:
        m = max_shift(xm, cdt)
        return m, x_y, _sum_exp_off_label(cfg, xm, m, y), None
    m, r = _shift_and_sum(cfg, xm, x_y, y, rows, cdt)
    return m, x_y, r, None


def label_tangent(xm: Array, y: Array, m: Array, coef: Array, g_y: Array) -> Array:
    """The gradient row g = coef·exp(x − m) off the label and g_y on it, exp recomputed.

    The label's entry comes in through the exact 0/1 weight `not_label` in the same pass (a
    gather's transpose, a scatter into zeros, would be a second [..., K] buffer). `one` is a
    per-row 1: a broadcast constant shared by two fusions is written out in full.
    """
    one = 1.0 + 0.0 * coef
    off = not_label(xm.shape, y.astype(jnp.float32), one=one)
    return coef * (jnp.exp(xm.astype(coef.dtype) - m) * off) + g_y * (one - off)
