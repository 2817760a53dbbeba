"""Entropy and Kullback-Leibler divergence, with 0·log 0 = 0 in values and gradients.

Terms with zero probability are outside the support: they contribute 0 to the value and 0 to
the gradient. Each such term is written with a double `where` (the inner one feeds `log` a safe
1, the outer one selects 0), so no `0·(−inf)` or `log 0` ever enters a derivative and no NaN
leaks into `grad` (the JAX FAQ's "gradients contain NaN where using where").
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.core as jax_core
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxloss import _checks, _options
from jaxloss._softmax import finite_log_sum, max_and_log_sum


@jax.custom_jvp
def _xlogx(p: Array) -> Array:
    """p·log p with 0·log 0 = 0 and a zero gradient at p = 0; NaN for p < 0."""
    zero = p == 0
    return jnp.where(zero, jnp.zeros_like(p), p * jnp.log(jnp.where(zero, jnp.ones_like(p), p)))


@_xlogx.defjvp
def _xlogx_jvp(primals, tangents):
    # (p log p)′ = log p + 1, stated: autodiff reaches it as log p + p·(1/p), whose own
    # derivative 1/p − p/p² is inf − inf where p² underflows (p < 1e-19 in float32).
    (p,), (tp,) = primals, tangents
    zero = p == 0
    slope = jnp.log(jnp.where(zero, jnp.ones_like(p), p)) + 1
    return _xlogx(p), jnp.where(zero, jnp.zeros_like(p), slope * tp)


def _prepare(fn: str, axis: Any, where: Any, reduction: Any, **arrays: Any):
    """Checked inputs in the compute dtype, broadcast to one shape (the first argument's: a
    ``[K]`` target prior against ``[B, K]`` predictions, as Optax allows), the class axes, the
    mask, and the reduction."""
    _checks.check_reduction(reduction, fn)
    names = list(arrays)
    for name in names:
        _checks.check_floating(arrays[name], name, fn)
    vals = [jnp.asarray(v) for v in arrays.values()]
    shape = vals[0].shape
    for name, v in zip(names[1:], vals[1:], strict=True):
        _checks.check_broadcasts_to(v, shape, name, names[0], fn)
    if axis is None:
        axis = tuple(range(len(shape)))
    axes = _checks.canonicalize_axes(axis, len(shape), names[0], shape, fn)
    dtype = _checks.compute_dtype(jnp.result_type(*vals))
    vals = [jnp.broadcast_to(v.astype(dtype), shape) for v in vals]
    return vals, axes, _checks.full_mask(where, shape, axes, fn)


def _reduce(
    fn: str, per_example: Array, mask: Array | None, axes: tuple, reduction: str, weights: Any
) -> Any:
    """Reduce over examples; with a mask, the mean counts the rows it keeps any entry of."""
    w = _options.example_weights(weights, per_example.shape, fn, "the batch shape")
    if reduction == "none" and w is None:
        return per_example
    valid = None if mask is None or reduction == "none" else jnp.any(mask, axes)
    return _options.reduce(per_example, reduction, valid, None, w)


def _in_base(h: Array, base: Any, fn: str) -> Array:
    if base is None:
        return h
    if isinstance(base, jax_core.Tracer):
        raise TypeError(
            f"{fn}: `base` must be a Python number fixed at trace time (it picks the unit), got "
            "a traced value; divide the entropy by log(base) yourself for a traced base."
        )
    try:
        b = float(base)
    except TypeError:
        b = float("nan")
    if not b > 0 or b == 1:
        raise ValueError(f"{fn}: `base` must be a positive number other than 1, got {base!r}.")
    return h / math.log(b)


@_checks.public
def entropy(
    probs: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    base: float | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Shannon entropy of probability vectors, in nats (or in ``base``).

    In plain text: H(p) = −Σ_j p_j log p_j, with 0·log 0 = 0.

    .. math::
        H(p) = -\sum_j p_j \log p_j, \qquad 0 \log 0 = 0

    Args:
        probs: ``[..., K]`` probabilities, floating dtype.
        axis: the class axis or tuple of axes; ``None`` for every axis (one value, as Optax).
        where: optional boolean mask shaped like ``probs`` (entries to include) or like the
            batch (examples to include; masked examples give 0).
        base: ``None`` for nats, ``2`` for bits, any positive number other than 1.
        weights: optional per-example weights ``s`` of the batch shape (or broadcasting to
            it), differentiable: each value becomes ``s·v`` and ``"mean"`` is ``Σ s·v / Σ s``
            over the kept examples (``"sum_and_count"`` returns ``Σ s``).
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (over the examples ``where``
            keeps) or ``"sum_and_count"``.

    Returns:
        ``[...]`` entropies, float32 for bf16/f16 inputs.

    Numerics:
        ``0·log 0 = 0`` in the value, and the gradient w.r.t. a zero probability is 0 by
        convention (the term is outside the support; the one-sided derivative there is
        ``+∞``), not ``∞`` or NaN. Negative probabilities give
        NaN. Bits are nats divided by ``ln 2``.

    References:
        Shannon, "A Mathematical Theory of Communication", Bell System Technical
        Journal 27, 1948.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> p = jnp.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
        >>> print(jaxloss.entropy(p, base=2))
        [1.  1.5]
    """
    fn = "entropy"
    (p,), axes, mask = _prepare(fn, axis, where, reduction, probs=probs)
    # 0 − Σ rather than −Σ: an all-zero sum gives +0.0, not −0.0.
    h = _in_base(0.0 - jnp.sum(_xlogx(p), axis=axes, where=mask), base, fn)
    return _reduce(fn, h, mask, axes, reduction, weights)


@_checks.public
def softmax_entropy(
    logits: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    base: float | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Entropy of ``softmax(logits)``, computed from the logits without forming ``log 0``.

    In plain text: H(softmax(x)) = log Σ_k exp(x_k) − Σ_j softmax(x)_j · x_j.

    .. math::
        H(\operatorname{softmax}(x))
            = \log \sum_k e^{x_k} - \sum_j \operatorname{softmax}(x)_j\, x_j

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities, floating dtype.
        axis: the class axis or tuple of axes; ``None`` for every axis (one value, as Optax).
        where: optional boolean mask shaped like ``logits`` (classes left out of the softmax) or
            like the batch (masked examples give 0).
        base: ``None`` for nats, ``2`` for bits.
        weights: optional per-example weights ``s`` of the batch shape (or broadcasting to
            it), differentiable: each value becomes ``s·v`` and ``"mean"`` is ``Σ s·v / Σ s``
            over the kept examples (``"sum_and_count"`` returns ``Σ s``).
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (over the examples ``where``
            keeps) or ``"sum_and_count"``.

    Returns:
        ``[...]`` entropies, float32 for bf16/f16 inputs.

    Numerics:
        ``-inf`` logits are classes of probability 0: they add nothing and get gradient 0.
        A confident row (``p_max`` near 1) keeps its small entropy to full relative precision,
        because ``log p_max = −log1p(r)`` is formed without rounding ``1 + r``.

    References:
        Shannon, "A Mathematical Theory of Communication", Bell System Technical
        Journal 27, 1948.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> print(jaxloss.softmax_entropy(jnp.array([0.0, 0.0, -jnp.inf]), base=2))
        1.0
    """
    fn = "softmax_entropy"
    (x,), axes, mask = _prepare(fn, axis, where, reduction, logits=logits)
    _checks.check_static_classes(x.shape, axes, "logits", fn)
    x = _checks.classes_last(x, axes)
    if mask is not None:
        mask = _checks.classes_last(mask, axes)
        x = jnp.where(mask, x, -jnp.inf)
    h = _in_base(_softmax_entropy_rows(x), base, fn)
    return _reduce(fn, h, mask, (x.ndim - 1,), reduction, weights)


def _log_probs(x: Array, fused_rows: bool) -> tuple[Array, Array, Array]:
    """(log p, live, safe): log softmax(x), where it is not −inf (NaN is live, so a NaN row gives
    NaN), and log p with 0 where it is −inf."""
    _, d, log_s = max_and_log_sum(x, fused_rows)
    log_p = d - finite_log_sum(log_s)
    live = log_p != -jnp.inf
    return log_p, live, jnp.where(live, log_p, jnp.zeros_like(log_p))


def _entropy_of(live: Array, safe: Array) -> Array:
    # 0 − Σ rather than −Σ: a one-hot row gives +0.0, not −0.0.
    return 0.0 - jnp.sum(jnp.where(live, jnp.exp(safe) * safe, jnp.zeros_like(safe)), axis=-1)


def _softmax_entropy_rows_impl(x: Array, fused_rows: bool = True) -> Array:
    _, live, safe = _log_probs(x, fused_rows)
    return _entropy_of(live, safe)


_softmax_entropy_rows = jax.custom_jvp(_softmax_entropy_rows_impl, nondiff_argnums=(1,))


@_softmax_entropy_rows.defjvp
def _softmax_entropy_rows_jvp(fused_rows, primals, tangents):
    # ∂H/∂x_j = −p_j (log p_j + H). Autodiff of −Σ p log p reaches the same value through
    # terms that cancel for a confident row (45% off at logits [20, 0]); this form does not:
    # log p_max = −log1p(r) and H are both small and are added, not subtracted.
    # Short rows on a GPU keep the fused max-then-sums statistics here too (H100, 128×10 bf16
    # value_and_grad: 3.0·B in 2 kernels, against 7.8·B in 3 with the one-pass statistics).
    (x,), (tx,) = primals, tangents
    _, live, safe = _log_probs(x, fused_rows)
    h = _entropy_of(live, safe)
    g = jnp.where(live, -jnp.exp(safe) * (safe + h[..., None]), jnp.zeros_like(safe))
    return h, jnp.sum(g * jnp.where(live, tx, jnp.zeros_like(tx)), axis=-1)


@_checks.public
def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Kullback-Leibler divergence ``KL(targets ‖ predictions)`` (a drop-in for Optax's).

    In plain text: KL(p‖q) = Σ_j p_j (log p_j − log q_j); terms with p_j = 0 are 0.

    .. math::
        \mathrm{KL}(p \,\|\, q) = \sum_j p_j (\log p_j - \log q_j), \qquad
        \text{terms with } p_j = 0 \text{ are } 0

    Args:
        log_predictions: ``[..., K]`` log-probabilities of the prediction ``q``.
        targets: ``[..., K]`` probabilities of the target ``p`` (zeros allowed), or any shape
            that broadcasts to ``log_predictions``' (a ``[K]`` prior shared by every row).
        axis: the class axis or tuple of axes; ``None`` for every axis (one value, as Optax).
        where: optional boolean mask shaped like the inputs or like the batch.
        weights: optional per-example weights ``s`` of the batch shape (or broadcasting to
            it), differentiable: each value becomes ``s·v`` and ``"mean"`` is ``Σ s·v / Σ s``
            over the kept examples (``"sum_and_count"`` returns ``Σ s``).
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (over the examples ``where``
            keeps) or ``"sum_and_count"``.

    Returns:
        ``[...]`` divergences, ≥ 0 for normalised inputs; float32 for bf16/f16 inputs.

    Numerics:
        Zero targets contribute 0 to the value and 0 to both gradients (Optax's version gives
        NaN gradients w.r.t. targets there). A target with ``q_j = 0`` gives ``+inf``, the
        true value. Note the order: prediction first, as in Optax and as PyTorch's ``kl_div``,
        whose default ``reduction="mean"`` divides by every element (N·K); on ``[B, K]``
        inputs its ``"batchmean"`` equals ``kl_divergence(...).mean()`` here (on
        ``[B, T, K]`` it divides the sum by ``B`` alone, a factor ``T`` from our mean).

    References:
        Kullback and Leibler, "On Information and Sufficiency", Annals of Mathematical
        Statistics 22, 1951.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> p = jnp.array([0.5, 0.5, 0.0])
        >>> q = jnp.array([0.25, 0.5, 0.25])
        >>> print(jaxloss.kl_divergence(jnp.log(q), p))
        0.3466
    """
    fn = "kl_divergence"
    (lq, p), axes, mask = _prepare(
        fn, axis, where, reduction, log_predictions=log_predictions, targets=targets
    )
    zero = p == 0
    term = _xlogx(p) - jnp.where(zero, jnp.zeros_like(p), p * jnp.where(zero, 0, lq))
    return _reduce(fn, jnp.sum(term, axis=axes, where=mask), mask, axes, reduction, weights)


@_checks.public
def kl_divergence_with_log_targets(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""``KL(p ‖ q)`` with both distributions given as log-probabilities (a drop-in for Optax's).

    In plain text: KL(p‖q) = Σ_j exp(log p_j) · (log p_j − log q_j).

    .. math::
        \mathrm{KL}(p \,\|\, q) = \sum_j e^{\log p_j} (\log p_j - \log q_j)

    Args:
        log_predictions: ``[..., K]`` log-probabilities of the prediction ``q``.
        log_targets: ``[..., K]`` log-probabilities of the target ``p`` (``-inf`` allowed), or
            any shape that broadcasts to ``log_predictions``'.
        axis: the class axis or tuple of axes; ``None`` for every axis (one value, as Optax).
        where: optional boolean mask shaped like the inputs or like the batch.
        weights: optional per-example weights ``s`` of the batch shape (or broadcasting to
            it), differentiable: each value becomes ``s·v`` and ``"mean"`` is ``Σ s·v / Σ s``
            over the kept examples (``"sum_and_count"`` returns ``Σ s``).
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (over the examples ``where``
            keeps) or ``"sum_and_count"``.

    Returns:
        ``[...]`` divergences, float32 for bf16/f16 inputs.

    Numerics:
        A ``-inf`` log-target is a zero-probability class: it contributes 0 to the value and
        to both gradients, even where ``log q`` is ``-inf`` too (Optax gives NaN there).

    References:
        Kullback and Leibler, "On Information and Sufficiency", Annals of Mathematical
        Statistics 22, 1951.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> log_p = jnp.log(jnp.array([0.5, 0.5, 0.0]))
        >>> log_q = jnp.log(jnp.array([0.25, 0.5, 0.25]))
        >>> print(jaxloss.kl_divergence_with_log_targets(log_q, log_p))
        0.3466
    """
    fn = "kl_divergence_with_log_targets"
    (lq, lp), axes, mask = _prepare(
        fn, axis, where, reduction, log_predictions=log_predictions, log_targets=log_targets
    )
    live = lp > -jnp.inf
    safe_p = jnp.where(live, lp, 0)
    safe_q = jnp.where(live, lq, 0)
    term = jnp.where(live, jnp.exp(safe_p) * (safe_p - safe_q), 0)
    return _reduce(fn, jnp.sum(term, axis=axes, where=mask), mask, axes, reduction, weights)
