"""Focal loss, PolyLoss and label smoothing, built on the exact cross-entropies.

Both losses are a function of the cross-entropy core's exact numbers, so they inherit its
precision where the label is nearly certain:

* Focal loss is ``α_y·g(nll)`` with ``nll = −log p_y`` from ``cross_entropy`` and
  ``g(n) = (1 − e^{−n})^γ·n``; ``1 − p_y = −expm1(−nll)`` has no cancellation. ``g`` has its
  own derivative rule, ``g'(n) = q^γ·(1 + γ·p·n/q)`` with ``q = 1 − p``, which stays finite at
  ``n → 0`` for every ``γ ≥ 0`` (autodiff of ``q^γ`` would give ``∞·0`` there for ``γ < 1``).
  The gradient w.r.t. the logits is ``α_y·g'(nll)·(softmax − onehot)``: the chain rule through
  ``cross_entropy``'s hand-derived rule, with no ``[..., K]`` residual beyond what it keeps.
* PolyLoss adds ``ε·Σ_j t_j (1 − p_j)`` to ``softmax_cross_entropy``, inside its kernel
  (`_cross_entropy.dense_loss`, the same row statistics and passes); each ``1 − p_j`` is
  ``−expm1(log p_j)`` (exact for the dominant class), and the term's derivative is stated so
  that the label's ``p_y − 1`` never cancels either.
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jaxloss import _checks, _options
from jaxloss._cross_entropy import dense_loss, int_loss

# ---------------------------------------------------------------------------------------------
# Focal loss.


def _focal_factor_impl(gamma: float, n: Array) -> Array:
    # nll ≥ 0 mathematically; a rounding −0 or −1e-16 must not make q^γ NaN for fractional γ.
    n = jnp.maximum(n, 0)
    return (-jnp.expm1(-n)) ** gamma * n


_focal_factor = jax.custom_jvp(_focal_factor_impl, nondiff_argnums=(0,))
"""g(n) for a Python γ (fixed at trace time: an integer γ is an integer power)."""

_focal_factor_traced = jax.custom_jvp(_focal_factor_impl)
"""g(n) for a traced γ (a schedule's value), differentiable in γ too."""


@_focal_factor.defjvp
def _focal_factor_jvp(gamma, primals, tangents):
    (n,), (tn,) = primals, tangents
    return _focal_factor_rule(gamma, n, tn)


@_focal_factor_traced.defjvp
def _focal_factor_traced_jvp(primals, tangents):
    (gamma, n), (tg, tn) = primals, tangents
    value, t_out = _focal_factor_rule(gamma, n, tn)
    # ∂g/∂γ = q^γ·log q·n: 0 at n = 0 (q = 0, where log q = −inf) and at n = inf (q = 1).
    n = jnp.maximum(n, 0)
    q = -jnp.expm1(-n)
    live = (n > 0) & (n < jnp.inf)
    safe_q = jnp.where(live, q, jnp.ones_like(q))
    d_gamma = jnp.where(live, value * jnp.log(safe_q), jnp.zeros_like(value))
    return value, t_out + d_gamma * tg


def _focal_factor_rule(gamma, n, tn):
    # d/dn [q^γ·n] = q^γ + γ·q^{γ−1}·p·n = q^γ·(1 + γ·p·n/q): n/q → 1 as n → 0, so the rule is
    # finite (0 for γ > 0) where autodiff of q^γ would meet ∞·0 (γ < 1). At n = +inf, p·n = 0.
    # Its tie at n = 0 splits the Hessian's derivative there, where q^γ = 0 (γ > 0) multiplies
    # every term that depends on n, and γ = 0 has none: the split never shows.
    n = jnp.maximum(n, 0)
    q = -jnp.expm1(-n)
    p = jnp.exp(-n)
    # n/q = n/(1 − e^{−n}) → 1 + n/2 as n → 0. Below √(12·eps) the series is exact to rounding,
    # and it keeps the ratio's own derivative finite (1/2) where the quotient's divides by q²,
    # which underflows on a saturated row (n = 1e-37: 0/0), for the Hessian.
    small = n < math.sqrt(12 * jnp.finfo(n.dtype).eps)
    finite_n = jnp.where(small | (n == jnp.inf), jnp.ones_like(n), n)
    ratio = jnp.where(small, 1 + n / 2, finite_n / jnp.where(small, jnp.ones_like(q), q))
    ratio = jnp.where(n == jnp.inf, jnp.zeros_like(n), ratio)
    qg = q**gamma
    return qg * n, qg * (1 + gamma * p * ratio) * tn


@_checks.public
def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    gamma: float = 2.0,
    alpha: ArrayLike | None = None,
    ignore_index: int | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Softmax focal loss of integer labels: cross-entropy scaled down on easy examples.

    In plain text: ℓ = −α_y·(1 − p_y)^γ·log p_y, p = softmax(x); α_y = 1 without ``alpha``.

    .. math::
        \ell = -\alpha_y\,(1 - p_y)^{\gamma} \log p_y, \qquad p = \operatorname{softmax}(x)

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        labels: ``[...]`` integer class indices in ``[0, K)``.
        axis: the class axis or tuple of axes (a label then indexes the flattened slice).
        where: boolean mask shaped like ``labels`` (drops examples: loss 0, gradient 0) or like
            ``logits`` (drops classes from the softmax).
        gamma: the focusing parameter γ ≥ 0; ``gamma=0`` is ``cross_entropy`` exactly. May be
            traced (a schedule's value under ``jit``; differentiable): a traced γ < 0 gives
            NaN.
        alpha: optional class balance: a scalar or a ``[K]`` array (lists and integers are
            accepted), differentiable. Each example is scaled by its label's ``α_y``.
        ignore_index: a label value (PyTorch uses -100) whose examples give loss 0 and
            gradient 0 and leave the ``"mean"`` denominator.
        weights: optional per-example weights ``s`` shaped like ``labels`` (or broadcasting to
            it), differentiable: each loss becomes ``s·ℓ`` and ``"mean"`` divides by ``Σ s``
            over the kept examples (``"sum_and_count"`` returns it).
        reduction: ``"none"``, ``"sum"``, ``"mean"`` or ``"sum_and_count"``. ``"mean"`` divides
            by the number of kept examples, not by ``Σ α_y`` (as torchvision and the paper,
            which normalises by a count of examples): ``α`` is a fixed reweighting, which
            dividing by ``Σ α_y`` would undo in a batch holding one class.

    Returns:
        ``[...]`` losses for ``"none"``, a scalar for ``"sum"``/``"mean"``, a pair for
        ``"sum_and_count"``; float32 for bf16/f16 logits.

    Numerics:
        ``nll = −log p_y`` comes from ``cross_entropy`` (exact when ``p_y → 1``), and
        ``1 − p_y = −expm1(−nll)``, so a confident row's tiny loss keeps its digits. The
        gradient is ``α_y·g'(nll)·(softmax − onehot)`` with a stated ``g'`` that is finite at
        ``p_y = 1`` for every ``γ ≥ 0`` (0 for ``γ > 0``), also for ``γ < 1`` where
        ``(1 − p)^γ`` alone has an infinite derivative. Out-of-range labels give NaN; a label
        whose class is masked out gives ``+inf``; masked and ignored examples give 0 with
        gradient 0, also w.r.t. ``alpha``.

    References:
        Lin, Goyal, Girshick, He and Dollár, "Focal Loss for Dense Object Detection", ICCV
        2017, arXiv:1708.02002.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[3.0, 0.0, -1.0], [0.5, 0.2, 0.1]])
        >>> labels = jnp.array([0, 2])
        >>> print(jaxloss.softmax_focal_loss(logits, labels, gamma=2.0))
        [0.0003 0.6673]
        >>> print(jaxloss.softmax_focal_loss(logits, labels, gamma=0.0))  # cross-entropy
        [0.0659 1.2801]
    """
    fn = "softmax_focal_loss"
    _checks.check_reduction(reduction, fn)
    g = _checks.traced_number(gamma, "gamma", fn, low=0.0)
    ce = int_loss(fn, logits, labels, axis, where, ignore_index=ignore_index)
    if not _checks.is_static(g):
        loss = _focal_factor_traced(g.astype(ce.loss.dtype), ce.loss)
    else:
        loss = ce.loss if g == 0 else _focal_factor(g, ce.loss)
    table = _options.class_weight_table(
        alpha, ce.k, "logits", np.shape(logits), fn, option="alpha", scalar_ok=True
    )
    if table is not None:
        a = table.astype(loss.dtype)
        a = _checks.take(a, ce.y) if a.ndim else a
        # Dropped examples have loss 0; an inf or NaN α_y must not turn that into NaN.
        loss = jnp.where(ce.valid, a, jnp.zeros_like(loss)) * loss
    # The mean counts examples, not Σ α_y: α rescales each example's loss (as in torchvision).
    w = _options.example_weights(weights, loss.shape, fn, "the shape of `labels`")
    return _options.reduce(loss, reduction, ce.valid, None, w)


# ---------------------------------------------------------------------------------------------
# PolyLoss.


@_checks.public
def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    epsilon: float = 2.0,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Poly-1 loss: cross-entropy plus ε times the first polynomial term (a drop-in for Optax's).

    In plain text: ℓ = −Σ_j t_j log p_j + ε·Σ_j t_j (1 − p_j), p = softmax(x).

    .. math::
        \ell = -\sum_j t_j \log p_j + \varepsilon \sum_j t_j (1 - p_j), \qquad
        p = \operatorname{softmax}(x)

    For one-hot targets this is the paper's ``CE + ε·(1 − p_t)``.

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        labels: ``[..., K]`` one-hot or soft targets; integer one-hot arrays are accepted and
            converted to the logits' compute dtype.
        axis: the class axis or tuple of axes; ``None`` for every axis (one loss, as Optax).
        where: boolean mask shaped like ``logits`` (drops classes from the softmax and the
            sums) or like the batch (drops examples: loss 0, gradient 0).
        epsilon: ε, the coefficient of ``(1 − p_t)``; the paper suggests 2 for ImageNet
            classification and −1 for detection. May be traced (a schedule's value under
            ``jit``; differentiable): a traced NaN or infinity gives NaN.
        weights: optional per-example weights of the batch shape (or broadcasting to it), as
            in ``softmax_cross_entropy``: ``"mean"`` is ``Σ s·ℓ / Σ s``.
        reduction: ``"none"``, ``"sum"``, ``"mean"`` (over kept examples) or
            ``"sum_and_count"``.

    Returns:
        ``[...]`` losses for ``"none"``, else a scalar (or a pair for ``"sum_and_count"``);
        float32 for bf16/f16 logits.

    Numerics:
        Each ``1 − p_j`` is ``−expm1(log p_j)``, exact to rounding for the dominant class, where
        Optax's ``1 − p`` keeps no digit once ``p_t > 1 − 1e-8`` in float32. The gradient
        w.r.t. the logits is ``softmax_cross_entropy``'s plus the stated
        ``ε·p_k·((Σt − t_k) − Σ_j t_j(1 − p_j))``, whose label entry for one-hot targets is
        ``ε·p_y·(p_y − 1)`` without cancellation; the backward pass recomputes ``p`` from the
        logits. W.r.t. the targets it is ``−log p_j + ε(1 − p_j)``. Zero targets on ``-inf``
        logits add 0 (Optax gives NaN).

    References:
        Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
        Functions", ICLR 2022, arXiv:2204.12511.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[3.0, 0.0, -1.0], [0.5, 0.2, 0.1]])
        >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> print(jaxloss.poly_loss_cross_entropy(logits, labels, epsilon=2.0))
        [0.1934 2.7241]
    """
    fn = "poly_loss_cross_entropy"
    eps = _checks.traced_number(epsilon, "epsilon", fn)
    # One kernel with softmax_cross_entropy: the term shares its row statistics and passes.
    return dense_loss(fn, logits, labels, axis, where, reduction, poly=eps, weights=weights)


# ---------------------------------------------------------------------------------------------
# Label smoothing.


@_checks.public
def smooth_labels(
    labels: ArrayLike,
    alpha: float,
    *,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    num_classes: int | None = None,
) -> Array:
    r"""Label smoothing: mix one-hot targets with the uniform distribution (a drop-in for Optax's).

    In plain text: t′ = (1 − α)·t + α/K, K the number of classes (left in by ``where``).

    .. math::
        t' = (1 - \alpha)\, t + \frac{\alpha}{K}

    Args:
        labels: ``[..., K]`` one-hot or soft targets with a floating dtype, or ``[...]``
            integer class indices together with ``num_classes``.
        alpha: the smoothing weight α in ``[0, 1]``. May be traced (a schedule's value under
            ``jit``; differentiable): a traced α outside ``[0, 1]`` gives NaN targets.
        axis: the class axis or tuple of axes of ``labels``, ``None`` for all of them (with
            integer labels: where the new class axis goes in the output, an int).
        where: boolean mask shaped like the output (classes to keep: ``K`` counts them) or
            like its batch (examples to keep). Entries outside the mask are 0; the mask moves
            no mass, so a kept row sums to ``(1 − α)·(its mass on kept classes) + α``: 1 for a
            target whose mass is on kept classes (an integer label whose class is masked out
            gives a row of NaN, as ``cross_entropy`` gives ``+inf`` there).
        num_classes: ``K`` for integer labels (any integer, NumPy's included), which then come
            back as smoothed one-hot rows.

    Returns:
        ``[..., K]`` smoothed targets, in the dtype of float ``labels`` (computed in at least
        float32), float32 (float64 under x64) for integer labels.

    Numerics:
        Differentiable w.r.t. float ``labels``. An integer label outside
        ``[0, num_classes)`` gives a row of NaN, never a silent uniform row; mask it with
        ``where`` (its row is then 0). A fully masked row is 0, not ``α/0``.

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
        Müller, Kornblith and Hinton, "When Does Label Smoothing Help?", NeurIPS 2019,
        arXiv:1906.02629.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> print(jaxloss.smooth_labels(jnp.array([[0.0, 1.0, 0.0, 0.0]]), 0.2))
        [[0.05 0.85 0.05 0.05]]
        >>> print(jaxloss.smooth_labels(jnp.array([2, 0]), 0.2, num_classes=3))
        [[0.0667 0.0667 0.8667]
         [0.8667 0.0667 0.0667]]
    """
    fn = "smooth_labels"
    a = _checks.traced_number(alpha, "alpha", fn, low=0.0, high=1.0)
    _checks.check_array(labels, "labels", fn)
    ldtype = jnp.result_type(labels)
    if jnp.issubdtype(ldtype, jnp.integer):
        if num_classes is None:
            raise TypeError(
                f"{fn}: integer `labels` (shape {_checks._shape(labels)}) are class indices: "
                "pass `num_classes`, or pass one-hot labels with a floating dtype."
            )
        try:
            n_cls = None if isinstance(num_classes, bool) else operator.index(num_classes)
        except TypeError:
            n_cls = None
        if n_cls is None or n_cls < 1:
            raise ValueError(f"{fn}: `num_classes` must be a positive int, got {num_classes!r}.")
        num_classes = n_cls
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"{fn}: with integer labels `axis` must be an int, got {axis!r}.")
        _checks.check_label_values(labels, fn)
        y = _checks.wide_labels(jnp.asarray(labels))
        if not -(y.ndim + 1) <= axis <= y.ndim:
            raise ValueError(
                f"{fn}: `axis`={axis} is out of range for the output of {y.ndim + 1} dimensions "
                f"(labels of shape {y.shape})."
            )
        out_dtype = jnp.result_type(float)
        in_range = (y >= 0) & (y < num_classes)
        onehot = jax.nn.one_hot(y, num_classes, dtype=out_dtype, axis=axis)
        nan = jnp.expand_dims(~in_range, axis)
        t = jnp.where(nan, jnp.nan, onehot)
    elif num_classes is not None:
        raise TypeError(
            f"{fn}: `num_classes` is for integer class indices; `labels` has dtype {ldtype}."
        )
    else:
        _checks.check_floating(labels, "labels", fn)
        t = jnp.asarray(labels)
        out_dtype = t.dtype
    if axis is None:
        axis = tuple(range(t.ndim))
    axes = _checks.canonicalize_axes(axis, t.ndim, "labels", t.shape, fn)
    example_mask, class_mask = _checks.split_where(where, t.shape, axes, fn)
    tf = t.astype(_checks.compute_dtype(t.dtype))
    k = math.prod(t.shape[i] for i in axes)
    if k == 0:
        raise ValueError(
            f"{fn}: `labels` with shape {t.shape} has no classes along `axis`={axis!r}: "
            "there is no distribution to smooth towards."
        )
    if not _checks.is_static(a):
        a = a.astype(tf.dtype)
    if class_mask is None:
        out = (1.0 - a) * tf + a / k
        if example_mask is not None:
            keep = jnp.broadcast_to(jnp.expand_dims(example_mask, axes), t.shape)
            out = jnp.where(keep, out, 0)
    else:
        n = jnp.sum(class_mask, axis=axes, keepdims=True, dtype=tf.dtype)
        safe_n = jnp.where(n > 0, n, jnp.ones_like(n))
        out = jnp.where(class_mask, (1.0 - a) * tf + a / safe_n, 0)
        if jnp.issubdtype(ldtype, jnp.integer):
            # The label's class is masked out: its 1 − α has no kept class to go to (the row
            # would sum to α). NaN, as for an out-of-range label; a masked example stays 0.
            lost = jnp.any((tf > 0) & ~class_mask, axis=axes, keepdims=True)
            out = jnp.where(lost & jnp.any(class_mask, axis=axes, keepdims=True), jnp.nan, out)
    return out.astype(out_dtype)
