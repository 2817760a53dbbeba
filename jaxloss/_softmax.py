"""Log-sum-exp, log-softmax and softmax, exact near probability 1, NaN in and NaN out.

Every function here rests on one pair of per-row numbers, `row_stats`: the row maximum `m` and
`t = (c − 1) + r`, where `c` counts the entries equal to `m` and `r = Σ_{x_j < m} exp(x_j − m)`
is the mass below it. Then

    log Σ_j exp(x_j) = m + log_s,    log_s = log1p(t),

and two choices matter for precision:

* The maximum's own `exp(0) = 1` is kept out of the rounded sum: `log(1 + r)` would round `1 + r`
  and lose every digit of `r` once `r < 1e-7`, exactly the regime of a confident classifier
  (`p_max = 1/(1 + r)`). Ties are counted exactly, whatever the scale of the logits.
* `m` and `log_s` are kept apart rather than added into one log-sum-exp: `exp((x − m) − log_s)`
  is exact to rounding at any logit scale, while `exp(x − lse)` inherits the rounding of `lse`.

The portable `row_stats` is one pass over the row: a single variadic reduction of
(max, rest) pairs, so the logits are read once (what TPU compiles, and GPU for long rows).
XLA:CPU runs variadic reductions several times slower than plain ones, so on CPU the same
numbers come from `jaxloss._xla_cpu.row_stats`; XLA:GPU fuses a max-then-sums normalization of
a short row into one kernel, so short rows on GPU take `jaxloss._xla_gpu.row_stats` (see
`jaxloss._impl`).

NaN anywhere in a row gives NaN; a `+inf` entry gives a `+inf` log-sum-exp; a row that is all
`-inf` (or fully masked) gives `-inf`, and its softmax is all zeros.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.typing import ArrayLike

from jaxloss import _checks, _impl, _xla_cpu, _xla_gpu


def _merge(a: tuple, b: tuple) -> tuple:
    """Combine two (max, rest) pairs; associative and commutative.

    `rest` is Σ exp(x_j − max) − 1: the count of entries at the maximum less one, plus the mass
    below it. The maximum's own 1 is never added into it, so a confident row keeps every digit
    of its small mass. One exp per merge: the smaller side is rescaled by exp(−|m₁ − m₂|). Equal
    maxima (−inf included) add without an exp, so −inf − −inf never occurs; a NaN maximum fails
    both comparisons and makes the rest NaN. Never differentiated (`shift_and_log_sum` states
    its derivative), so `maximum` and `abs` have no tie to split.
    """
    m1, t1 = a
    m2, t2 = b
    scale = jnp.exp(-jnp.abs(m1 - m2))
    same, first = m1 == m2, m1 > m2
    apart = jnp.where(first, t1 + (t2 + 1) * scale, t2 + (t1 + 1) * scale)
    t = jnp.where(same, (t1 + t2) + 1, apart)
    return jnp.maximum(m1, m2), t


def one_pass_stats(xf: Array) -> tuple[Array, Array]:
    """The portable `row_stats`: one variadic reduction of (max, rest) pairs over the last axis."""
    # An entry starts as (x, 0); a −inf entry as (−inf, −1), i.e. no mass at all, so an all −inf
    # row ends as (−inf, −1) and its log_s is log1p(−1) = −inf.
    rest = jnp.where(xf == -jnp.inf, -1.0, 0.0).astype(xf.dtype)
    init = (jnp.array(-jnp.inf, xf.dtype), jnp.array(-1, xf.dtype))
    m, t = lax.reduce((xf, rest), init, _merge, (xf.ndim - 1,))
    # An all −inf row shifts by 0 (the other kernels by the lowest finite number): x − m stays
    # −inf there, not NaN.
    m = jnp.where(m == -jnp.inf, jnp.zeros_like(m), m)
    return m[..., None], t[..., None]


def row_stats(xf: Array, fused_rows: bool = False) -> tuple[Array, Array]:
    """(m, t) per row of `xf` [..., K], each [..., 1]: the shift and Σ_j exp(x_j − m) − 1.

    `m` is the row maximum; for an all −inf row, a finite number (so `x − m` stays −inf) and
    `t = −1`. `t` is formed without adding the maximum's own 1 (`(count at max − 1) + mass
    below`), so `log_s = log1p(t)` is exact to rounding when the row is confident. A NaN in the
    row makes `t` NaN; a `+inf` makes `m` +inf (`logsumexp` turns that into +inf).

    `fused_rows`: the caller normalises the row right after (a softmax, without a gradient), the
    pattern XLA:GPU fuses into one kernel for short rows; there the XLA:GPU kernel is used.
    """
    xla_gpu = (lambda cfg, x: _xla_gpu.row_stats(cfg, x, one_pass_stats)) if fused_rows else None
    return _impl.dispatch(one_pass_stats, xf, xla_cpu=_xla_cpu.row_stats, xla_gpu=xla_gpu)


def _shift_and_log_sum_impl(fused_rows: bool, x: Array) -> tuple[Array, Array]:
    m, t = row_stats(x.astype(_checks.compute_dtype(x.dtype)), fused_rows)
    return m, jnp.log1p(t)


shift_and_log_sum = jax.custom_jvp(_shift_and_log_sum_impl, nondiff_argnums=(0,))
"""(m, log_s) of `x` [..., K] in any float dtype (computed in at least float32), each [..., 1]."""


def _lse_tangent(x: Array, m: Array, log_s: Array, tx: Array) -> Array:
    p = jnp.exp((x.astype(m.dtype) - m) - finite_log_sum(log_s))
    return jnp.sum(p * tx.astype(m.dtype), axis=-1, keepdims=True)


@shift_and_log_sum.defjvp
def _shift_and_log_sum_jvp(fused_rows, primals, tangents):
    # The shift is a constant (any shift gives the same log-sum-exp), and
    # d(log Σ exp(x − m)) = Σ softmax(x)·dx. Stating this keeps derivatives exact at ties. The
    # tangent is checkpointed: the backward pass reads the logits (in their own dtype) once more
    # and keeps no softmax. With a gradient the statistics are the one-pass ones everywhere.
    del fused_rows
    (x,), (tx,) = primals, tangents
    m, log_s = shift_and_log_sum(False, x)
    return (m, log_s), (jnp.zeros_like(m), _impl.recompute(_lse_tangent, x, m, log_s, tx))


def max_and_log_sum(x: Array, fused_rows: bool = False) -> tuple[Array, Array, Array]:
    """For `x` of shape [..., K] (masked entries already -inf) return (m, d, log_s).

    m: [..., 1], the shift (the row maximum, or a finite number for an all −inf row).
    d: [..., K], `x − m` in the compute dtype (at least float32).
    log_s: [..., 1], `log Σ exp(d)`; −inf for a row that is entirely −inf, NaN for a row
    holding NaN (and for one holding +inf, on some kernels). `fused_rows`: see `row_stats`.
    """
    m, log_s = shift_and_log_sum(fused_rows, x)
    return m, x.astype(m.dtype) - m, log_s


def finite_log_sum(log_s: Array) -> Array:
    """`log_s` with the −inf of an all −inf row replaced by −1, so `d − log_s` stays −inf.

    Every other row has log_s ≥ 0 (its sum includes exp(0) = 1), so this is `max(log_s, −1)`:
    arithmetic, not a select, which XLA:GPU keeps inside its fused row kernel; NaN stays NaN.
    The bound is below 0 so that the maximum never ties on a real row: a saturated row (every
    other exp underflows) has log_s = 0 exactly, and JAX splits a maximum's derivative between
    equal arguments, which halved the gradient through `log_s` there.
    """
    return jnp.maximum(log_s, -1.0)


def _prepare(x: Any, axis: Any, where: Any, fn: str) -> tuple[Array, tuple, Array | None]:
    """Check arguments; return x (classes last, its own dtype, masked to -inf), axes, mask."""
    _checks.check_floating(x, "x", fn)
    x = jnp.asarray(x)
    axes = _checks.canonicalize_axes(axis, x.ndim, "x", x.shape, fn)
    _checks.check_static_classes(x.shape, axes, "x", fn)
    # Kept in its own dtype: the kernels convert inside their fusions, and the backward pass
    # rereads the narrow logits rather than a float32 copy.
    xf = _checks.classes_last(x, axes)
    mask = None
    if where is not None:
        mask = _checks.classes_last(_checks.full_mask(where, x.shape, axes, fn), axes)
        xf = jnp.where(mask, xf, -jnp.inf)
    return xf, axes, mask


@_checks.public
def logsumexp(
    x: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    keepdims: bool = False,
) -> Array:
    r"""Log of the sum of exponentials, :math:`\log \sum_j e^{x_j}`, computed stably.

    In plain text: LSE(x) = m + log Σ_j exp(x_j − m), m = max_j x_j.

    .. math::
        \operatorname{LSE}(x) = m + \log\Big(\sum_j e^{x_j - m}\Big), \qquad m = \max_j x_j

    Args:
        x: array of any shape ``[..., K, ...]`` with a floating dtype.
        axis: the axis or tuple of axes to reduce over.
        where: optional boolean mask with the rank of ``x`` (entries to include; masked ones
            are left out of the sum, as if ``-inf``), or shaped like the result without
            ``keepdims`` (rows to include; a masked row is ``-inf``). ``[1, K]`` masks classes.
        keepdims: keep the reduced axes with size 1.

    Returns:
        ``x``'s shape without ``axis`` (or with size-1 axes if ``keepdims``), in float32 for
        bf16/f16 inputs and in ``x``'s dtype otherwise.

    Numerics:
        Exact to rounding for any scale: shifting by the maximum keeps every ``exp`` in
        ``(0, 1]``, and the maximum's own term is kept out of the rounded sum, so
        ``LSE(x) − max(x)`` keeps full relative precision even when it is below 1e-7. An empty
        or all ``-inf`` (or fully masked) slice gives ``-inf``; its gradient is 0.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> print(jaxloss.logsumexp(jnp.array([[0.0, 0.0], [1000.0, -jnp.inf]])))
        [   0.6931 1000.    ]
    """
    fn = "logsumexp"
    xf, axes, _ = _prepare(x, axis, where, fn)
    m, _, log_s = max_and_log_sum(xf)
    # A +inf entry: the sum is +inf (the XLA:CPU/GPU kernels shift by it and get NaN).
    out = jnp.where(m == jnp.inf, jnp.inf, m + log_s)[..., 0]
    if keepdims:
        shape = tuple(1 if a in axes else n for a, n in enumerate(np.shape(x)))
        out = out.reshape(shape)
    return out


def _restore(y: Array, x: Any, axes: tuple, mask: Array | None, fill: float) -> Array:
    if mask is not None:
        y = jnp.where(mask, y, fill)
    return _checks.classes_restore(y, axes, np.shape(x)).astype(jnp.result_type(x))


def _log_softmax_rows(x: Array) -> Array:
    # Differentiated through `shift_and_log_sum`'s rule: d out = dx − Σ softmax·dx, with softmax
    # recomputed from the logits in the backward pass (nothing of size [..., K] is kept).
    _, d, log_s = max_and_log_sum(x, fused_rows=True)
    return d - finite_log_sum(log_s)


@_checks.public
def log_softmax(
    x: ArrayLike, axis: int | tuple[int, ...] = -1, where: ArrayLike | None = None
) -> Array:
    r"""Logarithm of the softmax, :math:`x_j - \operatorname{LSE}(x)`.

    In plain text: log softmax(x)_j = (x_j − m) − log Σ_k exp(x_k − m).

    .. math::
        \log \operatorname{softmax}(x)_j = (x_j - m) - \log \sum_k e^{x_k - m}

    Args:
        x: logits ``[..., K, ...]`` with a floating dtype.
        axis: the class axis or tuple of axes.
        where: optional boolean mask with the rank of ``x`` (masked entries are left out of the
            normalisation and come back as ``-inf``), or shaped like the batch (whole rows).

    Returns:
        An array of ``x``'s shape and dtype.

    Numerics:
        Computed in float32 for bf16/f16 inputs, then cast back. The largest entry of a
        confident row is ``-log1p(r)``, exact to rounding even when it is about ``-1e-9``. The
        gradient is the hand-derived ``t − softmax(x)·Σ t``, recomputing ``softmax`` from the
        logits in the backward pass, so only per-row numbers are kept for it. ``-inf`` inputs give
        ``-inf`` outputs with finite gradients; a fully masked row is all ``-inf``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> out = jaxloss.log_softmax(jnp.array([20.0, 0.0, -20.0]))
        >>> print(out)
        [ -0. -20. -40.]
        >>> print(out[0])  # −log1p(e⁻²⁰ + e⁻⁴⁰), kept exactly; log(1 + r) would round to 0
        -2.0611537e-09
    """
    xf, axes, mask = _prepare(x, axis, where, "log_softmax")
    return _restore(_log_softmax_rows(xf), x, axes, mask, -jnp.inf)


def _softmax_rows_impl(xf: Array, fused_rows: bool = True) -> Array:
    _, d, log_s = max_and_log_sum(xf, fused_rows)
    return jnp.exp(d - finite_log_sum(log_s))


_softmax_rows = jax.custom_jvp(_softmax_rows_impl, nondiff_argnums=(1,))


def _softmax_rows_jvp(fused_rows, primals, tangents):
    del fused_rows
    (xf,), (tx,) = primals, tangents
    p = _softmax_rows_impl(xf, False)
    return p, p * (tx - jnp.sum(p * tx, axis=-1, keepdims=True))


_softmax_rows.defjvp(_softmax_rows_jvp)


@_checks.public
def softmax(
    x: ArrayLike, axis: int | tuple[int, ...] = -1, where: ArrayLike | None = None
) -> Array:
    r"""The softmax, :math:`e^{x_j} / \sum_k e^{x_k}`, a probability vector along ``axis``.

    In plain text: softmax(x)_j = exp((x_j − m) − log Σ_k exp(x_k − m)).

    .. math::
        \operatorname{softmax}(x)_j = \exp\Big((x_j - m) - \log \sum_k e^{x_k - m}\Big)

    Args:
        x: logits ``[..., K, ...]`` with a floating dtype.
        axis: the class axis or tuple of axes.
        where: optional boolean mask with the rank of ``x`` (masked entries get probability 0),
            or shaped like the batch (whole rows).

    Returns:
        An array of ``x``'s shape and dtype whose slices along ``axis`` sum to 1 (0 for a fully
        masked slice).

    Numerics:
        Computed in float32 for bf16/f16 inputs. The gradient is the hand-derived
        ``p ⊙ (t − Σ p t)``, keeping only the output for the backward pass. ``-inf`` logits
        get probability 0 with a finite (zero) gradient; a fully masked slice is all zeros.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> print(jaxloss.softmax(jnp.array([0.0, jnp.log(3.0), -jnp.inf])))
        [0.25 0.75 0.  ]
    """
    xf, axes, mask = _prepare(x, axis, where, "softmax")
    return _restore(_softmax_rows(xf), x, axes, mask, 0.0)
