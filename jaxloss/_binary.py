"""Binary and multi-label losses on logits: sigmoid cross-entropy, PyTorch's BCE with logits, and
the sigmoid focal loss.

Every element is its own binary problem (no class axis), so ``where`` is an elementwise mask and
the ``"mean"`` counts kept elements. The losses are written with the two softplus values

    softplus(x) = −log σ(−x) = max(x, 0) + log1p(exp(−|x|)),
    softplus(−x) = −log σ(x)  = max(−x, 0) + log1p(exp(−|x|)),

each a sum of two non-negative terms, so neither `log σ(x)` underflows nor `softplus(x) − t·x`
cancels: the loss of x = 1e4 with t = 0 is 1e4 exactly, and with t = 1 it is 0 exactly. Their
gradients are `custom_jvp` rules (forward mode, and so `jacfwd` and `hessian`, work) built from
`σ(x)` and `σ(−x)` separately, `σ(x) − t = (1 − t)·σ(x) − t·σ(−x)`, so a confident element keeps
its tiny gradient instead of rounding `σ(x)` to 1 first.

A product `c·s` of a coefficient and a softplus is written `_mul0(c, s)`: 0 when `c = 0`, even
where `s` is infinite (a label of exactly 1 on a logit of `+inf` has loss 0, not `0·∞`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxloss import _checks, _options

# ---------------------------------------------------------------------------------------------
# Elementwise pieces.


@jax.custom_jvp
def _mul0(c: Array, s: Array) -> Array:
    """c·s with 0·anything = 0 (an infinite `s` times a zero coefficient is 0, not NaN)."""
    zero = c == 0
    return jnp.where(zero, jnp.zeros_like(c), c * jnp.where(zero, jnp.ones_like(s), s))


@_mul0.defjvp
def _mul0_jvp(primals, tangents):
    # d(c·s) = s·dc + c·ds, with s's non-finite values taken as 0 where c = 0: autodiff of the
    # double `where` gave ∂/∂c = 0 at c = 0 (a hard label's mixed Hessian: 0 where it is s).
    (c, s), (tc, ts) = primals, tangents
    lost = (c == 0) & ~jnp.isfinite(s)
    return _mul0(c, s), jnp.where(lost, jnp.zeros_like(s), s) * tc + _mul0(c, ts)


@jax.custom_jvp
def _softplus_pair(x: Array) -> tuple[Array, Array]:
    """(softplus(x), softplus(−x)) = (−log σ(−x), −log σ(x)), each exact at any |x|."""
    tail = jnp.log1p(jnp.exp(-jnp.abs(x)))
    return jnp.maximum(x, 0) + tail, jnp.maximum(-x, 0) + tail


@_softplus_pair.defjvp
def _softplus_pair_jvp(primals, tangents):
    # softplus′(±x) = ±σ(±x), stated: at x = 0 autodiff of the pieces gives 0.5 − 0.5 = 0 (JAX
    # splits `maximum`'s derivative at the tie and takes `abs`'s from the right), which the focal
    # loss's Hessian differentiates.
    (x,), (tx,) = primals, tangents
    return _softplus_pair(x), (jax.nn.sigmoid(x) * tx, -jax.nn.sigmoid(-x) * tx)


def _bce_target_slope_impl(x: Array, pw: Array) -> Array:
    # pw·softplus(−x) − softplus(x) = (pw − 1)·log1p(e^{−|x|}) + pw·max(−x, 0) − max(x, 0): −x
    # exactly when pw = 1.
    tail = jnp.log1p(jnp.exp(-jnp.abs(x)))
    return (pw - 1) * tail + _mul0(pw, jnp.maximum(-x, 0)) - jnp.maximum(x, 0)


_bce_target_slope = jax.custom_jvp(_bce_target_slope_impl)
"""∂ℓ/∂t of the BCE, smooth at x = 0 (its pieces are not: see `_softplus_pair_jvp`)."""


def _bce_target_slope_jvp(primals, tangents):
    x, pw = primals
    tx, tpw = (None if isinstance(v, SymbolicZero) else v for v in tangents)
    out = _bce_target_slope_impl(x, pw)
    terms = []
    if tx is not None:
        terms.append(-(pw * jax.nn.sigmoid(-x) + jax.nn.sigmoid(x)) * tx)
    if tpw is not None:
        terms.append(_softplus_pair(x)[1] * tpw)
    return out, _sum_terms(terms, out)


def _log_softplus(z: Array) -> Array:
    """log softplus(z), finite where softplus(z) underflows: for z < −20, log log1p(e^z) is
    z − e^z/2 to O(e^{2z}) (1e-18 relative), so no log 0 at z = −1e4. At the boundary the two
    branches agree in value and derivative to that order."""
    low = z < -20
    zs = jnp.where(low, jnp.zeros_like(z), z)
    zl = jnp.where(low, z, jnp.full_like(z, -20))
    return jnp.where(low, zl - 0.5 * jnp.exp(zl), jnp.log(jnp.logaddexp(zs, 0)))


# ---------------------------------------------------------------------------------------------
# Binary cross-entropy: ℓ = pw·t·softplus(−x) + (1 − t)·softplus(x).


def _bce_impl(x: Array, t: Array, pw: Array) -> Array:
    sp_pos, sp_neg = _softplus_pair(x)
    return _mul0(pw * t, sp_neg) + _mul0(1 - t, sp_pos)


_bce = jax.custom_jvp(_bce_impl)


def _bce_jvp(primals, tangents):
    x, t, pw = primals
    tx, tt, tpw = (None if isinstance(v, SymbolicZero) else v for v in tangents)
    loss = _bce_impl(x, t, pw)
    terms = []
    if tx is not None:
        # ∂ℓ/∂x = (pw·t + 1 − t)·σ(x) − pw·t = (1 − t)·σ(x) − pw·t·σ(−x): two accurate terms.
        terms.append(((1 - t) * jax.nn.sigmoid(x) - (pw * t) * jax.nn.sigmoid(-x)) * tx)
    if tt is not None:
        terms.append(_bce_target_slope(x, pw) * tt)
    if tpw is not None:
        terms.append(_mul0(t, _softplus_pair(x)[1]) * tpw)
    return loss, _sum_terms(terms, loss)


def _sum_terms(terms: list[Array], like: Array) -> Array:
    """The tangent's terms added up; zeros only when there is none (a zeros array that a term is
    added to would be kept for the backward pass as a residual)."""
    if not terms:
        return jnp.zeros_like(like)
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


_bce.defjvp(_bce_jvp, symbolic_zeros=True)
_bce_target_slope.defjvp(_bce_target_slope_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------------
# Focal loss: ℓ = α_t·m^γ·B, m = 1 − p_t = (1 − t)·σ(x) + t·σ(−x), B = the BCE above (pw = 1),
# α_t = α·t + (1 − α)·(1 − t) (1 without α). α is inside the rule, so the backward pass keeps one
# array (the gradient's coefficient), not α_t besides it.


def _focal_parts(gamma: Any, x: Array, t: Array):
    sp_pos, sp_neg = _softplus_pair(x)
    bce = _mul0(t, sp_neg) + _mul0(1 - t, sp_pos)
    log_m = _log_m(t, sp_pos, sp_neg)
    static = _checks.is_static(gamma)
    if static and gamma == 0:
        weight = None  # exactly the cross-entropy
    elif static and float(gamma).is_integer() and gamma <= 8:
        # Integer γ: m^γ by multiplication, as exact as m (m underflows only where m^γ does).
        m = (1 - t) * jax.nn.sigmoid(x) + t * jax.nn.sigmoid(-x)
        weight = lax.integer_pow(m, int(gamma))
    else:
        weight = jnp.exp(gamma * log_m)
    return bce, log_m, weight


def _log_m(t: Array, sp_pos: Array, sp_neg: Array) -> Array:
    """log m, m = 1 − p_t = (1 − t)·σ(x) + t·σ(−x), from the log-sigmoids: hard labels give
    −softplus(±x) exactly, never log of an underflowed m, so m^γ = exp(γ·log m) is right for
    γ < 1 where m itself is subnormal or 0."""
    log_1mt, log_t = _log_label_pair(t)
    return jnp.logaddexp(log_1mt - sp_neg, log_t - sp_pos)


def _log_label_pair(t: Array) -> tuple[Array, Array]:
    """(log(1 − t), log t) of the label clamped into [0, 1]: a label one rounding step outside
    (1 + 2⁻²³, or −1e-8 from a computed target) would give log of a negative number, NaN, where
    integer γ (m^γ by multiplication) and Optax stay finite. NaN stays NaN."""
    tc = jnp.clip(t, 0, 1)
    return jnp.log1p(-tc), jnp.log(tc)


def _focal_ratio_impl(x: Array, t: Array) -> Array:
    """m′/m = (1 − 2t)·σ(x)σ(−x)/m = (1 − 2t) / D, D = (1 − t)(1 + e^x) + t(1 + e^{−x}):
    |m′/m| ≤ 1 and never 0/0, and m^{γ−1}, infinite at p_t = 1 for γ < 1, is never formed."""
    denom = _mul0(1 - t, 1 + jnp.exp(x)) + _mul0(t, 1 + jnp.exp(-x))
    return (1 - 2 * t) / denom


_focal_ratio = jax.custom_jvp(_focal_ratio_impl)


def _focal_ratio_jvp(primals, tangents):
    # Only a Hessian differentiates this. Autodiff of (1 − 2t)/D divides by D², inf/inf where
    # e^{|x|} overflows; stated with every quotient by m in logs instead (finite x only):
    # ∂/∂x = −ratio·(a·σ(x) − b·σ(−x)), a = (1 − t)σ(x)/m, b = tσ(−x)/m;
    # ∂/∂t = −2/D − ratio·(σ(−x)² − σ(x)²)/m, with 1/D = σ(x)σ(−x)/m.
    x, t = primals
    tx, tt = (None if isinstance(v, SymbolicZero) else v for v in tangents)
    ratio = _focal_ratio_impl(x, t)
    sp_pos, sp_neg = _softplus_pair(x)  # −log σ(−x), −log σ(x)
    log_m = _log_m(t, sp_pos, sp_neg)
    terms = []
    if tx is not None:
        log_1mt, log_t = _log_label_pair(t)
        a = jnp.exp(log_1mt - sp_neg - log_m)
        b = jnp.exp(log_t - sp_pos - log_m)
        terms.append(-ratio * (a * jax.nn.sigmoid(x) - b * jax.nn.sigmoid(-x)) * tx)
    if tt is not None:
        # Infinite where e^{|x|} overflows at a hard label: the true slope is beyond the float.
        inv_d = jnp.exp(-sp_pos - sp_neg - log_m)
        sq = jnp.exp(-2 * sp_pos - log_m) - jnp.exp(-2 * sp_neg - log_m)
        terms.append((-2 * inv_d - ratio * sq) * tt)
    return ratio, _sum_terms(terms, ratio)


_focal_ratio.defjvp(_focal_ratio_jvp, symbolic_zeros=True)


def _alpha_t(alpha: Any, t: Array) -> Array | None:
    return None if alpha is None else alpha * t + (1 - alpha) * (1 - t)


def _scaled(a: Array | None, v: Array) -> Array:
    return v if a is None else a * v


def _focal_impl(gamma: Any, alpha: Any, x: Array, t: Array, hyper: tuple) -> Array:
    """`gamma`, `alpha`: Python numbers (alpha None: no weighting), or None where the value is
    traced and given in `hyper` = (γ or None, α or None)."""
    gamma, alpha = _focal_options(gamma, alpha, hyper)
    bce, _, weight = _focal_parts(gamma, x, t)
    return _scaled(_alpha_t(alpha, t), bce if weight is None else _mul0(weight, bce))


def _focal_options(gamma: Any, alpha: Any, hyper: tuple) -> tuple[Any, Any]:
    return (gamma if hyper[0] is None else hyper[0]), (alpha if hyper[1] is None else hyper[1])


_focal = jax.custom_jvp(_focal_impl, nondiff_argnums=(0, 1))


def _focal_jvp(gamma, alpha, primals, tangents):
    x, t, hyper = primals
    gamma, alpha = _focal_options(gamma, alpha, hyper)
    tx, tt = (None if isinstance(v, SymbolicZero) else v for v in tangents[:2])
    t_gamma, t_alpha = (
        None if h is None or isinstance(v, SymbolicZero) else v
        for h, v in zip(hyper, tangents[2], strict=True)
    )
    bce, log_m, weight = _focal_parts(gamma, x, t)
    unweighted = bce if weight is None else _mul0(weight, bce)
    a_t = _alpha_t(alpha, t)
    terms = []
    if tx is not None:
        # ∂ℓ/∂x = α_t·[γ·m^γ·(m′/m)·B + m^γ·(σ(x) − t)], m′/m by `_focal_ratio`.
        g = (1 - t) * jax.nn.sigmoid(x) - t * jax.nn.sigmoid(-x)
        if weight is not None:
            g = _mul0(gamma * weight * _focal_ratio(x, t), bce) + weight * g
        terms.append(_scaled(a_t, g) * tx)
    if tt is not None:
        # ∂ℓ/∂t = α_t·[γ·m^γ·(B/m)·(σ(−x) − σ(x)) − m^γ·x] + (2α − 1)·m^γ·B, with
        # B/m = exp(log B − log m) in logs: both underflow at |x| = 1e4, their ratio is about 1.
        if weight is None:
            g = -x
        else:
            log_1mt, log_t = _log_label_pair(t)
            log_b = jnp.logaddexp(log_t + _log_softplus(-x), log_1mt + _log_softplus(x))
            b_over_m = jnp.exp(log_b - log_m)
            g = _mul0(gamma * weight * -jnp.tanh(x / 2), b_over_m) - _mul0(weight, x)
        g = _scaled(a_t, g)
        if alpha is not None:
            g = g + (2 * alpha - 1) * unweighted
        terms.append(g * tt)
    if t_gamma is not None:
        # ∂ℓ/∂γ = α_t·m^γ·log m·B: 0 where m^γ·B = 0 (p_t = 1) or log m = 0 (B = inf, m = 1).
        w_b = unweighted
        zero = (w_b == 0) | (log_m == 0)
        d_gamma = jnp.where(zero, jnp.zeros_like(w_b), jnp.where(zero, 1, w_b) * log_m)
        terms.append(_scaled(a_t, d_gamma) * t_gamma)
    if t_alpha is not None:
        terms.append((2 * t - 1) * unweighted * t_alpha)  # ∂α_t/∂α = 2t − 1
    return _scaled(a_t, unweighted), _sum_terms(terms, unweighted)


_focal.defjvp(_focal_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------------
# Arguments.


def _shape_error(fn: str, name: str, shape: tuple, target: tuple, what: str) -> ValueError:
    return ValueError(
        f"{fn}: `{name}` with shape {shape} does not broadcast to {what} {target} (the "
        "broadcast shape of `logits` and `labels`)."
    )


def _prepare(fn: str, logits: Any, labels: Any, where: Any, same_shape: bool = False, **options):
    """(x, t, mask, options, cdt): logits and labels broadcast together in the compute dtype;
    each array option (None stays None) checked to broadcast to that shape without enlarging
    it, and given its rank; `mask` the broadcast boolean `where` or None.

    `labels` may broadcast to the logits' shape (Optax's rule) but never enlarge it: `[N, 1]`
    logits against `[N]` labels would otherwise give an `[N, N]` loss, silently. With
    `same_shape` (PyTorch's rule) the shapes must be equal."""
    _checks.check_floating(logits, "logits", fn)
    logits = jnp.asarray(logits)
    labels = _checks.real_array(labels, "labels", fn)
    try:
        shape = tuple(jnp.broadcast_shapes(logits.shape, labels.shape))
    except ValueError:
        raise ValueError(
            f"{fn}: `logits` with shape {logits.shape} and `labels` with shape {labels.shape} "
            "do not broadcast together."
        ) from None
    if shape != logits.shape or (same_shape and labels.shape != logits.shape):
        hint = ""
        if logits.shape[-1:] == (1,) and labels.shape == logits.shape[:-1]:
            hint = (
                " A one-output head gives [N, 1] logits: squeeze them (`logits[..., 0]`) or "
                "give the labels the same trailing axis (`labels[..., None]`)."
            )
        rule = "the same shape as" if same_shape else "a shape that broadcasts to"
        grown = f", which would give a loss of shape {shape}" if shape != logits.shape else ""
        raise ValueError(
            f"{fn}: `labels` must have {rule} `logits`; got logits {logits.shape} and labels "
            f"{labels.shape}{grown}.{hint}"
        )
    cdt = _checks.compute_dtype(logits.dtype)
    x = jnp.broadcast_to(logits.astype(cdt), shape)
    t = jnp.broadcast_to(labels.astype(cdt), shape)
    out = {}
    for name, value in options.items():
        if value is None:
            out[name] = None
            continue
        value = _checks.real_array(value, name, fn)
        try:
            ok = jnp.broadcast_shapes(value.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise _shape_error(fn, name, value.shape, shape, "the loss's shape")
        # Same rank, not broadcast: a per-class [K] weight stays [1, K], so the backward pass
        # keeps it at its own size.
        out[name] = value.astype(cdt).reshape((1,) * (len(shape) - value.ndim) + value.shape)
    mask = None
    if where is not None:
        where_arr = jnp.asarray(where)
        if where_arr.dtype != jnp.bool_:
            raise TypeError(
                f"{fn}: `where` must be a boolean mask, got dtype {where_arr.dtype} with shape "
                f"{where_arr.shape}."
            )
        try:
            ok = jnp.broadcast_shapes(where_arr.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise _shape_error(fn, "where", where_arr.shape, shape, "the loss's shape")
        mask = jnp.broadcast_to(where_arr, shape)
    return x, t, mask, out, cdt


def _masked(mask: Array | None, *pairs: tuple[Array | None, float]) -> list[Array | None]:
    """Each array with its masked entries replaced by a harmless constant (before any
    arithmetic), so a NaN or ±inf there reaches neither the loss nor a gradient."""
    if mask is None:
        return [a for a, _ in pairs]
    return [None if a is None else jnp.where(mask, a, jnp.full_like(a, c)) for a, c in pairs]


def _finish(fn: str, loss: Array, mask: Array | None, reduction: str, weights: Any):
    if mask is not None:
        loss = jnp.where(mask, loss, jnp.zeros_like(loss))
    w = _options.example_weights(
        weights, loss.shape, fn, "the broadcast shape of `logits` and `labels`"
    )
    return _options.reduce(loss, reduction, mask, None, w)


# ---------------------------------------------------------------------------------------------
# Public functions.


@_checks.public
def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    where: ArrayLike | None = None,
    *,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Sigmoid (binary) cross-entropy of each element (a drop-in for Optax's).

    Each element is an independent binary prediction: binary classification, or multi-label
    classification with one logit per class.

    In plain text: ℓ = −t·log σ(x) − (1 − t)·log(1 − σ(x)) = softplus(x) − t·x.

    .. math::
        \ell = -t \log \sigma(x) - (1 - t) \log\big(1 - \sigma(x)\big)
             = \operatorname{softplus}(x) - t\,x

    Args:
        logits: ``[...]`` logits, floating dtype.
        labels: probabilities of the positive class, in ``[0, 1]``, of a shape that broadcasts
            to ``logits``' (never enlarging it: ``[N, 1]`` logits with ``[N]`` labels is an
            error); integer or bool labels are converted to the logits' float type (as Optax
            does).
        where: optional boolean mask broadcastable to the loss's shape: masked elements give
            loss 0 and gradient 0 whatever their inputs, and leave the ``"mean"`` count.
        weights: optional per-element (sample) weights ``s``, broadcastable to the loss's
            shape, differentiable: each loss becomes ``s·ℓ`` (0 where ``s = 0``) and
            ``"mean"`` is ``Σ s·ℓ / Σ s`` over the kept elements (``"sum_and_count"`` returns
            ``Σ s``).
        reduction: ``"none"`` (the default: one loss per element, as Optax returns), ``"sum"``,
            ``"mean"`` over the kept elements (0 when none is kept) or ``"sum_and_count"``.

    Returns:
        Losses shaped like ``broadcast(logits, labels)`` for ``"none"``, else a scalar (a pair
        for ``"sum_and_count"``); float32 for bf16/f16 logits.

    Numerics:
        Computed as ``max(x, 0) − t·x + log1p(exp(−|x|))`` split into non-negative terms, so
        exact at any ``|x|``: ``x = 1e4`` gives ``1e4`` for ``t = 0`` and ``0`` for ``t = 1``
        (and ``t = 1`` at ``x = +inf`` gives 0, where Optax gives NaN). The gradient is a
        ``custom_jvp``: ``σ(x) − t`` w.r.t. the logits, written ``(1 − t)·σ(x) − t·σ(−x)`` so a
        confident element keeps its small gradient (``−2.06e-9`` at ``x = 20``, ``t = 1``,
        where ``σ(x) − 1`` rounds to 0 in float32), and ``−x`` w.r.t. the labels. Labels
        outside ``[0, 1]`` are used as given (the formula is linear in ``t``).

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[2.0, -1.0], [0.0, 1e4]])
        >>> labels = jnp.array([[1.0, 0.0], [0.5, 0.0]])
        >>> print(jaxloss.sigmoid_binary_cross_entropy(logits, labels))
        [[    0.1269     0.3133]
         [    0.6931 10000.    ]]
    """
    fn = "sigmoid_binary_cross_entropy"
    _checks.check_reduction(reduction, fn)
    x, t, mask, _, _ = _prepare(fn, logits, labels, where)
    x, t = _masked(mask, (x, 0.0), (t, 0.0))
    assert x is not None and t is not None
    return _finish(fn, _bce(x, t, jnp.ones((), x.dtype)), mask, reduction, weights)


@_checks.public
def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    labels: ArrayLike,
    where: ArrayLike | None = None,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Binary cross-entropy on logits with PyTorch's options (``weight``, ``pos_weight``).

    The options of ``torch.nn.functional.binary_cross_entropy_with_logits``, on Optax's call
    shape. With :math:`w` = ``weight``, :math:`p_w` = ``pos_weight`` and the smoothed label
    :math:`t' = (1-\varepsilon)\,t + \varepsilon/2`:

    In plain text: ℓ = −w·[p_w·t′·log σ(x) + (1 − t′)·log(1 − σ(x))], t′ = (1 − ε)·t + ε/2.

    .. math::
        \ell = -w \big[p_w\, t' \log \sigma(x) + (1 - t') \log\big(1 - \sigma(x)\big)\big],
        \qquad t' = (1-\varepsilon)\, t + \tfrac{\varepsilon}{2}

    Args:
        logits: ``[...]`` logits, floating dtype.
        labels: probabilities of the positive class, of ``logits``' shape (PyTorch's rule;
            ``weight`` and ``pos_weight`` broadcast); integer or bool labels are converted.
        where: optional boolean mask broadcastable to the loss's shape: masked elements give
            loss 0 and gradient 0 whatever their inputs, and leave the ``"mean"`` count.
        weight: optional rescaling of each element's loss, broadcastable to the loss's shape
            (PyTorch's ``weight``); differentiable.
        pos_weight: optional weight of the positive term, broadcastable to the loss's shape,
            usually ``[K]`` for the class (last) axis (PyTorch's ``pos_weight``: the number of
            negatives over positives of each class); differentiable.
        label_smoothing: ε in ``[0, 1]``: labels are squeezed towards 1/2,
            ``t′ = (1 − ε)·t + ε/2``. PyTorch's function has no such option; this is the
            convention of Keras's ``BinaryCrossentropy(label_smoothing=ε)`` (and of Optax's
            ``smooth_labels`` on the two classes {t, 1 − t}). ``pos_weight`` multiplies the
            smoothed positive term. May be traced (a schedule; differentiable): a traced value
            outside ``[0, 1]`` gives NaN.
        weights: optional per-element (sample) weights ``s``, broadcastable to the loss's
            shape, differentiable: each loss becomes ``s·ℓ`` (0 where ``s = 0``) and
            ``"mean"`` is ``Σ s·ℓ / Σ s`` over the kept elements (``"sum_and_count"`` returns
            ``Σ s``). Unlike ``weight`` (PyTorch's), they weight the mean's count too.
        reduction: ``"none"`` (the default here; PyTorch's default is ``"mean"``), ``"sum"``,
            ``"mean"`` or ``"sum_and_count"``. The mean divides by the number of kept elements,
            not by the sum of ``weight``, as PyTorch's does (masked elements leave the count).

    Returns:
        Losses shaped like ``broadcast(logits, labels)`` for ``"none"``, else a scalar (a pair
        for ``"sum_and_count"``); float32 for bf16/f16 logits.

    Numerics:
        ``log σ(x) = −softplus(−x)`` and ``log(1 − σ(x)) = −softplus(x)``, each a sum of two
        non-negative terms, so the loss is exact at any ``|x|`` with or without ``pos_weight``
        (``x = −1e4``, ``t = 1`` gives ``p_w·1e4``). The gradient w.r.t. the logits is the
        ``custom_jvp`` ``w·[(p_w·t′ + 1 − t′)·σ(x) − p_w·t′]``, computed as
        ``w·[(1 − t′)·σ(x) − p_w·t′·σ(−x)]`` (no cancellation for hard labels); ``weight`` and
        ``pos_weight`` get their gradients too. A zero coefficient times an infinite softplus
        is 0 (``t = 1`` at ``x = +inf``: loss 0).

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
        >>> labels = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        >>> pos_weight = jnp.array([1.0, 2.0, 3.0])
        >>> print(jaxloss.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight))
        [[0.1269 0.3133 1.4222]
         [0.0486 1.3863 1.3133]]
        >>> mean = jaxloss.binary_cross_entropy_with_logits(logits, labels, reduction="mean")
        >>> print(mean)
        0.4949
    """
    fn = "binary_cross_entropy_with_logits"
    _checks.check_reduction(reduction, fn)
    eps = _checks.traced_number(label_smoothing, "label_smoothing", fn, low=0.0, high=1.0)
    x, t, mask, opts, _ = _prepare(
        fn, logits, labels, where, same_shape=True, weight=weight, pos_weight=pos_weight
    )
    w, pw = opts["weight"], opts["pos_weight"]
    if not _checks.is_static(eps):
        eps = eps.astype(t.dtype)
        t = t * (1 - eps) + eps / 2
    elif eps:
        t = t * (1 - eps) + eps / 2
    x, t, w, pw = _masked(mask, (x, 0.0), (t, 0.0), (w, 0.0), (pw, 1.0))
    assert x is not None and t is not None
    loss = _bce(x, t, jnp.ones((), x.dtype) if pw is None else pw)
    if w is not None:
        loss = w * loss
    return _finish(fn, loss, mask, reduction, weights)


@_checks.public
def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    where: ArrayLike | None = None,
    *,
    alpha: float | None = None,
    gamma: float = 2.0,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Sigmoid focal loss of each element (a drop-in for Optax's).

    Cross-entropy scaled by :math:`(1 - p_t)^\gamma`, where :math:`p_t` is the probability the
    model gives the label, so confident, correct elements count less; ``alpha`` balances
    positives against negatives.

    In plain text: ℓ = α_t·(1 − p_t)^γ·BCE(x, t), with 1 − p_t = (1 − t)·σ(x) + t·σ(−x) and
    α_t = α·t + (1 − α)·(1 − t) (α_t = 1 without ``alpha``).

    .. math::
        \ell = \alpha_t\, (1 - p_t)^{\gamma}\, \big[\operatorname{softplus}(x) - t\,x\big],
        \qquad 1 - p_t = (1 - t)\,\sigma(x) + t\,\sigma(-x)

    Args:
        logits: ``[...]`` logits, floating dtype.
        labels: probabilities of the positive class in ``[0, 1]`` (hard or soft), of a shape
            that broadcasts to ``logits``' (never enlarging it); integer or bool labels are
            converted.
        where: optional boolean mask broadcastable to the loss's shape: masked elements give
            loss 0 and gradient 0 whatever their inputs, and leave the ``"mean"`` count.
        alpha: optional weight α in ``[0, 1]`` of the positive term (``α_t = α·t + (1 − α)(1 −
            t)``); ``None`` for no weighting (Optax's default; Lin et al. use 0.25).
        gamma: the focusing exponent γ ≥ 0; 0 gives the (α-weighted) cross-entropy exactly.

            ``alpha`` and ``gamma`` may be traced (a schedule's value under ``jit``, as Optax
            allows), and are then differentiable; a traced value outside its range gives NaN.
        weights: optional per-element (sample) weights ``s``, broadcastable to the loss's
            shape, differentiable: each loss becomes ``s·ℓ`` (0 where ``s = 0``) and
            ``"mean"`` is ``Σ s·ℓ / Σ s`` over the kept elements (``"sum_and_count"`` returns
            ``Σ s``).
        reduction: ``"none"`` (the default, as Optax), ``"sum"``, ``"mean"`` over the kept
            elements or ``"sum_and_count"``.

    Returns:
        Losses shaped like ``broadcast(logits, labels)`` for ``"none"``, else a scalar (a pair
        for ``"sum_and_count"``); float32 for bf16/f16 logits.

    Numerics:
        ``log(1 − p_t)`` comes from log-sigmoids (``−softplus(±x)`` for hard labels), so the
        factor is right where ``1 − p_t`` itself underflows (``γ < 1`` at large ``|x|``); for
        integer γ up to 8 it is ``(1 − p_t)`` multiplied out. The gradient is a ``custom_jvp``
        that never forms ``(1 − p_t)^{γ−1}`` (infinite at ``p_t = 1`` for ``γ < 1``): it uses
        ``(1 − p_t)^γ·d log(1 − p_t)/dx``, whose second factor lies in ``[−1, 1]``, so values
        and gradients are finite for every finite logit and every ``γ ≥ 0``, and at
        ``p_t = 1`` (a logit of ``±inf`` on its label) the loss and its gradient are 0, the
        limits (Optax gives NaN for both). The gradient w.r.t. hard labels is the true one
        (Optax's drops the factor's term there). A traced γ computes the factor as
        ``exp(γ·log(1 − p_t))`` for every γ (a Python integer γ multiplies it out).

    References:
        Lin, Goyal, Girshick, He and Dollár, "Focal Loss for Dense Object Detection",
        ICCV 2017, arXiv:1708.02002.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([3.0, -1.0, 0.0, 1e4])
        >>> labels = jnp.array([1.0, 1.0, 0.0, 0.0])
        >>> print(jaxloss.sigmoid_focal_loss(logits, labels, alpha=0.25))
        [   0.        0.1755    0.13   7500.    ]
    """
    fn = "sigmoid_focal_loss"
    _checks.check_reduction(reduction, fn)
    g = _checks.traced_number(gamma, "gamma", fn, low=0.0)
    a = None if alpha is None else _checks.traced_number(alpha, "alpha", fn, low=0.0, high=1.0)
    x, t, mask, _, cdt = _prepare(fn, logits, labels, where)
    x, t = _masked(mask, (x, 0.0), (t, 0.0))
    assert x is not None and t is not None
    # A traced γ or α goes to the rule as a differentiable argument (None: a Python number).
    hyper = tuple(None if v is None or _checks.is_static(v) else v.astype(cdt) for v in (g, a))
    g, a = (None if h is not None else v for v, h in zip((g, a), hyper, strict=True))
    return _finish(fn, _focal(g, a, x, t, hyper), mask, reduction, weights)
