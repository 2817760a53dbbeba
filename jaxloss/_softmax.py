"""Log-sum-exp, log-softmax and softmax, computed so that the result near probability 1 is exact.

The shared kernel is `max_and_log_sum`: for a row `x` it returns the row maximum `m` and
`log_s = log Σ_j exp(x_j − m)` such that `logsumexp(x) = m + log_s`. Two choices matter:

* `log_s` is formed as `log1p((c − 1) + r)`, where `c` sums `exp(x_j − m)` over the entries at
  the maximum (1 per exact tie) and `r` over the others. Summing the maximum's own
  `exp(0) = 1` first and taking `log` afterwards would round `1 + r` and lose every digit of `r`
  once `r < 1e-7`, which is exactly the regime of a confident classifier (`p_y = 1/(1 + r)`).
* `m` and `log_s` are kept apart rather than added into one log-sum-exp: `exp((x − m) − log_s)`
  is exact to rounding for any logit scale, while `exp(x − lse)` inherits the rounding error of
  `lse`, which grows with `|m|` (about 6e-5 relative at logits of 1000 in float32).

The pair has its own `custom_jvp` (the shift is a constant; d log-sum-exp = softmax·dx), so
derivatives, second order included, are exact also at ties.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxloss import _checks

# "Is this entry the row maximum?" is asked with arithmetic, min(|d|, tol)/tol, which is 0 at
# the maximum and 1 for |d| ≥ tol, rather than with `d == 0` and a `select`: XLA:CPU fuses a
# reduction with an arithmetic producer but writes a `select` producer out as a full [..., K]
# buffer first (4× slower at 2048×32000). `tol` is a few ulps of the maximum, because XLA
# recomputes `xf` in each fusion and may round it differently there (an FMA-contracted `x / T`,
# say). An entry
# within `tol` of the maximum is split between the sum (weight w, exactly exp(d)) and the count
# (weight 1 − w, exp(d) by its quadratic Taylor polynomial, off by |d|³/6, below 1e-8 for
# logits under 1e4 in size).
_TIE_ULPS = 2.0**-22
_TIE_FLOOR = 2.0**-60  # the window near 0, large enough that exp(d)·tol never underflows


_MAX_ROW = 32768


def _sub_rows(k: int) -> int:
    """How many pieces to cut a row of `k` into for the sums (1: no cut).

    XLA:CPU's fused reduction runs about 7× slower per element on rows longer than about 32K
    (measured: exp-and-sum over 2048×131072 in 674 ms as is, 91 ms as 8192×32768 rows).
    """
    if k <= _MAX_ROW:
        return 1
    for g in range(2, 257):
        if k % g == 0 and k // g <= _MAX_ROW:
            return g
    return 1


def row_sums(xf: Array, m: Array, tol: Array, term) -> tuple[Array, Array]:
    """Σ_j term(xf_j, m, tol) per row, cutting long rows into pieces; returns (sum, m).

    `term` gets `xf` and per-row `m`, `tol` broadcast to it. The `m` returned is `m` under a
    new name (`m + 0·sum`), for the next sum to use, so XLA fuses each sum with its own
    producer instead of writing out a shared broadcast of `m`.
    """
    k = xf.shape[-1]
    g = _sub_rows(k)
    if g == 1:
        total = jnp.sum(term(xf, m, tol), axis=-1, keepdims=True)
    else:
        lead = xf.shape[:-1]
        xs = xf.reshape((-1, k // g))
        ms = jnp.repeat(m.reshape((-1, 1)), g, axis=0)
        ts = jnp.repeat(tol.reshape((-1, 1)), g, axis=0)
        total = jnp.sum(term(xs, ms, ts), axis=-1).reshape((*lead, g)).sum(-1, keepdims=True)
    return total, m + 0.0 * total


def _below_top(x: Array, m: Array, tol: Array) -> Array:
    # exp(d)·min(|d|, tol): exp(d)·tol for entries below the window, 0 at the maximum.
    d = x - m
    return jnp.exp(d) * jnp.minimum(jnp.abs(d), tol)


def _at_top(x: Array, m: Array, tol: Array) -> Array:
    # 2·(tol − |e|)⁺ · exp(e), with exp(e) by its quadratic Taylor polynomial (off by |e|³/6,
    # below 1e-8 inside the window). Clamping e first keeps -inf (masked entries) out of the
    # arithmetic, where 0·inf would be NaN. 2·max(a, 0) is spelled a + |a|, without a constant.
    e = x - m
    a = tol - jnp.abs(jnp.maximum(e, -2.0 * tol))
    e = jnp.maximum(e, -1.0)
    return (a + jnp.abs(a)) * (1.0 + e * (1.0 + 0.5 * e))


def _shift_and_log_sum_impl(xf: Array) -> tuple[Array, Array]:
    m = jnp.max(xf, axis=-1, keepdims=True, initial=-jnp.inf)
    # A row of -inf (fully masked) has no finite max; shifting by 0 keeps it -inf, not NaN.
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    tol = jnp.maximum(jnp.abs(m) * _TIE_ULPS, _TIE_FLOOR)
    # r = Σ exp(d) over entries below the maximum; c = Σ exp(d) over those at it (1 per exact
    # tie). The weights min(|d|, tol)/tol and (tol − |d|)⁺/tol sum to 1 for every entry, are
    # exactly 1 or 0 outside the window, and are written without constants shared between the
    # two sums (a shared broadcast constant, or a `clamp`, is written out in full by XLA:CPU).
    # |d| rather than −d: an entry rounded slightly above `m` in another fusion counts as a tie.
    r, m2 = row_sums(xf, m, tol, _below_top)
    r = r / tol
    tol2 = tol + 0.0 * r
    c, _ = row_sums(xf, m2, tol2, _at_top)
    c = c / (2.0 * tol2)
    some = c > 0.5
    rest = jnp.where(some, (c - 1) + r, jnp.zeros_like(r))
    return m, jnp.where(some, jnp.log1p(rest), -jnp.inf)


_shift_and_log_sum = jax.custom_jvp(_shift_and_log_sum_impl)


@_shift_and_log_sum.defjvp
def _shift_and_log_sum_jvp(primals, tangents):
    # The shift m is a constant (any shift gives the same log-sum-exp), and
    # d(log Σ exp(x − m)) = Σ softmax(x)·dx. Stating this keeps derivatives exact at ties,
    # where differentiating the tie count's arithmetic would subtract two numbers of size S.
    (xf,), (tx,) = primals, tangents
    m, log_s = _shift_and_log_sum(xf)
    p = jnp.exp((xf - m) - finite_log_sum(log_s))
    return (m, log_s), (jnp.zeros_like(m), jnp.sum(p * tx, axis=-1, keepdims=True))


def max_and_log_sum(xf: Array) -> tuple[Array, Array, Array]:
    """For `xf` of shape [..., K] (masked entries already -inf) return (m, d, log_s).

    m: [..., 1], the row maximum, or 0 for a row with no finite maximum.
    d: [..., K], `xf − m`.
    log_s: [..., 1], `log Σ exp(d)`; −inf for a row that is entirely −inf.
    """
    m, log_s = _shift_and_log_sum(xf)
    return m, xf - m, log_s


def finite_log_sum(log_s: Array) -> Array:
    """`log_s` with the −inf of an all −inf row replaced by 0, so `d − log_s` stays −inf."""
    return jnp.where(log_s == -jnp.inf, jnp.zeros_like(log_s), log_s)


def _prepare(x: Any, axis: Any, where: Any, fn: str) -> tuple[Array, tuple, Array | None]:
    """Check arguments; return x (classes last, compute dtype, masked to -inf), axes, mask."""
    _checks.check_floating(x, "x", fn)
    x = jnp.asarray(x)
    axes = _checks.canonicalize_axes(axis, x.ndim, "x", x.shape, fn)
    xf = _checks.classes_last(x, axes).astype(_checks.compute_dtype(x.dtype))
    mask = None
    if where is not None:
        _checks.check_where(where, x.shape, x.shape, fn)
        mask = _checks.classes_last(jnp.broadcast_to(where, x.shape), axes)
        xf = jnp.where(mask, xf, -jnp.inf)
    return xf, axes, mask


def logsumexp(x: Any, axis: Any = -1, where: Any = None, keepdims: bool = False) -> Array:
    r"""Log of the sum of exponentials, :math:`\log \sum_j e^{x_j}`, computed stably.

    .. math::
        \operatorname{LSE}(x) = m + \log\Big(\sum_j e^{x_j - m}\Big), \qquad m = \max_j x_j

    Args:
        x: array of any shape ``[..., K, ...]`` with a floating dtype.
        axis: the axis or tuple of axes to reduce over.
        where: optional boolean mask broadcastable to ``x.shape``; masked entries are left out
            of the sum (as if they were ``-inf``).
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
    out = (m + log_s)[..., 0]
    if keepdims:
        shape = tuple(1 if a in axes else n for a, n in enumerate(np.shape(x)))
        out = out.reshape(shape)
    return out


def _restore(y: Array, x: Any, axes: tuple, mask: Array | None, fill: float) -> Array:
    if mask is not None:
        y = jnp.where(mask, y, fill)
    return _checks.classes_restore(y, axes, np.shape(x)).astype(jnp.result_type(x))


def _log_softmax_rows_impl(xf: Array) -> Array:
    _, d, log_s = max_and_log_sum(xf)
    return d - finite_log_sum(log_s)


_log_softmax_rows = jax.custom_jvp(_log_softmax_rows_impl)


def _log_softmax_rows_jvp(primals, tangents):
    (xf,), (tx,) = primals, tangents
    out = _log_softmax_rows(xf)
    # Recompute exp(out) in the backward pass instead of saving it: the residual is the output.
    tan = jax.checkpoint(_log_softmax_tangent)(out, tx)
    return out, tan


_log_softmax_rows.defjvp(_log_softmax_rows_jvp)


def _log_softmax_tangent(out: Array, tx: Array) -> Array:
    return tx - jnp.sum(jnp.exp(out) * tx, axis=-1, keepdims=True)


def log_softmax(x: Any, axis: Any = -1, where: Any = None) -> Array:
    r"""Logarithm of the softmax, :math:`x_j - \operatorname{LSE}(x)`.

    .. math::
        \log \operatorname{softmax}(x)_j = (x_j - m) - \log \sum_k e^{x_k - m}

    Args:
        x: logits ``[..., K, ...]`` with a floating dtype.
        axis: the class axis or tuple of axes.
        where: optional boolean mask broadcastable to ``x.shape``; masked entries are left out
            of the normalisation and come back as ``-inf``.

    Returns:
        An array of ``x``'s shape and dtype.

    Numerics:
        Computed in float32 for bf16/f16 inputs, then cast back. The largest entry of a
        confident row is ``-log1p(r)``, exact to rounding even when it is about ``-1e-9``. The
        gradient is the hand-derived ``t − softmax(x)·Σ t``, recomputing ``softmax`` from the
        output in the backward pass, so only the output is kept for it. ``-inf`` inputs give
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


def _softmax_rows_impl(xf: Array) -> Array:
    _, d, log_s = max_and_log_sum(xf)
    return jnp.exp(d - finite_log_sum(log_s))


_softmax_rows = jax.custom_jvp(_softmax_rows_impl)


def _softmax_rows_jvp(primals, tangents):
    (xf,), (tx,) = primals, tangents
    p = _softmax_rows(xf)
    return p, p * (tx - jnp.sum(p * tx, axis=-1, keepdims=True))


_softmax_rows.defjvp(_softmax_rows_jvp)


def softmax(x: Any, axis: Any = -1, where: Any = None) -> Array:
    r"""The softmax, :math:`e^{x_j} / \sum_k e^{x_k}`, a probability vector along ``axis``.

    .. math::
        \operatorname{softmax}(x)_j = \exp\Big((x_j - m) - \log \sum_k e^{x_k - m}\Big)

    Args:
        x: logits ``[..., K, ...]`` with a floating dtype.
        axis: the class axis or tuple of axes.
        where: optional boolean mask broadcastable to ``x.shape``; masked entries get
            probability 0.

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
