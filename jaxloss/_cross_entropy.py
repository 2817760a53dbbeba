"""Softmax cross-entropy with a hand-derived gradient, and negative log-likelihood.

The gradient of cross-entropy with respect to the logits is `A·softmax(x) − t` per row, where
`t` is the (weighted, smoothed) target and `A = Σ_j t_j` (plus the z-loss term `2·λ_z·lse`). It
is stated as a `custom_jvp` rule, whose tangent map is linear, so forward mode (`jvp`, `jacfwd`,
`hessian`) works and reverse mode is its transpose.

Integer labels keep the label out of the row's sum: with m the row maximum and
r = Σ_{j≠y} exp(x_j − m), the loss is `log1p(expm1(d_y) + r) − d_y` (d_y = x_y − m) and the
label's gradient entry is `A·(p_y − 1) + (A − c_y)`, with `p_y − 1 = expm1(d_y − log_s)` when
p_y > 1/2. Both are exact to rounding when the label holds almost all the mass, where
`log Σ exp` and `p_y − 1` would lose every digit. The portable kernel reads the logits once for
the loss (one variadic reduction over the row with the label's entry masked out, plus a gather
of the label's logit) and once more for the gradient, which it writes: the tangent is
`jax.checkpoint`ed, so only per-row numbers are kept. XLA:CPU runs its own kernel
(`_xla_cpu.label_stats`); the options (smoothing, class weights, z-loss, masks) are applied to
the per-row numbers by `_options.label_rows`, the same code for both kernels and for
`linear_cross_entropy`. The rule also has a tangent along the class weights, which are
differentiable. `int_loss` is the checked per-example loss the losses built on it (the focal
loss) share.

Dense targets use the shared exact log-sum-exp (`_softmax.max_and_log_sum`); there, when one
class holds more than 3/4 of the mass, its `p − 1` is `expm1(d − log_s)`. `dense_loss` is
`softmax_cross_entropy` and, with ``poly`` = ε, PolyLoss in the same kernel.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxloss import _checks, _impl, _options, _xla_cpu
from jaxloss._softmax import finite_log_sum, max_and_log_sum, shift_and_log_sum

# A class "dominates" its row when its probability exceeds 3/4: only then can p − 1 cancel.
_LOG_DOMINANT = math.log(0.75)

# ---------------------------------------------------------------------------------------------
# Integer labels: the per-row numbers (kernels), then the options, then the gradient.


def _label_out_stats(xm: Array, y: Array, rows: Array) -> tuple[Array, Array, Array, None]:
    """(m, x_y, r, None): the shift, the label's logit, r = Σ_{j≠y} exp(x_j − m). One read.

    The row with the label's entry set to −inf goes through the one-pass log-sum-exp; the
    gathered label logit is folded in per row.
    """
    del rows  # the portable kernel has no batch-wide fallback
    cdt = _checks.compute_dtype(xm.dtype)
    # Gather and mask in the logits' own dtype: a converted copy shared by the two would be
    # written out in full (bf16 on TPU: +4×B bytes and a float32 [B, K] scratch).
    x_y = _checks.take_label(xm, y).astype(cdt)
    j = _checks.class_iota(y.dtype, xm)
    m_o, log_s_o = shift_and_log_sum(False, jnp.where(j == y, -jnp.inf, xm))
    # The loss and gradient do not depend on the shift, so when a Hessian differentiates this
    # and the label ties the maximum, the split derivative of `maximum` cancels (tested).
    m = jnp.maximum(m_o, x_y)
    s_o = jnp.exp(log_s_o)  # Σ_{j≠y} exp(x_j − m_o)
    r = jnp.where(s_o == 0, jnp.zeros_like(s_o), s_o * jnp.exp(m_o - m))
    return jnp.where(m == -jnp.inf, jnp.zeros_like(m), m), x_y, r, None


class _Smooth(NamedTuple):
    mask: Array | None  # [..., K] the classes left in by `where` (None: all)
    n_cls: Array  # [..., 1] K′, the classes left in by `where`
    d: Array  # [..., K] x − m on the classes left in, 0 elsewhere
    row: Array  # [..., K] ε·w_j/K′ on the classes left in with w_j ≠ 0: the smoothed target


def _int_rows(opts, x, y, in_range, valid, mask, class_w, stats_fn):
    """Per-example loss and the per-row numbers the tangent needs, from a kernel's statistics.

    `stats_fn(xm, y, rows)` returns (m, x_y, r, e0) as `_label_out_stats` does (e0: a kernel's
    own residual, or None); `_options.label_rows` does the rest, the same for every kernel.
    """
    k = x.shape[-1]
    cdt = _checks.compute_dtype(x.dtype)
    xm = x if mask is None else jnp.where(mask, x, -jnp.inf)
    if mask is not None:
        valid = valid & jnp.any(mask, axis=-1)
    y = y[..., None]
    m, x_y, r, e0 = stats_fn(xm, y, valid & in_range)
    d_y = x_y - m
    w_y = None if class_w is None else _checks.take(class_w.astype(cdt), y)
    smooth = sums = None
    if not _options.is_zero(opts.eps):
        # Class weights as a [1, ..., 1, K] row, so every broadcast against [..., K] is explicit.
        row = (1,) * (xm.ndim - 1) + (k,)
        cw = jnp.ones(row, cdt) if class_w is None else class_w.astype(cdt).reshape(row)
        n_cls = jnp.asarray(k, cdt) if mask is None else jnp.sum(mask, -1, keepdims=True, dtype=cdt)
        n_cls = jnp.maximum(n_cls, 1)  # a count of the mask's classes: no derivative
        d = xm.astype(cdt) - m
        d = d if mask is None else jnp.where(mask, d, 0)
        # Classes of weight 0 are left out of the value (0·(−inf) would be NaN), not out of the
        # class weights' tangent.
        keep = (cw != 0) if mask is None else mask & (cw != 0)
        smooth = _Smooth(mask, n_cls, d, jnp.where(keep, (opts.eps / n_cls) * cw, 0))
        w_tot = jnp.sum(jnp.where(keep, cw, 0), -1, keepdims=True)
        sums = (w_tot, jnp.sum(jnp.where(keep, cw * d, 0), -1, keepdims=True), n_cls)
    live = valid[..., None]
    bad = live & ~in_range[..., None]
    loss, rows, nll, log_s = _options.label_rows(opts, m, d_y, r, w_y, live, bad, sums)
    slopes = None
    if not (_checks.is_static(opts.eps) and _checks.is_static(opts.zl)):
        slopes = _options.option_slopes(m, nll, log_s, w_y, live, bad, sums)
    return loss[..., 0], (xm, y, rows, smooth), e0, (nll, log_s, slopes)


def _finish_tangent(h: Array, smooth: _Smooth | None, use: Array, tx: Array) -> Array:
    """Σ_j g_j·tx_j with g = h − smooth, 0 on rows not in use (even where their logits are NaN)."""
    if smooth is not None:
        h = h - smooth.row
    h = jnp.where(use, h, jnp.zeros_like(h))
    return jnp.sum(h * tx.astype(h.dtype), -1)


def _portable_tangent(res, tx):
    xm, y, rows, smooth = res
    j = _checks.class_iota(y.dtype, xm)
    h = jnp.where(j == y, rows.g_y, rows.coef * jnp.exp(xm.astype(rows.coef.dtype) - rows.m))
    return _finish_tangent(h, smooth, rows.use, tx)


def _weights_tangent(opts, res, aux, tcw):
    """Tangent of the loss along the class weights: ∂ℓ/∂w_j = (1−ε)[j = y]·nll
    + (ε/K′)·(log_s − (x_j − m)) on the classes left in."""
    _, y, rows, smooth = res
    nll, log_s, _ = aux
    tcw = tcw.astype(nll.dtype)
    out = (1.0 - opts.eps) * _checks.take(tcw, y) * nll
    if smooth is not None:
        t_row = tcw.reshape((1,) * (smooth.d.ndim - 1) + (-1,))
        term = t_row * (log_s - smooth.d)
        term = term if smooth.mask is None else jnp.where(smooth.mask, term, 0)
        term = (opts.eps / smooth.n_cls) * jnp.sum(term, -1, keepdims=True)
        if not _checks.is_static(opts.eps):
            term = jnp.where(opts.eps == 0, jnp.zeros_like(term), term)  # 0·inf at a −inf logit
        out = out + term
    live = rows.use & ~jnp.isnan(rows.coef)  # bad rows' loss is NaN already
    return jnp.where(live, out, 0)[..., 0]


def _portable_fwd(opts, x, y, in_range, valid, mask, class_w, hyper):
    opts = _options.join(opts, hyper)
    return _int_rows(opts, x, y, in_range, valid, mask, class_w, _label_out_stats)[0]


def _with_weights(opts, loss, t_loss, res, aux, t_opts):
    """Add the tangents along the class weights and the traced options, t_opts = (tcw, tε, tλ)
    (None where there is none)."""
    tcw, t_eps, t_zl = t_opts
    if tcw is not None:
        t_loss = t_loss + _weights_tangent(opts, res, aux, tcw)
    for slope, t in zip(aux[2] or (None, None), (t_eps, t_zl), strict=True):
        if t is not None:
            assert slope is not None  # `_int_rows` gives the slopes for every traced option
            t_loss = t_loss + slope[..., 0] * t.astype(slope.dtype)
    return loss, t_loss


def _portable_jvp(opts, x, y, in_range, valid, mask, class_w, hyper, tx, t_opts):
    opts = _options.join(opts, hyper)
    loss, res, _, aux = _int_rows(opts, x, y, in_range, valid, mask, class_w, _label_out_stats)
    # Checkpointed: the backward pass recomputes exp from the logits; only per-row numbers are
    # kept, and the logits are read once more and the gradient written once. No optimization
    # barrier, as `_impl.recompute` gives accelerators (this is already their branch).
    tangent = jax.checkpoint(_portable_tangent, prevent_cse=False)
    return _with_weights(opts, loss, tangent(res, tx), res, aux, t_opts)


def _cpu_kernel(cfg, x, keep_exp):
    if x.shape[-1] >= cfg.max_float_index:  # the float32 label iota would not be exact
        return _label_out_stats
    if _checks.classes_sharded(x):  # its gather and scatter cannot split the classes
        return _label_out_stats
    return lambda xm, y, rows: _xla_cpu.label_stats(cfg, xm, y, rows, keep_exp)


def _cpu_fwd(opts, cfg, x, y, in_range, valid, mask, class_w, hyper):
    opts = _options.join(opts, hyper)
    kernel = _cpu_kernel(cfg, x, False)
    return _int_rows(opts, x, y, in_range, valid, mask, class_w, kernel)[0]


def _cpu_recompute_tangent(res, tx):
    xm, y, rows, smooth = res
    h = _xla_cpu.label_tangent(xm, y, rows.m, rows.coef, rows.g_y)
    return _finish_tangent(h, smooth, rows.use, tx)


def _cpu_jvp(opts, cfg, x, y, in_range, valid, mask, class_w, hyper, tx, t_opts):
    opts = _options.join(opts, hyper)
    keep_exp = _xla_cpu.keeps_exp(cfg, x)
    kernel = _cpu_kernel(cfg, x, keep_exp)
    loss, res, e0, aux = _int_rows(opts, x, y, in_range, valid, mask, class_w, kernel)
    if kernel is _label_out_stats:
        t_loss = jax.checkpoint(_portable_tangent, prevent_cse=cfg.tangent_barrier)(res, tx)
    elif e0 is None:
        # Large narrow logits: recompute exp from them; only per-row numbers are kept.
        t_loss = jax.checkpoint(_cpu_recompute_tangent, prevent_cse=cfg.tangent_barrier)(res, tx)
    else:
        _, y, rows, smooth = res
        # exp(x − m) is already written: the backward pass scales it in place (one exp pass,
        # the residual Optax keeps too).
        if _xla_cpu.is_small(cfg, x):
            # The label's entry by the 0/1 weight, in the same fusion as the rest (no scatter).
            on_label = 1.0 - _xla_cpu.not_label(x.shape, y.astype(jnp.float32))
            t_loss = _finish_tangent(rows.coef * e0 + rows.g_y * on_label, smooth, rows.use, tx)
        else:
            # The label's entry is a gather of the tangent (its transpose, a B-element scatter).
            dense = _finish_tangent(rows.coef * e0, smooth, rows.use, tx)
            tx_y = jnp.take_along_axis(tx, y, axis=-1).astype(rows.g_y.dtype)
            t_loss = dense + jnp.where(rows.use, rows.g_y * tx_y, 0)[..., 0]
    return _with_weights(opts, loss, t_loss, res, aux, t_opts)


def _int_ce_impl(opts, x, y, in_range, valid, mask, class_w, hyper):
    """`hyper`: (ε, λ_z) traced, or None each where `opts` holds a Python number (see
    `_options.split`)."""
    return _impl.dispatch(
        functools.partial(_portable_fwd, opts),
        *(x, y, in_range, valid, mask, class_w, hyper),
        xla_cpu=functools.partial(_cpu_fwd, opts),
    )


_int_ce = jax.custom_jvp(_int_ce_impl, nondiff_argnums=(0,))


def _int_ce_jvp(opts, primals, tangents):
    x, y, in_range, valid, mask, class_w, hyper = primals
    t_opts = tuple(
        None if t is None or isinstance(t, SymbolicZero) else t for t in (tangents[5], *tangents[6])
    )
    tx = tangents[0]
    if isinstance(tx, SymbolicZero):
        if all(t is None for t in t_opts):
            loss = _int_ce(opts, x, y, in_range, valid, mask, class_w, hyper)
            return loss, jnp.zeros_like(loss)
        tx = jnp.zeros_like(x)
    return _impl.dispatch(
        functools.partial(_portable_jvp, opts),
        *(x, y, in_range, valid, mask, class_w, hyper, tx, t_opts),
        xla_cpu=functools.partial(_cpu_jvp, opts),
    )


_int_ce.defjvp(_int_ce_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------------
# Dense (one-hot or soft) targets.


def _dense_forward(poly, x, t, mask, fused_rows=False):
    """Loss and per-row numbers; with `poly` = ε, PolyLoss's ε·Σ_j t_j (1 − p_j) is added,
    each 1 − p_j as −expm1(log p_j) (exact for the dominant class)."""
    xf = x.astype(_checks.compute_dtype(x.dtype))
    tf = t.astype(xf.dtype)
    if mask is not None:
        xf = jnp.where(mask, xf, -jnp.inf)
        tf = jnp.where(mask, tf, 0)
    m, d, log_s = max_and_log_sum(xf, fused_rows)
    # −log q_j = log_s − d_j. A zero target contributes 0 even where q_j = 0 (0·log 0 = 0).
    neg_log_q = log_s - d
    loss = jnp.sum(jnp.where(tf != 0, tf * neg_log_q, 0), -1)
    u = None
    if _poly_on(poly):
        u = jnp.sum(tf * -jnp.expm1(d - finite_log_sum(log_s)), -1, keepdims=True)
        loss = loss + poly * u[..., 0]
    return loss, (m, log_s, jnp.sum(tf, -1, keepdims=True), u)


def _poly_on(poly: Any) -> bool:
    """Whether PolyLoss's term is in the program: a traced ε, or a Python ε other than 0."""
    return poly is not None and not _options.is_zero(poly)


def _dense_ce_impl(poly, x, t, mask, poly_t):
    """`poly`: PolyLoss's ε as a Python number (0: plain cross-entropy), or None with a traced
    ε in `poly_t` (None otherwise)."""
    return _dense_forward(poly if poly_t is None else poly_t, x, t, mask, fused_rows=True)[0]


_dense_ce = jax.custom_jvp(_dense_ce_impl, nondiff_argnums=(0,))


def _dense_tangent(poly, x, t, mask, stats, tx, tt, poly_t=None):
    poly = poly if poly_t is None else poly_t
    m, log_s, t_sum, u = stats
    xf = x.astype(t_sum.dtype)
    tf = t.astype(xf.dtype)
    if mask is not None:
        xf = jnp.where(mask, xf, -jnp.inf)
        tf = jnp.where(mask, tf, 0)
    d = xf - m
    out = jnp.zeros(x.shape[:-1], xf.dtype)
    if tx is not None:
        # p − [dominant]: the dominant entry's p − 1 by expm1, so it never cancels.
        z = d - finite_log_sum(log_s)
        top = z > _LOG_DOMINANT  # two formulas of one function: no jump at the boundary
        h = t_sum * jnp.where(top, jnp.expm1(z), jnp.exp(z)) + jnp.where(top, t_sum - tf, -tf)
        if _poly_on(poly):
            # ∂U/∂x_k = p_k·(Σ_j t_j p_j − t_k) = p_k·((Σt − t_k) − U): for a one-hot row the
            # label's entry is −p_y·U, with no cancellation.
            h = h + poly * jnp.exp(z) * ((t_sum - tf) - u)
        out = out + jnp.sum(h * tx.astype(xf.dtype), -1)
    if tt is not None:
        neg_log_q = log_s - d
        if _poly_on(poly):
            neg_log_q = neg_log_q - poly * jnp.expm1(d - finite_log_sum(log_s))
        if mask is not None:
            neg_log_q = jnp.where(mask, neg_log_q, 0)
        out = out + jnp.sum(neg_log_q * tt.astype(xf.dtype), -1)
    return out


def _dense_ce_jvp(poly, primals, tangents):
    x, t, mask, poly_t = primals
    tx, tt = (None if isinstance(v, SymbolicZero) else v for v in tangents[:2])
    t_poly = None if poly_t is None or isinstance(tangents[3], SymbolicZero) else tangents[3]
    loss, stats = _dense_forward(poly if poly_t is None else poly_t, x, t, mask)
    u = stats[3]  # Σ_j t_j (1 − p_j) = ∂ℓ/∂ε; None without PolyLoss's term
    if tx is None and tt is None:
        if t_poly is None:
            return loss, jnp.zeros_like(loss)
        assert u is not None
        return loss, u[..., 0] * t_poly.astype(loss.dtype)
    # Plain cross-entropy: no optimization barrier (prevent_cse), so XLA may fuse the gradient
    # pass with the forward loss pass, which reads the same logits and targets (GPU: 6·B, not
    # 7·B). PolyLoss keeps the barrier: its gradient needs the row's U first, and without it
    # XLA:GPU shares expm1(z) between the two passes as a float32 [B, K] buffer (1024×1000
    # bf16 on H100: 10.0·B and 4 MiB of scratch with it shared, 6.0·B and 25 KiB without).
    tangent = jax.checkpoint(
        _dense_tangent, prevent_cse=poly_t is not None or bool(poly), static_argnums=(0,)
    )
    if poly_t is None:
        return loss, tangent(poly, x, t, mask, stats, tx, tt)
    t_loss = tangent(poly, x, t, mask, stats, tx, tt, poly_t)
    if t_poly is not None:
        assert u is not None
        t_loss = t_loss + u[..., 0] * t_poly.astype(loss.dtype)
    return loss, t_loss


_dense_ce.defjvp(_dense_ce_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------------
# Argument handling shared by the public functions.


def _batch_mask(where: Any, shape: tuple, axes: tuple, fn: str) -> tuple[Any, Any]:
    """Split `where` into an example mask [batch] and a class mask [batch, K] (either None)."""
    example_mask, class_mask = _checks.split_where(where, shape, axes, fn)
    if class_mask is not None:
        class_mask = _checks.classes_last(class_mask, axes)
    return example_mask, class_mask


def prepare_int(logits, labels, axis, where, fn, check_labels, ignore_index=None):
    """(x [..., K], y, in_range, valid, class mask): the checked inputs of an integer-label loss."""
    name = "logits" if fn != "nll_loss" else "log_probs"
    # accuracy's labels are never probabilities: its hint is `argmax` alone.
    dense = None if fn == "accuracy" else "softmax_cross_entropy"
    _checks.check_floating(logits, name, fn)
    _checks.check_integer_labels(labels, fn, dense, _checks._shape(logits))
    ignore_index = _options.check_ignore_index(ignore_index, fn)
    if ignore_index is not None:
        _checks.check_index(ignore_index, "ignore_index", fn)
    _checks.check_label_values(labels, fn)
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    axes = _checks.canonicalize_axes(axis, logits.ndim, name, logits.shape, fn)
    _checks.check_static_classes(logits.shape, axes, name, fn)
    batch_shape = tuple(n for a, n in enumerate(logits.shape) if a not in axes)
    if labels.shape != batch_shape:
        raise ValueError(
            f"{fn}: `labels` must have the {name}' shape without the class axis {axis!r}: "
            f"expected {batch_shape} for {name} of shape {logits.shape}, got {labels.shape}."
            + _checks.label_shape_hint(logits.shape, labels.shape, axes, axis, dense)
        )
    example_mask, class_mask = _batch_mask(where, logits.shape, axes, fn)
    x = _checks.classes_last(logits, axes)
    # ones_like: sharded like the labels (a fresh array would be replicated on Explicit meshes).
    valid = jnp.ones_like(labels, bool) if example_mask is None else example_mask
    y, in_range, valid = _options.labels_and_valid(
        fn, labels, x.shape[-1], valid, ignore_index, check_labels
    )
    return x, y, in_range, valid, class_mask


class IntLoss(NamedTuple):
    """An integer-label loss per example, with what a caller needs to weight and reduce it."""

    loss: Array  # [...] per example (0 where not valid, NaN for an out-of-range label)
    y: Array  # [...] labels clipped into [0, K)
    valid: Array  # [...] the examples that count
    w_y: Array | None  # [...] the label's class weight, None without class weights
    k: int  # the number of classes


def int_loss(
    fn: str,
    logits: Any,
    labels: Any,
    axis: Any,
    where: Any,
    *,
    ignore_index: Any = None,
    label_smoothing: Any = 0.0,
    class_weights: Any = None,
    z_loss: Any = 0.0,
    logit_softcap: Any = None,
    check_labels: bool = False,
) -> IntLoss:
    """The integer-label cross-entropy of `cross_entropy` and of the losses built on it, with
    every option checked once (errors name `fn`); the caller reduces it."""
    opts, _ = _options.parse(
        fn,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        logit_softcap=logit_softcap,
        traced_ok=True,
    )
    x, y, in_range, valid, class_mask = prepare_int(
        logits, labels, axis, where, fn, check_labels, ignore_index
    )
    k = x.shape[-1]
    cw = _options.class_weight_table(class_weights, k, "logits", np.shape(logits), fn)
    if opts.cap is not None:
        # Rows and classes left out read 0, not their logits: tanh's derivative at a NaN logit
        # is NaN, and the zero cotangent of a masked entry times NaN would be NaN.
        keep = valid[..., None] if class_mask is None else valid[..., None] & class_mask
        x = _options.softcap(jnp.where(keep, x, jnp.zeros_like(x)), opts.cap)
    static, hyper = _options.split(opts)
    loss = _int_ce(static, x, y, in_range, valid, class_mask, cw, hyper)
    if class_mask is not None:
        valid = valid & jnp.any(class_mask, axis=-1)
    w_y = None if cw is None else _checks.take(cw.astype(loss.dtype), y)
    return IntLoss(loss, y, valid, w_y, k)


def _int_cross_entropy(fn, logits, labels, axis, where, reduction, weights=None, **options):
    _checks.check_reduction(reduction, fn)
    out = int_loss(fn, logits, labels, axis, where, **options)
    w = _options.example_weights(weights, out.loss.shape, fn, "the shape of `labels`")
    return _options.reduce(out.loss, reduction, out.valid, out.w_y, w)


@_checks.public
def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    check_labels: bool = False,
) -> Array:
    r"""Softmax cross-entropy against integer class labels (a drop-in for Optax's).

    In plain text: ℓᵢ = log Σ_j exp(x_ij) − x_{i,yᵢ}.

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
    fn = "softmax_cross_entropy_with_integer_labels"
    loss = _int_cross_entropy(fn, logits, labels, axis, where, "none", check_labels=check_labels)
    assert not isinstance(loss, tuple)  # reduction="none"
    return loss


@_checks.public
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    class_weights: ArrayLike | None = None,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "none",
    check_labels: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Cross-entropy with integer labels and PyTorch's options, on Optax's call shape.

    With target :math:`t = (1-\varepsilon)\,\mathrm{onehot}(y) + \varepsilon/K'`, class
    weights :math:`w` and :math:`\mathrm{lse} = \log\sum_j e^{x_j}`:

    In plain text: ℓ = (1−ε)·w_y·(lse − x_y) + (ε/K′)·Σ_j w_j·(lse − x_j) + λ_z·lse², lse = log
    Σ_j exp(x_j).

    .. math::
        \ell = (1-\varepsilon)\, w_y (\mathrm{lse} - x_y)
             + \frac{\varepsilon}{K'} \sum_j w_j (\mathrm{lse} - x_j)
             + \lambda_z\,\mathrm{lse}^2

    where :math:`K'` counts the classes left in by ``where`` and :math:`\lambda_z` is
    ``z_loss``.

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        labels: ``[...]`` integer class indices.
        axis: the class axis or tuple of axes (a label then indexes the flattened slice).
        where: boolean mask shaped like ``labels`` (drops examples) or like ``logits`` (drops
            classes from the normalisation), as in Optax.
        ignore_index: a label value (PyTorch uses -100) whose examples give loss 0 and
            gradient 0 and leave the ``"mean"`` denominator.
        label_smoothing: ε in [0, 1], PyTorch's formula.
        class_weights: ``[K]`` weights (an array or a list; differentiable); each example is
            weighted by its label's weight and ``"mean"`` divides by the sum of those weights
            over valid examples (PyTorch).
        z_loss: :math:`\lambda_z \ge 0`, the weight of PaLM's auxiliary ``λ_z·lse²`` term (per
            valid example, not class-weighted; part of the example's loss, so ``"mean"`` divides
            it by the same count as the rest: Σ w_y with class weights).
        logit_softcap: if set to ``c > 0``, logits are replaced by ``c·tanh(x/c)`` first;
            ``inf`` means no cap.

            ``label_smoothing``, ``z_loss`` and ``logit_softcap`` may be traced (a schedule's
            value under ``jit``), and are then differentiable; a Python number is checked when
            the function is traced (and 0 or ``None`` compiles no term), a traced value
            outside its range gives NaN losses.
        weights: optional per-example (sample or token) weights ``s``, shaped like ``labels``
            or broadcasting to it; differentiable. Each loss becomes ``s·ℓ`` (0 where
            ``s = 0``, even for an infinite loss) and counts ``s`` times: ``"mean"`` is
            ``Σ s·ℓ / Σ s`` (``Σ s·w_y·ℓ / Σ s·w_y`` with class weights) over the valid
            examples, and ``"sum_and_count"`` returns that denominator as the count.
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (sum over count whenever an
            example is valid, NaN propagating; 0 when none is) or ``"sum_and_count"``, which
            returns ``(sum, count)`` with ``count`` the ``"mean"`` denominator, for exact means
            over micro-batches or hosts.
        check_labels: if True, raise naming the first out-of-range label and its position in
            the batch passed (under ``vmap`` too): a ``ValueError`` for concrete labels; under
            ``jit``/``vmap``/``scan`` a host callback prints the message to stderr and raises
            (``jax.errors.JaxRuntimeError`` under ``jit``, a ``RuntimeError``: catch
            ``(ValueError, jax.errors.JaxRuntimeError)``). A host callback cannot be exported
            with ``jax.export``.

    Returns:
        ``[...]`` losses for ``"none"``, a scalar for ``"sum"``/``"mean"``, a pair of scalars
        for ``"sum_and_count"``; float32 for bf16/f16 logits.

    Numerics:
        Computed in float32 for bf16/f16 logits; the gradient is the hand-derived
        ``A·softmax(x) − w⊙t`` with ``A = Σ_j w_j t_j + 2·λ_z·lse``, and the true-class
        ``p_y − 1`` free of cancellation. The label is kept out of the row's sum, so the loss
        ``log1p(Σ_{j≠y} e^{x_j − x_y})`` of a confident correct row is exact to rounding. On
        GPU and TPU the loss reads the logits once and the gradient once more, keeping only
        per-row numbers; on CPU the backward pass keeps ``exp(x − max)`` (as Optax does) and
        scales it in place. Masked and ignored rows get gradient 0 whatever their logits; NaN
        logits elsewhere give NaN.
        Out-of-range labels (other than ``ignore_index``) give NaN.

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
        (label smoothing). Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways",
        2022, arXiv:2204.02311 (z-loss). Gemma Team, "Gemma 2: Improving Open Language Models
        at a Practical Size", 2024, arXiv:2408.00118 (logit soft-capping).

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
    return _int_cross_entropy(
        "cross_entropy",
        logits,
        labels,
        axis,
        where,
        reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        class_weights=class_weights,
        z_loss=z_loss,
        logit_softcap=logit_softcap,
        check_labels=check_labels,
        weights=weights,
    )


def dense_loss(
    fn: str,
    logits: Any,
    labels: Any,
    axis: Any,
    where: Any,
    reduction: str,
    poly: Any = 0.0,
    *,
    label_smoothing: Any = 0.0,
    class_weights: Any = None,
    weights: Any = None,
) -> Array | tuple[Array, Array]:
    """`softmax_cross_entropy` (plus PolyLoss's term with `poly` = ε), its arguments checked in
    the name of `fn`. `axis=None` takes every axis as the class axis (one loss), as Optax."""
    _checks.check_reduction(reduction, fn)
    _checks.check_floating(logits, "logits", fn)
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.floating):
        if not jnp.issubdtype(labels.dtype, jnp.integer) and labels.dtype != jnp.bool_:
            raise TypeError(
                f"{fn}: `labels` must be probabilities (or integer one-hot rows), got dtype "
                f"{labels.dtype} with shape {labels.shape}."
            )
        # Integer one-hot targets, as Optax accepts them. Class indices are a different input.
        if labels.ndim < logits.ndim:
            raise TypeError(
                f"{fn}: `labels` are integers of shape {labels.shape} for logits of shape "
                f"{logits.shape}: class indices go to "
                "`jaxloss.softmax_cross_entropy_with_integer_labels`; one-hot rows must have "
                "the logits' shape."
            )
        labels = labels.astype(_checks.compute_dtype(logits.dtype))
    _checks.check_broadcasts_to(labels, logits.shape, "labels", "logits", fn)
    if axis is None:
        axis = tuple(range(logits.ndim))
    axes = _checks.canonicalize_axes(axis, logits.ndim, "logits", logits.shape, fn)
    _checks.check_static_classes(logits.shape, axes, "logits", fn)
    eps = _checks.traced_number(label_smoothing, "label_smoothing", fn, low=0.0, high=1.0)
    example_mask, class_mask = _batch_mask(where, logits.shape, axes, fn)
    x = _checks.classes_last(logits, axes)
    t = _checks.classes_last(jnp.broadcast_to(labels, logits.shape), axes)
    t = _soft_targets(t, eps, class_weights, class_mask, logits.shape, fn)
    valid = None
    if example_mask is not None:
        valid = example_mask
        class_mask = jnp.broadcast_to(example_mask[..., None], x.shape)
    elif class_mask is not None:
        valid = jnp.any(class_mask, axis=-1)
    poly_t = None
    if not _checks.is_static(poly):
        poly, poly_t = None, jnp.asarray(poly).astype(_checks.compute_dtype(x.dtype))
    loss = _dense_ce(poly, x, t, class_mask, poly_t)
    w = _options.example_weights(weights, loss.shape, fn, "the batch shape of `logits`")
    return _options.reduce(loss, reduction, valid, None, w)


def _soft_targets(t, eps, class_weights, class_mask, shape, fn):
    """PyTorch's soft targets: mixed with the uniform distribution over the K′ classes left in
    by a class mask (``(1 − ε)·t + ε/K′``), then each class scaled by its weight."""
    k = t.shape[-1]
    if not _options.is_zero(eps):
        tf = t.astype(_checks.compute_dtype(t.dtype))
        if class_mask is None:
            n_cls = jnp.asarray(k, tf.dtype)
        else:
            n_cls = jnp.maximum(jnp.sum(class_mask, -1, keepdims=True, dtype=tf.dtype), 1)
        e = eps if _checks.is_static(eps) else eps.astype(tf.dtype)
        t = (1.0 - e) * tf + e / n_cls
    cw = _options.class_weight_table(class_weights, k, "logits", shape, fn)
    if cw is not None:
        tf = t.astype(_checks.compute_dtype(t.dtype))
        t = tf * cw.astype(tf.dtype).reshape((1,) * (t.ndim - 1) + (k,))
    return t


@_checks.public
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    label_smoothing: float = 0.0,
    class_weights: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Softmax cross-entropy against one-hot or soft targets (a drop-in for Optax's).

    In plain text: ℓᵢ = −Σ_j t_ij · log softmax(xᵢ)_j.

    .. math::
        \ell_i = -\sum_j t_{ij} \log \operatorname{softmax}(x_i)_j

    With ``label_smoothing`` ε and ``class_weights`` w (PyTorch's soft-target formula), t_ij is
    replaced by w_j·t′_ij, t′ = (1 − ε)·t + ε/K′:

    .. math::
        \ell_i = -\sum_j w_j\, t'_{ij} \log \operatorname{softmax}(x_i)_j, \qquad
        t' = (1 - \varepsilon)\, t + \varepsilon / K'

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        labels: ``[..., K]`` target probabilities (each row is a distribution), integer
            one-hot rows, or any shape that broadcasts to the logits'.
        axis: the class axis or tuple of axes; ``None`` for every axis (one loss, as Optax).
        where: optional boolean mask shaped like the batch (drops examples) or like ``logits``
            (drops classes).
        label_smoothing: ε in [0, 1]: the targets are mixed with the uniform distribution over
            the :math:`K'` classes ``where`` leaves in, as PyTorch's ``F.cross_entropy(x,
            probs, label_smoothing=ε)``. May be traced (a schedule; differentiable): a traced ε
            outside [0, 1] gives NaN.
        class_weights: optional ``[K]`` weights of the class terms (PyTorch's ``weight`` with
            probability targets; differentiable). Unlike with class indices, ``"mean"`` then
            still divides by the number of examples, not by a sum of weights (PyTorch).
        weights: optional per-example (sample) weights ``s`` of the batch shape (or
            broadcasting to it), differentiable: each loss becomes ``s·ℓ`` (0 where ``s = 0``)
            and ``"mean"`` is ``Σ s·ℓ / Σ s`` over the kept examples; ``"sum_and_count"``
            returns ``Σ s`` as the count.
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (over the examples ``where``
            keeps) or ``"sum_and_count"``.

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
        >>> # PyTorch's F.cross_entropy(logits, targets, label_smoothing=0.1, weight=w):
        >>> w = jnp.array([1.0, 2.0, 0.5])
        >>> smoothed = jaxloss.softmax_cross_entropy(
        ...     logits, targets, label_smoothing=0.1, class_weights=w)
        >>> print(smoothed)
        [0.4424 3.0393]
        >>> # Sample weights: Σ s·ℓ / Σ s.
        >>> s = jnp.array([1.0, 3.0])
        >>> print(jaxloss.softmax_cross_entropy(logits, targets, weights=s, reduction="mean"))
        1.4204
    """
    return dense_loss(
        "softmax_cross_entropy",
        logits,
        labels,
        axis,
        where,
        reduction,
        label_smoothing=label_smoothing,
        class_weights=class_weights,
        weights=weights,
    )


@_checks.public
def nll_loss(
    log_probs: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    class_weights: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "none",
    check_labels: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Negative log-likelihood of integer labels under given log-probabilities.

    In plain text: ℓᵢ = −w_{yᵢ} · log q_{i,yᵢ}.

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
        weights: optional per-example weights shaped like ``labels`` (or broadcasting to it),
            as in ``cross_entropy``: ``"mean"`` is ``Σ s·w_y·ℓ / Σ s·w_y``.
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
    x, y, in_range, valid, class_mask = prepare_int(
        log_probs, labels, axis, where, fn, check_labels, ignore_index
    )
    if class_mask is not None:
        raise ValueError(
            f"{fn}: `where` must be shaped like `labels` {np.shape(labels)} (an example mask); got "
            f"{_checks._shape(where)}. Mask classes in the `log_softmax` that produced `log_probs`."
        )
    cdt = _checks.compute_dtype(x.dtype)
    cw = _options.class_weight_table(class_weights, x.shape[-1], "log_probs", x.shape, fn)
    w_y = None if cw is None else _checks.take(cw.astype(cdt), y)
    # Gathered in the input's dtype, then converted: converting first would write a float32 copy.
    picked = _checks.take_label(x, y[..., None])[..., 0].astype(cdt)
    nll = -jnp.where(valid, picked, 0)
    if w_y is not None:
        # Weight 0 on a −inf log-probability is 0, not NaN; the weight's gradient stays nll.
        nll = jnp.where((w_y == 0) & jnp.isinf(nll), 0, nll)
    loss = nll if w_y is None else w_y * nll
    loss = jnp.where(valid, loss, 0)
    loss = jnp.where(valid & ~in_range, jnp.nan, loss)
    w = _options.example_weights(weights, loss.shape, fn, "the shape of `labels`")
    return _options.reduce(loss, reduction, valid, w_y, w)
