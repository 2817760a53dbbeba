"""The registry of test cases: each public function, how to make its inputs, its references.

Each case has
* `fn(*args)`: the jaxloss call (options bound);
* `make(rng, dtype)`: seeded inputs; the first argument is the one we differentiate;
* `ref(*args)`: the float64 NumPy reference (tests/reference.py);
* `plain(*args)`: a plain JAX formula, differentiated by autodiff under x64 as the gradient
  oracle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxloss
from tests import reference as ref

B, K = 6, 7


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]
    make: Callable[[np.random.Generator, Any], tuple]
    ref: Callable[..., Any]
    plain: Callable[..., Any]
    elementwise: bool = False  # output has the input's shape (kept in the input dtype)


def _logits(rng, dtype, scale=2.0):
    return jnp.asarray(rng.normal(size=(B, K)) * scale, dtype)


def _probs(rng, dtype):
    p = rng.dirichlet(np.ones(K), size=B)
    return jnp.asarray(p, dtype)


def _labels(rng):
    return jnp.asarray(rng.integers(0, K, size=B), jnp.int32)


def _plain_log_softmax(x):
    return jax.nn.log_softmax(x, axis=-1)


def _plain_nll(x, y):
    return -jnp.take_along_axis(_plain_log_softmax(x), y[:, None], -1)[:, 0]


CLASS_WEIGHTS = np.linspace(0.5, 2.0, K)
OPTIONS = dict(label_smoothing=0.1, class_weights=CLASS_WEIGHTS, z_loss=1e-2, logit_softcap=5.0)


def _plain_ce_options(x, y):
    c = OPTIONS["logit_softcap"]
    x = c * jnp.tanh(x / c)
    log_q = _plain_log_softmax(x)
    w = jnp.asarray(CLASS_WEIGHTS, x.dtype)
    eps = OPTIONS["label_smoothing"]
    nll = -jnp.take_along_axis(log_q, y[:, None], -1)[:, 0]
    smooth = -jnp.sum(w[None] * log_q, -1) / K
    lse = jax.nn.logsumexp(x, -1)
    return (1 - eps) * w[y] * nll + eps * smooth + OPTIONS["z_loss"] * lse**2


FOCAL_ALPHA = np.linspace(0.25, 1.0, K)


def _plain_focal(x, y):
    log_p = jnp.take_along_axis(_plain_log_softmax(x), y[:, None], -1)[:, 0]
    a = jnp.asarray(FOCAL_ALPHA, x.dtype)[y]
    return -a * (1 - jnp.exp(log_p)) ** 2 * log_p


def _plain_poly(x, t):
    log_q = _plain_log_softmax(x)
    return -jnp.sum(t * log_q, -1) + 2.0 * jnp.sum(t * (1 - jnp.exp(log_q)), -1)


def _unit(rng, dtype):
    return jnp.asarray(rng.uniform(size=(B, K)), dtype)


def _plain_bce(x, t, w=1.0, pw=1.0):
    s = jax.nn.sigmoid(x)
    return -w * (pw * t * jnp.log(s) + (1 - t) * jnp.log(1 - s))


POS_WEIGHT = np.linspace(0.5, 3.0, K)
ELEMENT_WEIGHT = np.linspace(2.0, 0.5, K)


def _plain_bce_options(x, t):
    t = t * 0.9 + 0.05
    return _plain_bce(x, t, jnp.asarray(ELEMENT_WEIGHT)[None], jnp.asarray(POS_WEIGHT)[None])


def _plain_sigmoid_focal(x, t, alpha=0.25, gamma=1.5):
    s = jax.nn.sigmoid(x)
    m = (1 - t) * s + t * (1 - s)
    return (alpha * t + (1 - alpha) * (1 - t)) * m**gamma * _plain_bce(x, t)


def _xlogx(p):
    return jax.scipy.special.xlogy(p, p)


def _plain_kd(s, t, temperature, beta):
    """D_β of softmax(t/T) and softmax(s/T) by plain autodiff-able JAX (no zero probabilities)."""
    lq = _plain_log_softmax(s / temperature)
    lp = _plain_log_softmax(t / temperature)
    if beta == 0.0:
        return jnp.sum(jnp.exp(lp) * (lp - lq), -1)
    if beta == 1.0:
        return jnp.sum(jnp.exp(lq) * (lq - lp), -1)
    lm = jnp.logaddexp(lp + jnp.log(beta), lq + jnp.log1p(-beta))
    return beta * jnp.sum(jnp.exp(lp) * (lp - lm), -1) + (1 - beta) * jnp.sum(
        jnp.exp(lq) * (lq - lm), -1
    )


def _kd_case(name, temperature, beta):
    opts = dict(temperature=temperature, beta=beta)
    return Case(name, lambda s, t: jaxloss.softmax_kl_divergence(s, t, **opts),
                lambda r, d: (_logits(r, d), _logits(r, d, 3.0)),
                lambda s, t: ref.softmax_kl_divergence(s, t, **opts),
                lambda s, t: _plain_kd(s, t, temperature, beta))  # fmt: skip


CASES = [
    Case("logsumexp", jaxloss.logsumexp, lambda r, d: (_logits(r, d),), ref.logsumexp,
         lambda x: jax.nn.logsumexp(x, -1)),
    Case("log_softmax", jaxloss.log_softmax, lambda r, d: (_logits(r, d),), ref.log_softmax,
         _plain_log_softmax, elementwise=True),
    Case("softmax", jaxloss.softmax, lambda r, d: (_logits(r, d),), ref.softmax,
         lambda x: jax.nn.softmax(x, -1), elementwise=True),
    Case("entropy", jaxloss.entropy, lambda r, d: (_probs(r, d),), ref.entropy,
         lambda p: -jnp.sum(_xlogx(p), -1)),
    Case("entropy_bits", lambda p: jaxloss.entropy(p, base=2), lambda r, d: (_probs(r, d),),
         lambda p: ref.entropy(p, base=2), lambda p: -jnp.sum(_xlogx(p), -1) / jnp.log(2.0)),
    Case("softmax_entropy", jaxloss.softmax_entropy, lambda r, d: (_logits(r, d),),
         ref.softmax_entropy,
         lambda x: -jnp.sum(jax.nn.softmax(x, -1) * _plain_log_softmax(x), -1)),
    Case("kl_divergence", jaxloss.kl_divergence,
         lambda r, d: (jnp.log(_probs(r, d)), _probs(r, d)), ref.kl_divergence,
         lambda lq, p: jnp.sum(_xlogx(p) - p * lq, -1)),
    Case("kl_divergence_with_log_targets", jaxloss.kl_divergence_with_log_targets,
         lambda r, d: (jnp.log(_probs(r, d)), jnp.log(_probs(r, d))),
         ref.kl_divergence_with_log_targets,
         lambda lq, lp: jnp.sum(jnp.exp(lp) * (lp - lq), -1)),
    Case("softmax_cross_entropy", jaxloss.softmax_cross_entropy,
         lambda r, d: (_logits(r, d), _probs(r, d)), ref.softmax_cross_entropy,
         lambda x, t: -jnp.sum(t * _plain_log_softmax(x), -1)),
    Case("softmax_cross_entropy_with_integer_labels",
         jaxloss.softmax_cross_entropy_with_integer_labels,
         lambda r, d: (_logits(r, d), _labels(r)), lambda x, y: ref.cross_entropy(x, y),
         _plain_nll),
    Case("cross_entropy", jaxloss.cross_entropy, lambda r, d: (_logits(r, d), _labels(r)),
         lambda x, y: ref.cross_entropy(x, y), _plain_nll),
    Case("cross_entropy_options", lambda x, y: jaxloss.cross_entropy(x, y, **OPTIONS),
         lambda r, d: (_logits(r, d), _labels(r)),
         lambda x, y: ref.cross_entropy(x, y, **OPTIONS), _plain_ce_options),
    Case("nll_loss", jaxloss.nll_loss,
         lambda r, d: (jnp.log(_probs(r, d)), _labels(r)), ref.nll_loss,
         lambda lq, y: -jnp.take_along_axis(lq, y[:, None], -1)[:, 0]),
    Case("softmax_focal_loss",
         lambda x, y: jaxloss.softmax_focal_loss(x, y, gamma=2.0, alpha=FOCAL_ALPHA),
         lambda r, d: (_logits(r, d), _labels(r)),
         lambda x, y: ref.softmax_focal_loss(x, y, gamma=2.0, alpha=FOCAL_ALPHA), _plain_focal),
    Case("poly_loss_cross_entropy", jaxloss.poly_loss_cross_entropy,
         lambda r, d: (_logits(r, d), _probs(r, d)), ref.poly_loss_cross_entropy, _plain_poly),
    Case("smooth_labels", lambda t: jaxloss.smooth_labels(t, 0.1), lambda r, d: (_probs(r, d),),
         lambda t: ref.smooth_labels(t, 0.1), lambda t: 0.9 * t + 0.1 / K, elementwise=True),
    Case("sigmoid_binary_cross_entropy", jaxloss.sigmoid_binary_cross_entropy,
         lambda r, d: (_logits(r, d), _unit(r, d)), ref.sigmoid_binary_cross_entropy,
         _plain_bce),
    Case("binary_cross_entropy_with_logits",
         lambda x, t: jaxloss.binary_cross_entropy_with_logits(
             x, t, weight=ELEMENT_WEIGHT, pos_weight=POS_WEIGHT, label_smoothing=0.1),
         lambda r, d: (_logits(r, d), _unit(r, d)),
         lambda x, t: ref.binary_cross_entropy(x, t * 0.9 + 0.05, ELEMENT_WEIGHT, POS_WEIGHT),
         _plain_bce_options),
    Case("sigmoid_focal_loss",
         lambda x, t: jaxloss.sigmoid_focal_loss(x, t, alpha=0.25, gamma=1.5),
         lambda r, d: (_logits(r, d), _unit(r, d)),
         lambda x, t: ref.sigmoid_focal_loss(x, t, alpha=0.25, gamma=1.5), _plain_sigmoid_focal),
    _kd_case("softmax_kl_divergence", 1.0, 0.0),
    _kd_case("softmax_kl_divergence_reverse_t2", 2.0, 1.0),
    _kd_case("softmax_kl_divergence_jsd_t3", 3.0, 0.3),
]  # fmt: skip

CASE_IDS = [c.name for c in CASES]
