"""Float64 NumPy/SciPy references: the oracle every jaxloss function is tested against.

Written from the formulas alone, classes on the last axis, with no tricks beyond what float64
needs. Inputs are converted to float64 first. `plain_*` are the same formulas in jnp, for
autodiff (the derivative oracles, tests/cases.py), and the unfused computation the fused loss is
checked against; benchmarks time `plain_cross_entropy` as the `autodiff` column.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special


def f64(x):
    return np.asarray(x, dtype=np.float64)


def logsumexp(x, where=None):
    x = f64(x)
    if where is not None:
        x = np.where(where, x, -np.inf)
    with np.errstate(divide="ignore"):
        return special.logsumexp(x, axis=-1)


def log_softmax(x, where=None):
    x = f64(x)
    if where is not None:
        x = np.where(where, x, -np.inf)
    lse = logsumexp(x)[..., None]
    with np.errstate(invalid="ignore"):
        out = x - lse
    return np.where(np.isneginf(x), -np.inf, out)


def softmax(x, where=None):
    return np.exp(log_softmax(x, where))


def xlogx(p):
    p = f64(p)
    return special.xlogy(p, p)


def entropy(p, base=None):
    h = -np.sum(xlogx(p), axis=-1)
    return h if base is None else h / np.log(base)


def softmax_entropy(x, base=None):
    return entropy(softmax(x), base)


def kl_divergence(log_q, p):
    p, log_q = f64(p), f64(log_q)
    with np.errstate(invalid="ignore"):
        term = np.where(p == 0, 0.0, xlogx(p) - p * log_q)
    return np.sum(term, axis=-1)


def kl_divergence_with_log_targets(log_q, log_p):
    return kl_divergence(log_q, np.exp(f64(log_p)))


def softmax_cross_entropy(x, t):
    log_q = log_softmax(x)
    t = f64(t)
    with np.errstate(invalid="ignore"):
        return -np.sum(np.where(t == 0, 0.0, t * log_q), axis=-1)


def cross_entropy_terms(
    x,
    y,
    *,
    where=None,
    ignore_index=None,
    label_smoothing=0.0,
    class_weights=None,
    z_loss=0.0,
    logit_softcap=None,
):
    """Per-example losses and the "mean" denominator, by PyTorch's documented formulas."""
    x, y = f64(x), np.asarray(y)
    k = x.shape[-1]
    if logit_softcap is not None:
        x = logit_softcap * np.tanh(x / logit_softcap)
    w = np.ones(k) if class_weights is None else f64(class_weights)
    valid = np.ones(y.shape, bool) if where is None else np.broadcast_to(where, y.shape)
    if ignore_index is not None:
        valid = valid & (y != ignore_index)
    log_q = log_softmax(x)
    lse = logsumexp(x)
    loss = np.zeros(y.shape)
    denom = 0.0
    for idx in np.ndindex(*y.shape):
        if not valid[idx]:
            continue
        label = int(y[idx])
        if not 0 <= label < k:
            loss[idx] = np.nan
            continue
        nll = -log_q[idx][label]
        loss[idx] = (1 - label_smoothing) * w[label] * nll
        if label_smoothing:
            loss[idx] += label_smoothing * -np.sum(w * log_q[idx]) / k
        loss[idx] += z_loss * lse[idx] ** 2
        denom += w[label]
    return loss, denom


def cross_entropy(x, y, *, reduction="none", **options):
    loss, denom = cross_entropy_terms(x, y, **options)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "sum_and_count":
        return loss.sum(), denom
    return loss.sum() / denom if denom else 0.0


def nll_loss(log_q, y, *, ignore_index=None, class_weights=None, reduction="none"):
    log_q, y = f64(log_q), np.asarray(y)
    k = log_q.shape[-1]
    w = np.ones(k) if class_weights is None else f64(class_weights)
    valid = np.ones(y.shape, bool) if ignore_index is None else y != ignore_index
    safe = np.where(valid, y, 0)
    picked = np.take_along_axis(log_q, safe[..., None], axis=-1)[..., 0]
    loss = np.where(valid, -w[safe] * picked, 0.0)
    denom = np.sum(np.where(valid, w[safe], 0.0))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / denom if denom else 0.0


def softmax_focal_loss(x, y, *, gamma=2.0, alpha=None, ignore_index=None, reduction="none"):
    """−α_y (1 − p_y)^γ log p_y; "mean" divides by the number of kept examples."""
    log_q, y = log_softmax(x), np.asarray(y)
    k = log_q.shape[-1]
    a = np.ones(k) if alpha is None else np.broadcast_to(f64(alpha), (k,))
    valid = np.ones(y.shape, bool) if ignore_index is None else y != ignore_index
    in_range = (y >= 0) & (y < k)
    safe = np.where(valid & in_range, y, 0)
    log_p = np.take_along_axis(log_q, safe[..., None], axis=-1)[..., 0]
    loss = -a[safe] * (-np.expm1(log_p)) ** gamma * log_p
    loss = np.where(valid, np.where(in_range, loss, np.nan), 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    n = valid.sum()
    return loss.sum() / n if n else 0.0


def poly_loss_cross_entropy(x, t, *, epsilon=2.0):
    """−Σ t log p + ε Σ t (1 − p), with 0·log 0 = 0."""
    log_q, t = log_softmax(x), f64(t)
    ce = -np.sum(np.where(t == 0, 0.0, t * np.where(t == 0, 0.0, log_q)), -1)
    return ce + epsilon * np.sum(t * -np.expm1(log_q), -1)


def smooth_labels(t, alpha):
    t = f64(t)
    return (1 - alpha) * t + alpha / t.shape[-1]


def binary_cross_entropy(x, t, weight=1.0, pos_weight=1.0):
    """−w·[p_w·t·log σ(x) + (1 − t)·log(1 − σ(x))], with log σ(x) = −logaddexp(0, −x)."""
    x, t = f64(x), f64(t)
    return f64(weight) * (f64(pos_weight) * t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x))


def sigmoid_binary_cross_entropy(x, t):
    return binary_cross_entropy(x, t)


def sigmoid_focal_loss(x, t, alpha=None, gamma=2.0):
    x, t = f64(x), f64(t)
    one_minus_pt = (1 - t) * special.expit(x) + t * special.expit(-x)
    loss = one_minus_pt**gamma * binary_cross_entropy(x, t)
    return loss if alpha is None else (alpha * t + (1 - alpha) * (1 - t)) * loss


def _kl(la, lb):
    """KL(a‖b) per row from log-probabilities, with 0·log 0 = 0 (and +inf where a > 0 = b).

    In logs, so a probability that underflows (a logit 1e30 below the maximum) keeps its log."""
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(la == -np.inf, 0.0, np.exp(la) * (la - lb)), axis=-1)


def softmax_kl_divergence(s, t, *, temperature=1.0, beta=0.0, where=None):
    """D_β(p, q) for p = softmax(t/T), q = softmax(s/T): forward KL, reverse KL or JSD_β."""
    lp = log_softmax(f64(t) / temperature, where)
    lq = log_softmax(f64(s) / temperature, where)
    if beta == 0.0:
        return _kl(lp, lq)
    if beta == 1.0:
        return _kl(lq, lp)
    with np.errstate(divide="ignore", invalid="ignore"):  # NaN rows stay NaN
        lm = np.logaddexp(np.log(beta) + lp, np.log1p(-beta) + lq)
    return beta * _kl(lp, lm) + (1 - beta) * _kl(lq, lm)


# --- plain jnp formulas, for autodiff ----------------------------------------------------------


def plain_cross_entropy(
    x,
    y,
    *,
    where=None,
    ignore_index=None,
    label_smoothing=0.0,
    class_weights=None,
    z_loss=0.0,
    logit_softcap=None,
    reduction="none",
):
    """`cross_entropy_terms` in jnp: x [..., K], in-range labels y [...] (ignored ones aside).

    Each option's term only where the option is given, so that without options this is the
    textbook `-log_softmax(x)[y]` that the benchmarks time as plain autodiff.
    """
    k = x.shape[-1]
    if logit_softcap is not None:
        x = logit_softcap * jnp.tanh(x / logit_softcap)
    log_q = jax.nn.log_softmax(x, axis=-1)
    safe = y if ignore_index is None else jnp.where(y == ignore_index, 0, y)
    loss = -jnp.take_along_axis(log_q, safe[..., None], axis=-1)[..., 0]
    w = None if class_weights is None else jnp.asarray(class_weights, x.dtype)
    if w is not None:
        loss *= w[safe]
    if label_smoothing:
        smooth = -jnp.sum(log_q, axis=-1) if w is None else -(log_q @ w)
        loss = (1 - label_smoothing) * loss + label_smoothing * smooth / k
    if z_loss:
        loss += z_loss * jax.nn.logsumexp(x, axis=-1) ** 2
    valid = None if where is None else jnp.broadcast_to(where, y.shape)
    if ignore_index is not None:
        valid = (y != ignore_index) if valid is None else valid & (y != ignore_index)
    if valid is not None:
        loss = jnp.where(valid, loss, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    count = jnp.ones(y.shape, x.dtype) if w is None else w[safe]
    denom = jnp.sum(count if valid is None else jnp.where(valid, count, 0.0))
    return jnp.where(denom > 0, loss.sum() / jnp.where(denom > 0, denom, 1.0), 0.0)
