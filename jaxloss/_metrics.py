"""Metrics that count examples exactly as the losses do: top-k accuracy and perplexity.

`accuracy` keeps and drops examples by the same rules as `cross_entropy` (an example `where`,
`ignore_index`, a class `where` that leaves a row empty), so its `"mean"` divides by the same
count, and `perplexity` turns the `(sum, count)` pair of `reduction="sum_and_count"` into
`exp(sum / count)`, the same division `reduction="mean"` makes.
"""

from __future__ import annotations

import operator
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.typing import ArrayLike

from jaxloss import _checks
from jaxloss._cross_entropy import prepare_int


def _first_argmax(x: Array) -> tuple[Array, Array]:
    """(max, first index of the max) of each row, NaN above every number; one variadic
    reduction, no gather (ties go to the lower index, as the rank rule of `accuracy`)."""

    def pick(a, b):
        (av, ai), (bv, bi) = a, b
        a_nan, b_nan = jnp.isnan(av), jnp.isnan(bv)
        better = (av > bv) | (a_nan & ~b_nan)
        same = (av == bv) | (a_nan & b_nan)
        take_a = better | (same & (ai < bi))
        return jnp.where(take_a, av, bv), jnp.where(take_a, ai, bi)

    j = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    init = (jnp.array(-jnp.inf, x.dtype), jnp.array(x.shape[-1], jnp.int32))
    return lax.reduce((x, j), init, pick, (x.ndim - 1,))


def _check_k(k: Any, num_classes: int, fn: str) -> int:
    if isinstance(k, bool | np.bool_):
        raise TypeError(f"{fn}: `k` must be an int, got {k!r}.")
    try:
        kk = operator.index(k)
    except TypeError:
        raise TypeError(f"{fn}: `k` must be an int, got {k!r}.") from None
    if isinstance(k, bool) or not 1 <= kk <= num_classes:
        raise ValueError(f"{fn}: `k` must be an int in [1, {num_classes}] (the number of "
                         f"classes), got {k!r}.")  # fmt: skip
    return kk


@_checks.public
def accuracy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    k: int = 1,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Array | tuple[Array, Array]:
    r"""Top-k accuracy of integer labels: 1 where the label is among the ``k`` highest logits.

    The label's rank counts the classes ahead of it: those with a larger logit, and those with
    an equal logit and a smaller index (ties go to the lower index, as ``jnp.argmax`` and
    ``jax.lax.top_k`` break them, so ``k=1`` is exactly ``argmax(logits) == labels``).

    In plain text: aᵢ = 1 if #{j : x_ij > x_{i,yᵢ}, or x_ij = x_{i,yᵢ} and j < yᵢ} < k, else 0.

    .. math::
        a_i = \Big[\, \big|\{\, j : x_{ij} > x_{i y_i}
              \ \text{or}\ (x_{ij} = x_{i y_i} \wedge j < y_i) \,\}\big| < k \,\Big]

    Args:
        logits: ``[..., K]`` scores, floating dtype (any monotone transform, e.g.
            log-probabilities, gives the same result).
        labels: ``[...]`` integer class indices.
        axis: the class axis or tuple of axes (a label indexes the flattened slice).
        where: boolean mask shaped like ``labels`` (examples to count) or like ``logits``
            (classes that can be predicted; a label whose class is masked is never correct, and
            an example with no class left is not counted, as in ``cross_entropy``).
        k: how many top classes count as a hit, ``1 <= k <= K``.
        ignore_index: a label value whose examples are not counted (PyTorch uses -100).
        reduction: ``"mean"`` (default: the fraction correct among counted examples, 0 when
            none is counted), ``"none"`` (1.0 or 0.0 per example, 0 for examples not counted),
            ``"sum"`` (the number correct) or ``"sum_and_count"`` (number correct, number
            counted), which add up exactly over micro-batches and hosts.

    Returns:
        ``[...]`` for ``"none"``, a scalar for ``"sum"``/``"mean"``, a pair for
        ``"sum_and_count"``; float32 (float64 for float64 logits).

    Numerics:
        Not differentiable: the logits are under ``stop_gradient``, so ``jax.grad`` gives
        zeros, not an error. Comparisons only, so exact in any dtype. An out-of-range label
        (other than ``ignore_index``) gives NaN, as the losses do, and so does a NaN logit in a
        class that is not masked out (the loss of that row is NaN too). ``±inf`` logits rank as
        numbers; ``+inf`` ties like any other value.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
        >>> labels = jnp.array([0, 1, 1])
        >>> print(jaxloss.accuracy(logits, labels))
        0.3333
        >>> print(jaxloss.accuracy(logits, labels, k=2, reduction="none"))
        [1. 1. 1.]
        >>> print(jaxloss.accuracy(logits, jnp.array([0, -100, 1]), ignore_index=-100))
        0.5
    """
    fn = "accuracy"
    _checks.check_reduction(reduction, fn)
    _checks.check_floating(logits, "logits", fn)
    _checks.check_integer_labels(labels, fn, None, _checks._shape(logits))
    logits = lax.stop_gradient(jnp.asarray(logits))
    x, y, in_range, valid, class_mask = prepare_int(
        logits, labels, axis, where, fn, False, ignore_index
    )
    num_classes = x.shape[-1]
    kk = _check_k(k, num_classes, fn)
    if class_mask is not None:
        valid = valid & jnp.any(class_mask, axis=-1)
        # A masked class is never predicted: below every kept class, NaN included.
        x = jnp.where(class_mask, x, -jnp.inf)
    dtype = _checks.compute_dtype(x.dtype)
    if kk == 1 and class_mask is None:
        # Top-1: the first index of the row's max (NaN counting as the max), in one pass.
        top, first = _first_argmax(x)
        hit = first == y
        nan_row = jnp.isnan(top) | ~in_range
    else:
        y = y[..., None]
        x_y = _checks.take_label(x, y)
        j = _checks.class_iota(y.dtype, x)
        ahead = (x > x_y) | ((x == x_y) & (j < y))
        if class_mask is not None:
            ahead = ahead & class_mask
        # The label's rank and whether the row holds a NaN: two reductions XLA fuses into one
        # pass. (Not one count with NaN weighted past any rank, K + 1: K·(K + 1) overflows an
        # int32 from K = 46341, and an all-NaN row would then score 1.)
        rank = jnp.sum(ahead, axis=-1, dtype=jnp.int32)
        hit = rank < kk
        if class_mask is not None:
            hit = hit & _checks.take_label(class_mask, y)[..., 0]
        nan_row = jnp.any(jnp.isnan(x), axis=-1) | ~in_range
    out = jnp.where(nan_row, jnp.nan, hit.astype(dtype))
    out = jnp.where(valid, out, jnp.zeros_like(out))
    return _checks.reduce_loss(out, reduction, valid)


@_checks.public
def perplexity(loss_sum: ArrayLike, count: ArrayLike) -> Array:
    r"""Perplexity ``exp(loss_sum / count)`` from the pair ``reduction="sum_and_count"`` returns.

    ``perplexity(*cross_entropy(logits, labels, ignore_index=-100,
    reduction="sum_and_count"))`` is ``exp`` of the mean negative log-likelihood per counted
    token, bit for bit ``exp(cross_entropy(..., reduction="mean"))`` (the same division).
    Accumulate the pairs over micro-batches or hosts by adding sums and counts, then call this
    once: the mean of micro-batch means is not the mean when their counts differ.

    In plain text: PPL = exp(S / N), S the summed loss, N the count.

    .. math::
        \mathrm{PPL} = \exp\!\Big(\frac{S}{N}\Big)

    Args:
        loss_sum: the summed loss :math:`S` (nats), any shape.
        count: the count :math:`N` (the ``"mean"``'s denominator), broadcastable against
            ``loss_sum``.

    Returns:
        The perplexity, shaped like ``loss_sum / count``, float32 at least.

    Numerics:
        ``count == 0`` (nothing counted) gives NaN: perplexity of no tokens is undefined, and
        1 would read as a perfect model. The gradient there is 0, not NaN. NaN in gives NaN;
        a sum of ``+inf`` gives ``+inf``. Differentiable elsewhere (``PPL/N`` w.r.t. ``S``).

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]])
        >>> pair = jaxloss.cross_entropy(
        ...     logits, jnp.array([0, -100, 2]), ignore_index=-100, reduction="sum_and_count")
        >>> print(jaxloss.perplexity(*pair))
        1.9542
        >>> print(jaxloss.perplexity(0.0, 0))
        nan
    """
    fn = "perplexity"
    s = jnp.asarray(loss_sum)
    n = jnp.asarray(count)
    for name, v in (("loss_sum", s), ("count", n)):
        if not (jnp.issubdtype(v.dtype, jnp.floating) or jnp.issubdtype(v.dtype, jnp.integer)):
            raise TypeError(f"{fn}: `{name}` must be a number or a numeric array, got dtype "
                            f"{v.dtype} with shape {v.shape}.")  # fmt: skip
    try:
        s, n = jnp.broadcast_arrays(s, n)
    except ValueError:
        raise ValueError(
            f"{fn}: `loss_sum` with shape {s.shape} and `count` with shape {n.shape} do not "
            "broadcast together."
        ) from None
    dtype = _checks.compute_dtype(jnp.result_type(s.dtype, n.dtype, jnp.float32))
    s = s.astype(dtype)
    n = n.astype(dtype)
    empty = n == 0
    # Double where: the untaken branch divides by 1, so the gradient at count 0 is 0, not NaN.
    ppl = jnp.exp(s / jnp.where(empty, jnp.ones_like(n), n))
    return jnp.where(empty, jnp.nan, ppl)
