"""The registry of test cases: each public function, how to make its inputs, its references.

Each case has
* `fn(*args)`: the jaxloss call (options bound);
* `make(rng, dtype)`: seeded inputs; the first argument is the one we differentiate;
* `ref(*args)`: the float64 NumPy reference (tests/reference.py);
* `plain(*args)`: a plain JAX formula, differentiated by autodiff under x64 as the gradient
  oracle;
* `kernels`: the implementations whose programs for this case differ (`tests/test_matrix.py`
  checks the jaxprs): the tests run each of them and no other, so no test compiles a program
  another one already compiled;
* `inputs`: what the first argument is (`logits`, `log_probs`, `probs`, or `binary` for
  elementwise sigmoid logits), from which `saturated` builds saturated inputs for the case.
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
    inputs: str = "logits"
    kernels: tuple[str, ...] = ("portable", "xla_cpu", "xla_cpu_cut")


# Cases that dispatch no kernel: one program whatever implementation is pinned.
NO_KERNEL = ("portable",)


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
    return ref.plain_cross_entropy(x, y)


CLASS_WEIGHTS = np.linspace(0.5, 2.0, K)
OPTIONS = dict(label_smoothing=0.1, class_weights=CLASS_WEIGHTS, z_loss=1e-2, logit_softcap=5.0)


def _plain_ce_options(x, y):
    return ref.plain_cross_entropy(x, y, **OPTIONS)


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
    # log σ(x) by log_sigmoid: the oracle holds at |x| = 1e30 too, where σ(x) rounds to 0.
    return -w * (pw * t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x))


POS_WEIGHT = np.linspace(0.5, 3.0, K)
ELEMENT_WEIGHT = np.linspace(2.0, 0.5, K)


def _plain_bce_options(x, t):
    t = t * 0.9 + 0.05
    return _plain_bce(x, t, jnp.asarray(ELEMENT_WEIGHT)[None], jnp.asarray(POS_WEIGHT)[None])


def _plain_sigmoid_focal(x, t, alpha=0.25, gamma=1.5):
    # (1 − p_t)^γ = exp(γ·log(1 − p_t)), 1 − p_t = (1 − t)·σ(x) + t·σ(−x) summed in logs: at
    # |x| = 745 in float64 it is subnormal, and autodiff of m^γ there meets ∞·0.
    with np.errstate(divide="ignore"):
        log_m = jnp.logaddexp(
            jnp.log1p(-t) + jax.nn.log_sigmoid(x), jnp.log(t) + jax.nn.log_sigmoid(-x)
        )
    return (alpha * t + (1 - alpha) * (1 - t)) * jnp.exp(gamma * log_m) * _plain_bce(x, t)


def _xlogx(p):
    return jax.scipy.special.xlogy(p, p)


def _plain_kl(la, lb):
    """Σ a (log a − log b) from log-probabilities; classes with a = 0 (log a = −inf) add 0, by a
    double where so that no 0·inf reaches a derivative."""
    live = la > -jnp.inf
    la, lb = jnp.where(live, la, 0.0), jnp.where(live, lb, 0.0)
    return jnp.sum(jnp.where(live, jnp.exp(la) * (la - lb), 0.0), -1)


def _plain_kd(s, t, temperature, beta):
    """D_β of softmax(t/T) and softmax(s/T) by plain autodiff-able JAX."""
    lq = _plain_log_softmax(s / temperature)
    lp = _plain_log_softmax(t / temperature)
    if beta == 0.0:
        return _plain_kl(lp, lq)
    if beta == 1.0:
        return _plain_kl(lq, lp)
    # log m = log(β p + (1 − β) q); classes outside both supports are left out (double where).
    live = (lp > -jnp.inf) | (lq > -jnp.inf)
    lp0, lq0 = jnp.where(live, lp, 0.0), jnp.where(live, lq, 0.0)
    lm = jnp.where(live, jnp.logaddexp(lp0 + jnp.log(beta), lq0 + jnp.log1p(-beta)), -jnp.inf)
    return beta * _plain_kl(lp, lm) + (1 - beta) * _plain_kl(lq, lm)


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
         lambda p: -jnp.sum(_xlogx(p), -1), inputs="probs", kernels=NO_KERNEL),
    Case("entropy_bits", lambda p: jaxloss.entropy(p, base=2), lambda r, d: (_probs(r, d),),
         lambda p: ref.entropy(p, base=2), lambda p: -jnp.sum(_xlogx(p), -1) / jnp.log(2.0),
         inputs="probs", kernels=NO_KERNEL),
    Case("softmax_entropy", jaxloss.softmax_entropy, lambda r, d: (_logits(r, d),),
         ref.softmax_entropy,
         lambda x: -_plain_kl(_plain_log_softmax(x), jnp.zeros_like(x)),
         kernels=("portable", "xla_cpu", "xla_cpu_cut", "xla_gpu")),
    Case("kl_divergence", jaxloss.kl_divergence,
         lambda r, d: (jnp.log(_probs(r, d)), _probs(r, d)), ref.kl_divergence,
         lambda lq, p: jnp.sum(_xlogx(p) - p * lq, -1), inputs="log_probs", kernels=NO_KERNEL),
    Case("kl_divergence_with_log_targets", jaxloss.kl_divergence_with_log_targets,
         lambda r, d: (jnp.log(_probs(r, d)), jnp.log(_probs(r, d))),
         ref.kl_divergence_with_log_targets,
         lambda lq, lp: jnp.sum(jnp.exp(lp) * (lp - lq), -1), inputs="log_probs",
         kernels=NO_KERNEL),
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
         lambda lq, y: -jnp.take_along_axis(lq, y[:, None], -1)[:, 0], inputs="log_probs",
         kernels=NO_KERNEL),
    Case("softmax_focal_loss",
         lambda x, y: jaxloss.softmax_focal_loss(x, y, gamma=2.0, alpha=FOCAL_ALPHA),
         lambda r, d: (_logits(r, d), _labels(r)),
         lambda x, y: ref.softmax_focal_loss(x, y, gamma=2.0, alpha=FOCAL_ALPHA), _plain_focal),
    Case("poly_loss_cross_entropy", jaxloss.poly_loss_cross_entropy,
         lambda r, d: (_logits(r, d), _probs(r, d)), ref.poly_loss_cross_entropy, _plain_poly),
    Case("smooth_labels", lambda t: jaxloss.smooth_labels(t, 0.1), lambda r, d: (_probs(r, d),),
         lambda t: ref.smooth_labels(t, 0.1), lambda t: 0.9 * t + 0.1 / K, elementwise=True,
         inputs="probs", kernels=NO_KERNEL),
    Case("sigmoid_binary_cross_entropy", jaxloss.sigmoid_binary_cross_entropy,
         lambda r, d: (_logits(r, d), _unit(r, d)), ref.sigmoid_binary_cross_entropy,
         _plain_bce, inputs="binary", kernels=NO_KERNEL),
    Case("binary_cross_entropy_with_logits",
         lambda x, t: jaxloss.binary_cross_entropy_with_logits(
             # Fresh copies: JAX (0.10.2) reuses its conversion of a NumPy array it has traced
             # as a constant, by identity, across `jax.enable_x64` contexts, which handed the
             # float64 test a float32 weight after the kernels guard had traced this case.
             x, t, weight=np.array(ELEMENT_WEIGHT), pos_weight=np.array(POS_WEIGHT),
             label_smoothing=0.1),
         lambda r, d: (_logits(r, d), _unit(r, d)),
         lambda x, t: ref.binary_cross_entropy(x, t * 0.9 + 0.05, ELEMENT_WEIGHT, POS_WEIGHT),
         _plain_bce_options, inputs="binary", kernels=NO_KERNEL),
    Case("sigmoid_focal_loss",
         lambda x, t: jaxloss.sigmoid_focal_loss(x, t, alpha=0.25, gamma=1.5),
         lambda r, d: (_logits(r, d), _unit(r, d)),
         lambda x, t: ref.sigmoid_focal_loss(x, t, alpha=0.25, gamma=1.5), _plain_sigmoid_focal,
         inputs="binary", kernels=NO_KERNEL),
    _kd_case("softmax_kl_divergence", 1.0, 0.0),
    _kd_case("softmax_kl_divergence_reverse_t2", 2.0, 1.0),
    _kd_case("softmax_kl_divergence_jsd_t3", 3.0, 0.3),
]  # fmt: skip


def oracle(case: Case, args, fn_of_first):
    """Evaluate `fn_of_first(plain_of_first, args64)` in float64: the case's plain formula of
    its first argument, the other arguments fixed, every float argument converted exactly."""
    with jax.enable_x64(True):
        a64 = [jnp.asarray(np.asarray(a), jnp.float64 if a.dtype != jnp.int32 else jnp.int32)
               for a in args]  # fmt: skip
        return np.asarray(fn_of_first(lambda x0: case.plain(x0, *a64[1:]), a64))


CASE_IDS = [c.name for c in CASES]
# (case, kernel) pairs: each case on each implementation whose program differs.
CASE_KERNELS = [(c, k) for c in CASES for k in c.kernels]
CASE_KERNEL_IDS = [f"{c.name}-{k}" for c, k in CASE_KERNELS]
# Second derivatives: the XLA:GPU kernel is softmax_entropy's forward row statistics, which its
# derivative rules do not use (pinning it there raises), so Hessians run the other kernels.
HESSIAN_KERNELS = [(c, k) for c, k in CASE_KERNELS if k != "xla_gpu"]
HESSIAN_KERNEL_IDS = [f"{c.name}-{k}" for c, k in HESSIAN_KERNELS]


# ---------------------------------------------------------------------------------------------
# Saturated inputs (tests/test_saturated.py): rows where every entry but the maximum is so far
# below it that exp(x_j − m) underflows, where JAX's derivative of `maximum` splits at ties.

# The underflow gap of exp, with the gap just inside it: 87 | 88 in float32, 745 | 746 in float64.
SATURATED_GAPS = {"float32": (87.0, 88.0), "float64": (745.0, 746.0, 800.0)}
SATURATED_GAPS["bfloat16"] = SATURATED_GAPS["float16"] = SATURATED_GAPS["float32"]  # f32 inside


def saturated_logits(dtype) -> np.ndarray:
    """[B′, K] float64 rows, exact in `dtype`, the maximum at a different class in each:

    one row per gap (max 0, the rest −gap), one finite entry and −inf elsewhere, ±1e30, and two
    entries tied at the maximum (5) with the rest beyond the larger gap.
    """
    gaps = SATURATED_GAPS[np.dtype(dtype).name]
    rows = [np.full(K, -g) for g in gaps]
    rows.append(np.full(K, -np.inf))
    rows.append(np.full(K, -1e30))
    rows.append(np.full(K, 5.0 - gaps[-1]))
    tops = [0.0] * len(gaps) + [3.0, 1e30, 5.0]
    for i, (row, top) in enumerate(zip(rows, tops, strict=True)):
        row[i % K] = top
    rows[-1][(len(rows) + 2) % K] = 5.0
    return np.stack(rows)


def _support(x: np.ndarray) -> np.ndarray:
    return ~np.isneginf(x)


def _saturated_probs(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A target distribution on softmax(x)'s support (no mass on −inf classes)."""
    t = rng.dirichlet(np.ones(K), size=x.shape[0]) * _support(x)
    return t / t.sum(-1, keepdims=True)


def _saturated_labels(x: np.ndarray) -> np.ndarray:
    """The maximum's class on even rows and the tie row (the label ties the maximum of the
    others), the next class on the other odd rows (unless it is −inf)."""
    n = len(x)
    y = np.argmax(x, -1)
    nxt = (y + 1) % K
    odd = (np.arange(n) % 2 == 1) & (np.arange(n) < n - 1) & _support(x[np.arange(n), nxt])
    return np.where(odd, nxt, y).astype(np.int32)


def saturated(case: Case, dtype, rng: np.random.Generator) -> tuple:
    """The case's arguments with a saturated first argument of its kind (`Case.inputs`)."""
    x = saturated_logits(dtype)
    n = x.shape[0]
    like = case.make(rng, jnp.float32)[1:]
    n_rest = len(like)
    if case.inputs == "binary":
        # Elementwise: the tie of max(x, 0) at 0, ± the underflow gaps, ±1e30.
        gaps = SATURATED_GAPS[np.dtype(dtype).name]
        vals = np.array([0.0, *gaps, *(-g for g in gaps), 1e30, -1e30])
        first = np.resize(vals, (n, K))
        # Targets: hard 0 and 1 (where `_mul0`'s zero coefficients are) and soft ones.
        rest = [np.resize([0.0, 1.0, *rng.uniform(size=5)], (n, K)) for _ in range(n_rest)]
        return tuple(jnp.asarray(a, dtype) for a in (first, *rest))
    if case.inputs == "probs":
        # Confident distributions: one class holds all but 1e-30 per other class (a normal
        # float32). Exact zeros take the entropy's documented convention, tested on its own.
        p = np.full((n, K), 1e-30)
        p[np.arange(n), np.arange(n) % K] = 1.0 - (K - 1) * 1e-30
        return (jnp.asarray(p, dtype),)
    first = ref.log_softmax(x) if case.inputs == "log_probs" else x
    rest = []
    for arg in like:
        if jnp.issubdtype(arg.dtype, jnp.integer):
            rest.append(jnp.asarray(_saturated_labels(x)))
        elif case.name.startswith("softmax_kl_divergence"):
            # The teacher's logits: −inf where the student's are, so the KL stays finite.
            t = np.where(_support(x), rng.normal(size=(n, K)) * 3.0, -np.inf)
            rest.append(jnp.asarray(t, dtype))
        elif case.name == "kl_divergence_with_log_targets":
            with np.errstate(divide="ignore"):
                rest.append(jnp.asarray(np.log(_saturated_probs(x, rng)), dtype))
        else:
            rest.append(jnp.asarray(_saturated_probs(x, rng), dtype))
    return (jnp.asarray(first, dtype), *rest)
