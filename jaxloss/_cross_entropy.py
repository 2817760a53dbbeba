"""Softmax cross-entropy with a hand-derived gradient, and negative log-likelihood.

The gradient of cross-entropy with respect to the logits is `A·softmax(x) − t` per row, where
`t` is the (weighted, smoothed) target and `A = Σ_j t_j` (plus the z-loss term `2·z·lse`). We
state it as a `custom_jvp` rule, whose tangent map is linear, so forward mode (`jvp`, `jacfwd`,
`hessian`) works and reverse mode is its transpose.

Integer labels (the hot path) keep the label out of the row's sum: with m the row maximum,
r = Σ_{j≠y} exp(x_j − m), the loss is `log1p(expm1(d_y) + r) − d_y` and the label's gradient
entry is `A·expm1(d_y − log_s) + (A − c_y)`. Both are exact to rounding when the label holds
almost all the mass (r ≪ 1e-7), where `log(Σ exp)` and `p_y − 1` would lose every digit, and
no tie count or dominance test is needed. For float32 (and wider) logits the rule writes
exp(x − m) once, sets the label's entry to 0 in place, sums it, and the backward pass scales
that same buffer in place: one exp pass and Optax's memory traffic; so do bf16/f16 logits of
up to 2^22 elements. For larger bf16/f16 logits the tangent is `jax.checkpoint`ed instead and
recomputes exp from the narrow logits, which moves fewer bytes than a float32 residual.
Forward-only calls shift by the label's own logit (one fused pass over the logits, no max),
falling back to the maximum when a row would overflow.

Dense targets use the shared exact log-sum-exp (`_softmax.max_and_log_sum`); there, when one
class holds more than 3/4 of the mass, its `p − 1` is `expm1(d − log_s)`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.custom_derivatives import SymbolicZero

from jaxloss import _checks
from jaxloss._softmax import _sub_rows, finite_log_sum, max_and_log_sum, row_sums

# A class "dominates" its row when its probability exceeds 3/4: only then can p − 1 cancel, and
# every other logit is then at least log 3 below it, far outside any rounding difference.
_LOG_DOMINANT = math.log(0.75)


def _prob_minus_top(d: Array, log_s: Array, d_top: Array, top: Array) -> Array:
    """`p_j − [top_j]`, exact both for small `p_j` and for `p_j` near 1.

    `top` marks the dominant entry (probability above 1/2) of rows that have one, and `d_top`
    [B, 1] is that entry's `d` (0 in value). Taking `expm1(d_top − log_s)` per row rather than per
    element keeps the extra transcendental off the [B, K] pass, and passing `d_top` (rather than
    the constant 0) keeps its derivative, for second-order autodiff.
    """
    log_s = finite_log_sum(log_s)
    return jnp.where(top, jnp.expm1(d_top - log_s), jnp.exp(d - log_s))


# ---------------------------------------------------------------------------------------------
# Integer labels.

# Labels index a float32 iota in the fused passes (see `_not_label`), exact below 2^24 classes.
_MAX_FLOAT_INDEX = 2**24


def _not_label(shape: tuple, y: Array, offset: Array | int = 0, one: Array | float = 1.0) -> Array:
    """1.0 off the label's column and 0.0 on it, as `min(|j − y|, 1)` over column indices `j`.

    `y` is the label as a float32 [..., 1]; `offset` is added to the iota (the first column of a
    row piece). Arithmetic rather than `j == y` and a `select`: XLA:CPU fuses an arithmetic
    producer into a reduction but writes a `select` producer out in full (measured: 205 ms vs
    68 ms for the exp-sum over 4096×32000). `one` is 1, passed as a per-row array by the
    tangent: a broadcast constant shared by two fusions is written out in full by XLA:CPU.
    """
    j = jax.lax.broadcasted_iota(jnp.float32, shape, len(shape) - 1) + offset
    return jnp.minimum(jnp.abs(j - y), one)


def _sum_exp_off_label(x: Array, m: Array, y: Array) -> Array:
    """Σ_{j ≠ y} exp(x_j − m) per row in m's dtype, [..., 1]; long rows are cut into pieces.

    `x` comes in its own dtype; the cut goes through an optimization barrier, so the fusion
    reads a plain [N·G, K/G] array (a reshape inside the fusion made the bf16 sum 5× slower on
    XLA:CPU: 471 ms vs 76 ms at 2048×131072).
    """
    k = x.shape[-1]
    g = _sub_rows(k)
    if g == 1:
        return jnp.sum(jnp.exp(x.astype(m.dtype) - m) * _not_label(x.shape, y), -1, keepdims=True)
    lead, piece = x.shape[:-1], k // g
    xs = jax.lax.optimization_barrier(x.reshape((-1, piece))).astype(m.dtype)
    ms = jnp.repeat(m.reshape((-1, 1)), g, axis=0)
    ys = jnp.repeat(y.reshape((-1, 1)), g, axis=0)
    starts = jnp.tile(jnp.arange(g, dtype=jnp.float32) * piece, xs.shape[0] // g)[:, None]
    total = jnp.sum(jnp.exp(xs - ms) * _not_label(xs.shape, ys, starts), -1)
    return total.reshape((*lead, g)).sum(-1, keepdims=True)


def _max_shift(xm: Array, cdt: Any) -> Array:
    """The row maximum in the compute dtype, [..., 1]; the dtype's lowest finite number for a
    row with no finite maximum (a fully masked row), so `x − m` stays −inf there, not NaN.

    The reduction starts from that number rather than being fixed up with a `where`: XLA fuses
    the fix-up into every consumer's element loop (the exp pass at 1024×1000 ran 2× slower).
    """
    lowest = jnp.finfo(xm.dtype).min
    return jnp.max(xm, axis=-1, keepdims=True, initial=lowest).astype(cdt)


# Up to this many logits the forward pass shifts by the max without trying the label first: a
# `lax.cond` costs tens of microseconds of dispatch, more than the max pass it saves (measured
# at 128×10: 51 µs with the cond, Optax 16 µs).
_SMALL_NO_COND = 2**16

# Above this, exp(−log_s) nears float32's smallest normal number (and is flushed to 0 on CPUs).
_MAX_LABEL_SHIFTED_SUM = 2.0**100


def _shift_and_sum(xm: Array, x_y: Array, y: Array, rows: Array, cdt: Any) -> tuple[Array, Array]:
    """(shift, Σ_{j≠y} exp(x_j − shift)) per row, in one pass over the logits where possible.

    The label's own logit is tried as the shift first: then no max pass is needed, the label's
    term is exactly 1 and the loss is `log1p(r)`. When some row among `rows` overflows (a logit
    more than about 69 above its label's, or any −inf/+inf label logit), the whole batch falls back
    to the row maximum, in a `lax.cond` whose outputs are per-row numbers only. Under `vmap` the
    cond becomes a select and both branches run.
    """
    yf = y.astype(jnp.float32)
    r = _sum_exp_off_label(xm, x_y, yf)
    # Every row needs a finite shift (a NaN would reach the gradient through 0·NaN, even where
    # the row is ignored); only the rows in use need a sum that fits (NaN compares False).
    ok = jnp.all(jnp.isfinite(x_y)) & jnp.all((r < _MAX_LABEL_SHIFTED_SUM) | ~rows[..., None])

    def by_label():
        return x_y, r

    def by_max():
        m = _max_shift(xm, cdt)
        return m, _sum_exp_off_label(xm, m, yf)

    return jax.lax.cond(ok, by_label, by_max)


def _int_forward(eps, zl, x, labels, valid, mask, class_w, keep_exp=False):
    """Per-example loss and the per-row numbers the tangent needs.

    The row is shifted by m (the row maximum, or the label's own logit, see `_shift_and_sum`),
    and the label is kept out of the sum: r = Σ_{j≠y} exp(x_j − m), so the loss is
    log(exp(d_y) + r) − d_y with d_y = x_y − m, written `log1p(expm1(d_y) + r) − d_y`. When the
    label is the shift (d_y = 0, always the case when the loss is small) this is `log1p(r)`,
    exact to rounding even for r = 1e-20; no count of ties and no second pass are needed.

    With `keep_exp`, exp(x − m) is written out once, the label's entry is set to 0 in place and
    r is a plain sum over it; the array is returned for the tangent to scale in place (one exp
    pass for value and gradient together). Without, r is one fused pass that never writes it.
    """
    k = x.shape[-1]
    cdt = _checks.compute_dtype(x.dtype)
    xm = x if mask is None else jnp.where(mask, x, -jnp.inf)
    if mask is not None:
        valid = valid & jnp.any(mask, axis=-1)
    in_range = (labels >= 0) & (labels < k)
    y = jnp.where(in_range, labels, 0)[..., None]
    x_y = _gather(xm, y).astype(cdt)
    e0 = None
    if keep_exp:
        m = _max_shift(xm, cdt)
        e0 = _set_label(jnp.exp(xm.astype(cdt) - m), y, 0.0)
        r, _ = row_sums(e0, m, m, lambda e, _m, _t: e)
    elif x.size <= _SMALL_NO_COND:
        m = _max_shift(xm, cdt)
        r = _sum_exp_off_label(xm, m, y.astype(jnp.float32))
    else:
        m, r = _shift_and_sum(xm, x_y, y, valid & in_range, cdt)
    d_y = x_y - m
    log_s = jnp.log1p(jnp.expm1(d_y) + r)  # −inf only for a row that is entirely −inf
    nll = log_s - d_y
    w_y = jnp.ones_like(d_y) if class_w is None else class_w.astype(cdt)[y]
    lse = m + log_s
    c_lab = (1.0 - eps) * w_y
    loss = c_lab * nll
    a = c_lab
    smooth = None
    if eps:
        xf = xm.astype(cdt)
        # Class weights as a [1, ..., 1, K] row, so every broadcast against [..., K] is explicit.
        row = (1,) * (xf.ndim - 1) + (k,)
        cw = jnp.ones(row, cdt) if class_w is None else class_w.astype(cdt).reshape(row)
        keep = (cw != 0) if mask is None else mask & (cw != 0)
        n_cls = jnp.asarray(k, cdt) if mask is None else jnp.sum(mask, -1, keepdims=True, dtype=cdt)
        n_cls = jnp.maximum(n_cls, 1)
        w_tot = jnp.sum(jnp.where(keep, cw, 0), -1, keepdims=True)
        # Σ_j w_j (lse − x_j) = W·log_s − Σ_j w_j·d_j: shift-free, so exact at any offset. The
        # shift goes by a fresh name (`m + 0·log_s`) so this sum fuses with its own producer.
        m_fresh = m + 0.0 * log_s
        if mask is None and class_w is None:
            # Arithmetic only: fused, no [B, K] buffer, long rows cut into pieces.
            wd, _ = row_sums(xf, m_fresh, m_fresh, lambda x, m, _: x - m)
        else:
            wd = jnp.sum(jnp.where(keep, cw * (xf - m_fresh), 0), -1, keepdims=True)
        loss = loss + (eps / n_cls) * (w_tot * log_s - wd)
        a = a + eps * w_tot / n_cls
        smooth = jnp.where(keep, (eps / n_cls) * cw, 0)
    if zl:
        loss = loss + zl * lse**2
        a = a + 2 * zl * lse
    valid = valid[..., None]
    bad = valid & ~in_range[..., None]
    nan = jnp.full_like(loss, jnp.nan)
    loss = jnp.where(bad, nan, jnp.where(valid, loss, 0))
    a = jnp.where(bad, nan, jnp.where(valid, a, 0))
    c_lab = jnp.where(valid, c_lab, 0)
    if smooth is not None:
        smooth = jnp.where(valid, smooth, 0)
    # The row's sum Σ_j exp(x_j − m), label included, for p_j = exp(x_j − m)/s in the tangent: one
    # division, where exp(−log_s) would add log_s's rounding (relative ulp·|log_s|) to every p_j.
    # A fully masked row has s = 0 and A = 0; 1 keeps its gradient 0, not 0/0.
    s_row = jnp.exp(d_y) + r
    s_row = jnp.where(s_row > 0, s_row, jnp.ones_like(s_row))
    stats = (m, d_y, log_s, s_row, a, c_lab, smooth)
    return loss[..., 0], y, stats, e0


def _gather(x: Array, y: Array) -> Array:
    """x[..., y] for y of shape [..., 1], in x's dtype.

    Read through an optimization barrier: XLA:CPU otherwise shares one converted copy of `x`
    between the gather and the fused sums and writes it out in full (bf16: +136 ms at
    4096×32000).
    """
    return jnp.take_along_axis(jax.lax.optimization_barrier(x), y, axis=-1)


def _set_label(e: Array, y: Array, value: Any) -> Array:
    """`e` with the label's entry of each row set to `value` (a B-element scatter, in place)."""
    k = e.shape[-1]
    flat = e.reshape((-1, k))
    rows = jnp.arange(flat.shape[0])
    return flat.at[rows, y.reshape(-1)].set(value, unique_indices=True).reshape(e.shape)


def _int_ce_impl(eps, zl, x, labels, valid, mask, class_w):
    return _int_forward(eps, zl, x, labels, valid, mask, class_w)[0]


_int_ce = jax.custom_jvp(_int_ce_impl, nondiff_argnums=(0, 1))


def _int_tangent(x, mask, y, stats, tx, e0=None):
    """Σ_j g_j·tx_j per row, with g the gradient row A·p − t (z-loss and smoothing folded in).

    Off the label, g_j = A·p_j − t_j (t: the smoothing target), with p_j = exp(d_j)/s, s the sum;
    `e0` holds exp(d_j) with the label's entry 0, or is recomputed (bf16/f16 inputs above
    2^22 elements, where rereading the narrow logits is cheaper than a float32 copy). The
    label's entry is thus kept out of the dense term and added on its own (through a gather,
    whose transpose is a B-element scatter, or by the exact 0/1 weight `_not_label`):
    g_y = A·(p_y − 1) + (A − c_y), with p_y − 1 = expm1(d_y − log_s) when p_y > 1/2, so a
    confident correct row never subtracts two numbers near 1.
    """
    m, d_y, log_s, s_row, a, c_lab, smooth = stats
    cdt = a.dtype
    xm = x if mask is None else jnp.where(mask, x, -jnp.inf)
    log_s = finite_log_sum(log_s)
    # p_y − 1: by expm1 where p_y is near 1 (no cancellation), by one subtraction elsewhere
    # (a single rounding, where expm1 would add the rounding of d_y − log_s).
    p_y = jnp.exp(d_y) / s_row
    g_y = a * jnp.where(p_y > 0.5, jnp.expm1(d_y - log_s), p_y - 1.0) + (a - c_lab)
    coef = a / s_row
    if e0 is None:
        # The label's entry goes into the same pass, weighted by 1 − off (exactly 0 or 1): a
        # gather's transpose, a scatter into zeros, would be a second [..., K] buffer here.
        one = 1.0 + 0.0 * a
        off = _not_label(x.shape, y.astype(jnp.float32), one=one)
        h = coef * (jnp.exp(xm.astype(cdt) - m) * off) + g_y * (one - off)
        if smooth is not None:
            h = h - smooth
        return jnp.sum(h * tx.astype(cdt), -1)
    h = coef * e0
    if smooth is not None:
        h = h - smooth
    dense = jnp.sum(h * tx.astype(cdt), -1)
    return dense + (g_y * jnp.take_along_axis(tx, y, axis=-1).astype(cdt))[..., 0]


# bf16/f16 logits up to this many elements still keep exp(x − m) in float32: while that array
# fits in cache, writing it is cheaper than a second exp pass (measured on a 2-core EPYC with a
# 32 MiB L3, value_and_grad, bf16: 1024×1000 1.11 vs 1.87 ms; 4096×1000 4.90 vs 5.41 ms;
# 8192×1000 24.5 vs 9.1 ms).
_NARROW_KEEP_EXP_MAX = 2**22


def _int_ce_jvp(eps, zl, primals, tangents):
    x, labels, valid, mask, class_w = primals
    tx = tangents[0]
    keep_exp = jnp.dtype(x.dtype).itemsize >= 4 or x.size <= _NARROW_KEEP_EXP_MAX
    loss, y, stats, e0 = _int_forward(eps, zl, x, labels, valid, mask, class_w, keep_exp)
    if isinstance(tx, SymbolicZero):
        return loss, jnp.zeros_like(loss)
    if keep_exp:
        # exp(x − m) is already written: the backward pass scales it in place (the residual is
        # that one array, as Optax's).
        return loss, _int_tangent(x, mask, y, stats, tx, e0)
    # Large narrow logits: the backward pass recomputes exp from them; only per-row numbers are
    # kept.
    return loss, jax.checkpoint(_int_tangent)(x, mask, y, stats, tx)


_int_ce.defjvp(_int_ce_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------------
# Dense (one-hot or soft) targets.


def _dense_forward(x, t, mask):
    xf = x.astype(_checks.compute_dtype(x.dtype))
    tf = t.astype(xf.dtype)
    if mask is not None:
        xf = jnp.where(mask, xf, -jnp.inf)
        tf = jnp.where(mask, tf, 0)
    m, d, log_s = max_and_log_sum(xf)
    # −log q_j = log_s − d_j. A zero target contributes 0 even where q_j = 0 (0·log 0 = 0).
    neg_log_q = log_s - d
    loss = jnp.sum(jnp.where(tf != 0, tf * neg_log_q, 0), -1)
    return loss, (m, log_s, jnp.sum(tf, -1, keepdims=True))


def _dense_ce_impl(x, t, mask):
    return _dense_forward(x, t, mask)[0]


_dense_ce = jax.custom_jvp(_dense_ce_impl)


def _dense_tangent(x, t, mask, stats, tx, tt):
    m, log_s, t_sum = stats
    xf = x.astype(t_sum.dtype)
    tf = t.astype(xf.dtype)
    if mask is not None:
        xf = jnp.where(mask, xf, -jnp.inf)
        tf = jnp.where(mask, tf, 0)
    d = xf - m
    out = jnp.zeros(x.shape[:-1], xf.dtype)
    if tx is not None:
        # A soft target has no label to gather: the dominant entry's d comes from a max (a
        # cheap fused reduction), whose derivative lands on that entry.
        d_top = jnp.max(d, axis=-1, keepdims=True)
        top = (d >= d_top - 0.5) & ((d_top - log_s) > _LOG_DOMINANT)
        q = _prob_minus_top(d, log_s, d_top, top)
        h = t_sum * q + jnp.where(top, t_sum - tf, -tf)
        out = out + jnp.sum(h * tx.astype(xf.dtype), -1)
    if tt is not None:
        neg_log_q = log_s - d
        if mask is not None:
            neg_log_q = jnp.where(mask, neg_log_q, 0)
        out = out + jnp.sum(neg_log_q * tt.astype(xf.dtype), -1)
    return out


def _dense_ce_jvp(primals, tangents):
    x, t, mask = primals
    tx, tt = (None if isinstance(v, SymbolicZero) else v for v in tangents[:2])
    loss, stats = _dense_forward(x, t, mask)
    if tx is None and tt is None:
        return loss, jnp.zeros_like(loss)
    return loss, jax.checkpoint(_dense_tangent)(x, t, mask, stats, tx, tt)


_dense_ce.defjvp(_dense_ce_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------------
# Argument handling shared by the public functions.


def _static_float(value: Any, name: str, fn: str) -> float:
    try:
        return float(value)
    except jax.errors.ConcretizationTypeError:
        raise TypeError(
            f"{fn}: `{name}` must be a concrete number (it is static), got a traced value."
        ) from None
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: `{name}` must be a number, got {value!r}.") from None


def _batch_mask(where: Any, shape: tuple, axes: tuple, fn: str) -> tuple[Any, Any]:
    """Split `where` into an example mask [batch] and a class mask [batch, K] (either None)."""
    example_mask, class_mask = _checks.split_where(where, shape, axes, fn)
    if class_mask is not None:
        class_mask = _checks.classes_last(class_mask, axes)
    return example_mask, class_mask


def _class_weights(class_weights: Any, k: int, name: str, shape: tuple, fn: str) -> Any:
    """Checked `class_weights` [K] as a constant (not differentiated), or None."""
    if class_weights is None:
        return None
    _checks.check_floating(class_weights, "class_weights", fn)
    class_weights = jax.lax.stop_gradient(jnp.asarray(class_weights))
    if class_weights.shape != (k,):
        raise ValueError(
            f"{fn}: `class_weights` must have shape ({k},) for {k} classes ({name} of shape "
            f"{shape}), got {class_weights.shape}."
        )
    return class_weights


def _check_labels_callback(labels: Array, ok: Array, num_classes: int, fn: str) -> None:
    def report(labels, ok):
        bad = np.argwhere(~np.asarray(ok))
        if bad.size:
            pos = tuple(int(i) for i in bad[0])
            raise ValueError(
                f"{fn}: label {int(np.asarray(labels)[pos])} at position {pos} is outside "
                f"[0, {num_classes}) ({len(bad)} bad label(s) in all)."
            )

    jax.debug.callback(report, labels, ok)


def _prepare_int(logits, labels, axis, where, fn, check_labels, ignore_index=None):
    _checks.check_floating(logits, "logits", fn)
    _checks.check_integer_labels(labels, fn, "softmax_cross_entropy")
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    axes = _checks.canonicalize_axes(axis, logits.ndim, "logits", logits.shape, fn)
    batch_shape = tuple(n for a, n in enumerate(logits.shape) if a not in axes)
    if labels.shape != batch_shape:
        raise ValueError(
            f"{fn}: `labels` must have the logits' shape without the class axis {axis!r}: "
            f"expected {batch_shape} for logits of shape {logits.shape}, got {labels.shape}."
        )
    example_mask, class_mask = _batch_mask(where, logits.shape, axes, fn)
    x = _checks.classes_last(logits, axes)
    valid = jnp.ones(batch_shape, bool) if example_mask is None else example_mask
    if ignore_index is not None:
        valid = valid & (labels != ignore_index)
    if check_labels:
        k = x.shape[-1]
        _check_labels_callback(labels, ~valid | ((labels >= 0) & (labels < k)), k, fn)
    return x, labels, valid, class_mask


def softmax_cross_entropy_with_integer_labels(
    logits: Any, labels: Any, axis: Any = -1, where: Any = None, *, check_labels: bool = False
) -> Array:
    r"""Softmax cross-entropy against integer class labels (a drop-in for Optax's).

    .. math::
        \ell_i = -\log \operatorname{softmax}(x_i)_{y_i}
              = \log \sum_j e^{x_{ij}} - x_{i y_i}

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        labels: ``[...]`` integer class indices in ``[0, K)``.
        axis: the class axis, or a tuple of axes (a label then indexes the flattened slice).
        where: optional boolean mask: shaped like ``labels`` to drop whole examples (loss 0,
            gradient 0), or like ``logits`` to leave classes out of the normalisation.
        check_labels: if True, raise at run time naming the first label outside ``[0, K)``
            and its position: a ``ValueError`` eagerly, a ``JaxRuntimeError`` carrying the same
            message under ``jit``. Costs a host callback.

    Returns:
        ``[...]`` per-example losses, float32 for bf16/f16 logits.

    Numerics:
        Gradient is the hand-derived ``softmax(x) − one_hot(y)``; ``p_y − 1`` is exact to
        rounding even at ``p_y = 1 − 1e-7``. ``-inf`` logits on other classes are fine; a
        ``-inf`` logit on the label gives ``+inf`` with the finite gradient ``softmax − one_hot``;
        an out-of-range label gives NaN (never a silent finite loss); a label whose class is
        masked out gives ``+inf``; a fully masked row gives 0 with gradient 0.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
        >>> loss = jaxloss.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1]))
        >>> print(loss)
        [0.2761 2.9518]
    """
    loss = cross_entropy(logits, labels, axis, where, check_labels=check_labels)
    assert not isinstance(loss, tuple)  # reduction="none"
    return loss


def cross_entropy(
    logits: Any,
    labels: Any,
    axis: Any = -1,
    where: Any = None,
    *,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    class_weights: Any = None,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "none",
    check_labels: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Cross-entropy with integer labels and PyTorch's options, on Optax's call shape.

    With target :math:`t = (1-\varepsilon)\,\mathrm{onehot}(y) + \varepsilon/K'`, class
    weights :math:`w` and :math:`\mathrm{lse} = \log\sum_j e^{x_j}`:

    .. math::
        \ell = (1-\varepsilon)\, w_y (\mathrm{lse} - x_y)
             + \frac{\varepsilon}{K'} \sum_j w_j (\mathrm{lse} - x_j)
             + z\,\mathrm{lse}^2

    where :math:`K'` counts the classes left in by ``where``.

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        labels: ``[...]`` integer class indices.
        axis: the class axis or tuple of axes (a label then indexes the flattened slice).
        where: boolean mask shaped like ``labels`` (drops examples) or like ``logits`` (drops
            classes from the normalisation), as in Optax.
        ignore_index: a label value (PyTorch uses -100) whose examples give loss 0 and
            gradient 0 and leave the ``"mean"`` denominator.
        label_smoothing: ε in [0, 1], PyTorch's formula.
        class_weights: ``[K]`` weights; each example is weighted by its label's weight and
            ``"mean"`` divides by the sum of those weights over valid examples (PyTorch).
        z_loss: coefficient of the auxiliary ``z·lse²`` term (per valid example, unweighted).
        logit_softcap: if set to ``c``, logits are replaced by ``c·tanh(x/c)`` first.
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (0 when nothing is valid) or
            ``"sum_and_count"``, which returns ``(sum, count)`` with ``count`` the ``"mean"``
            denominator, for exact means over micro-batches or hosts.
        check_labels: if True, raise at run time naming the first out-of-range label and its
            position (``ValueError`` eagerly, ``JaxRuntimeError`` under ``jit``).

    Returns:
        ``[...]`` losses for ``"none"``, a scalar for ``"sum"``/``"mean"``, a pair of scalars
        for ``"sum_and_count"``; float32 for bf16/f16 logits.

    Numerics:
        Computed in float32 for bf16/f16 logits; gradient is the hand-derived
        ``A·softmax(x) − t`` with the true-class ``p_y − 1`` free of cancellation. The label
        is kept out of the row's sum, so the loss ``log1p(Σ_{j≠y} e^{x_j − x_y})`` of a
        confident correct row is exact to rounding. For float32 logits the backward pass keeps
        ``exp(x − max)`` (as Optax does) and scales it in place; for bf16/f16 logits of more
        than 2^22 elements it keeps only per-row scalars and recomputes ``exp`` from them.
        Out-of-range labels (other than ``ignore_index``) give NaN.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> labels = jnp.array([0, -100])
        >>> print(jaxloss.cross_entropy(logits, labels, ignore_index=-100))
        [0.2413 0.    ]
        >>> mean = jaxloss.cross_entropy(
        ...     logits, jnp.array([0, 2]), label_smoothing=0.1, reduction="mean")
        >>> print(mean)
        0.3455
    """
    fn = "cross_entropy"
    _checks.check_reduction(reduction, fn)
    _checks.check_label_smoothing(label_smoothing, fn)
    eps = _static_float(label_smoothing, "label_smoothing", fn)
    zl = _static_float(z_loss, "z_loss", fn)
    x, labels, valid, class_mask = _prepare_int(
        logits, labels, axis, where, fn, check_labels, ignore_index
    )
    k = x.shape[-1]
    if k >= _MAX_FLOAT_INDEX:
        raise ValueError(
            f"{fn}: logits of shape {np.shape(logits)} have {k} classes; at most "
            f"{_MAX_FLOAT_INDEX - 1} are supported (labels index a float32 iota)."
        )
    class_weights = _class_weights(class_weights, k, "logits", np.shape(logits), fn)
    if logit_softcap is not None:
        cap = _static_float(logit_softcap, "logit_softcap", fn)
        if cap <= 0:
            raise ValueError(f"{fn}: `logit_softcap` must be positive, got {logit_softcap!r}.")
        xf = x.astype(_checks.compute_dtype(x.dtype))
        x = cap * jnp.tanh(xf / cap)
    loss = _int_ce(eps, zl, x, labels, valid, class_mask, class_weights)
    count = None
    if reduction != "none":
        if class_mask is not None:
            valid = valid & jnp.any(class_mask, axis=-1)
        count = valid.astype(loss.dtype)
        if class_weights is not None:
            safe = jnp.where((labels >= 0) & (labels < k), labels, 0)
            count = jnp.where(valid, class_weights.astype(loss.dtype)[safe], 0)
    return _checks.reduce_loss(loss, count, reduction)


def softmax_cross_entropy(logits: Any, labels: Any, axis: Any = -1, where: Any = None) -> Array:
    r"""Softmax cross-entropy against one-hot or soft targets (a drop-in for Optax's).

    .. math::
        \ell_i = -\sum_j t_{ij} \log \operatorname{softmax}(x_i)_j

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        labels: ``[..., K]`` target probabilities (each row is a distribution).
        axis: the class axis or tuple of axes.
        where: optional boolean mask shaped like the batch (drops examples) or like ``logits``
            (drops classes).

    Returns:
        ``[...]`` per-example losses, float32 for bf16/f16 logits.

    Numerics:
        A zero target contributes 0 even where the logit is ``-inf`` (``0·log 0 = 0``), where
        Optax gives NaN. Gradient w.r.t. logits is the hand-derived ``Σt·softmax(x) − t``, with
        the dominant class's ``p − 1`` computed without cancellation; w.r.t. targets it is
        ``−log softmax(x)``. The backward pass keeps only logits, targets and per-row scalars.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
        >>> targets = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
        >>> print(jaxloss.softmax_cross_entropy(logits, targets))
        [0.2761 1.8018]
    """
    fn = "softmax_cross_entropy"
    _checks.check_floating(logits, "logits", fn)
    _checks.check_floating(labels, "labels", fn)
    _checks.check_same_shape(logits, labels, "logits", "labels", fn)
    logits = jnp.asarray(logits)
    axes = _checks.canonicalize_axes(axis, logits.ndim, "logits", logits.shape, fn)
    example_mask, class_mask = _batch_mask(where, logits.shape, axes, fn)
    x = _checks.classes_last(logits, axes)
    t = _checks.classes_last(jnp.asarray(labels), axes)
    if example_mask is not None:
        class_mask = jnp.broadcast_to(example_mask[..., None], x.shape)
    return _dense_ce(x, t, class_mask)


def nll_loss(
    log_probs: Any,
    labels: Any,
    axis: Any = -1,
    where: Any = None,
    *,
    ignore_index: int | None = None,
    class_weights: Any = None,
    reduction: str = "none",
    check_labels: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Negative log-likelihood of integer labels under given log-probabilities.

    .. math::
        \ell_i = -w_{y_i} \log q_{i y_i}

    ``nll_loss(log_softmax(x), y)`` equals ``cross_entropy(x, y)``.

    Args:
        log_probs: ``[..., K]`` log-probabilities (e.g. from ``log_softmax``), floating dtype.
        labels: ``[...]`` integer class indices.
        axis: the class axis or tuple of axes.
        where: optional boolean mask shaped like ``labels``: masked examples give 0.
        ignore_index: a label value whose examples give 0 and leave the ``"mean"`` denominator.
        class_weights: ``[K]`` weights; ``"mean"`` divides by the sum of the valid examples'
            label weights (PyTorch).
        reduction: ``"none"``, ``"sum"``, ``"mean"`` or ``"sum_and_count"``.
        check_labels: if True, raise at run time naming the first out-of-range label.

    Returns:
        ``[...]`` losses for ``"none"``, else a scalar (or a pair for ``"sum_and_count"``);
        float32 for bf16/f16 inputs.

    Numerics:
        A pure gather, no normalisation: the input is trusted to be log-probabilities. A label
        with ``log q = -inf`` gives ``+inf``; out-of-range labels give NaN. The gradient is
        ``−w_y`` at the label and 0 elsewhere.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> log_q = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
        >>> print(jaxloss.nll_loss(log_q, jnp.array([0, 1])))
        [0.6931 0.2231]
    """
    fn = "nll_loss"
    _checks.check_reduction(reduction, fn)
    x, labels, valid, class_mask = _prepare_int(
        log_probs, labels, axis, where, fn, check_labels, ignore_index
    )
    if class_mask is not None:
        raise ValueError(
            f"{fn}: `where` must be shaped like `labels` {labels.shape} (an example mask); got "
            f"{np.shape(where)}. Mask classes in the `log_softmax` that produced `log_probs`."
        )
    k = x.shape[-1]
    xf = x.astype(_checks.compute_dtype(x.dtype))
    in_range = (labels >= 0) & (labels < k)
    y = jnp.where(in_range, labels, 0)
    w = jnp.ones(labels.shape, xf.dtype)
    class_weights = _class_weights(class_weights, k, "log_probs", np.shape(log_probs), fn)
    if class_weights is not None:
        w = class_weights.astype(xf.dtype)[y]
    picked = jnp.take_along_axis(xf, y[..., None], axis=-1)[..., 0]
    loss = jnp.where(valid, -w * jnp.where(valid, picked, 0), 0)
    loss = jnp.where(valid & ~in_range, jnp.nan, loss)
    return _checks.reduce_loss(loss, jnp.where(valid, w, 0), reduction)
