"""Schedulable hyperparameters (issue 20, item 3): traced values, as Optax accepts them.

Optax's own test classes for the sigmoid, focal, poly and smoothing losses run here unmodified,
with the names their module calls (`_classification.sigmoid_focal_loss`, ...) bound to jaxloss's
functions. They pass their hyperparameters through `jax.jit`, so each is a traced value there.
"""

from __future__ import annotations

import types
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax.losses import _classification_test as _optax_ct
from optax.losses import _smoothing_test as _optax_st

import jaxloss

# Every name the four Optax classes call, bound to jaxloss's function of that name. No default
# differs: jaxloss's `sigmoid_focal_loss` has Optax's `alpha=None, gamma=2.0`, its
# `poly_loss_cross_entropy` Optax's `epsilon=2.0`.
_JAXLOSS = types.SimpleNamespace(
    sigmoid_binary_cross_entropy=jaxloss.sigmoid_binary_cross_entropy,
    sigmoid_focal_loss=jaxloss.sigmoid_focal_loss,
    poly_loss_cross_entropy=jaxloss.poly_loss_cross_entropy,
    softmax_cross_entropy=jaxloss.softmax_cross_entropy,
    smooth_labels=jaxloss.smooth_labels,
)


def _on_jaxloss(base, module, name):
    """Optax's TestCase `base`, each test run with `module.name` bound to `_JAXLOSS`."""

    def setUp(self):
        patch = mock.patch.object(module, name, _JAXLOSS)
        patch.start()
        self.addCleanup(patch.stop)
        base.setUp(self)

    return type(f"TestOptax{base.__name__}", (base,), {"setUp": setUp, "__module__": __name__})


TestOptaxSigmoidCrossEntropy = _on_jaxloss(
    _optax_ct.SigmoidCrossEntropyTest, _optax_ct, "_classification"
)
TestOptaxPolyLoss = _on_jaxloss(_optax_ct.PolyLossTest, _optax_ct, "_classification")
TestOptaxSigmoidFocalLoss = _on_jaxloss(
    _optax_ct.SigmoidFocalLossTest, _optax_ct, "_classification"
)
TestOptaxSmoothLabels = _on_jaxloss(_optax_st.SmoothLabelsTest, _optax_st, "_smoothing")


# The Optax classes that compile many programs eagerly (a few seconds each on two cores) run in
# `make test-all`; the fast tier keeps the two quick ones and the tests below.
for _cls in (TestOptaxPolyLoss, TestOptaxSigmoidFocalLoss):
    _cls.pytestmark = [pytest.mark.slow]

K = 5
RNG = np.random.default_rng(20)
X = jnp.asarray(RNG.normal(size=(6, K)) * 2, jnp.float32)
X2 = jnp.asarray(RNG.normal(size=(6, K)), jnp.float32)
Y = jnp.array([0, 3, 1, 4, 2, 3])
T = jax.nn.softmax(X2)
XB = X[:, 0]
TB = jnp.array([0.0, 1.0, 1.0, 0.0, 0.3, 1.0])

# (function, its arrays, the hyperparameter, a value in range, a value out of range or None).
CASES = [
    (jaxloss.cross_entropy, (X, Y), "label_smoothing", 0.2, 1.5),
    (jaxloss.cross_entropy, (X, Y), "z_loss", 1e-2, -1.0),
    (jaxloss.cross_entropy, (X, Y), "logit_softcap", 2.0, 0.0),
    (jaxloss.softmax_focal_loss, (X, Y), "gamma", 1.5, -0.5),
    (jaxloss.softmax_focal_loss, (X, Y), "alpha", 0.25, None),
    (jaxloss.sigmoid_focal_loss, (XB, TB), "gamma", 0.5, -1.0),
    (jaxloss.sigmoid_focal_loss, (XB, TB), "alpha", 0.25, 1.5),
    (jaxloss.poly_loss_cross_entropy, (X, T), "epsilon", -1.0, float("inf")),
    (jaxloss.softmax_kl_divergence, (X, X2), "temperature", 2.0, -1.0),
    (jaxloss.softmax_kl_divergence, (X, X2), "beta", 0.3, 1.5),
    (jaxloss.binary_cross_entropy_with_logits, (XB, TB), "label_smoothing", 0.1, -0.1),
    (jaxloss.smooth_labels, (T,), "alpha", 0.1, 2.0),
]
IDS = [f"{f.__name__}-{name}" for f, _, name, _, _ in CASES]


@pytest.mark.parametrize(("fn", "args", "name", "value", "bad"), CASES, ids=IDS)
def test_traced_value_matches_python_number_and_nan_out_of_range(fn, args, name, value, bad):
    """One program for every value (a schedule never recompiles); a traced value gives what the
    Python number gives; a traced out-of-range value gives NaN where a Python one raises."""
    f = jax.jit(lambda v: fn(*args, **{name: v}))
    np.testing.assert_allclose(f(value), fn(*args, **{name: value}), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(f(0.5 * value), fn(*args, **{name: 0.5 * value}), rtol=2e-6,
                               atol=1e-7)  # fmt: skip
    if bad is not None:
        assert np.all(np.isnan(f(bad)))
        with pytest.raises(ValueError, match=f"{fn.__name__}: `{name}` must be"):
            fn(*args, **{name: bad})
    assert f._cache_size() == 1


def test_traced_zero_is_the_plain_loss_even_at_minus_inf_logits():
    """A traced ε = 0 or λ_z = 0 adds nothing, also where its term would be infinite (a −inf
    logit off the label: ε·∞ would be NaN)."""
    x = X.at[0, 2].set(-jnp.inf)
    plain = jaxloss.cross_entropy(x, Y)
    for name in ("label_smoothing", "z_loss"):
        out = jax.jit(lambda v, name=name: jaxloss.cross_entropy(x, Y, **{name: v}))(0.0)
        np.testing.assert_array_equal(out, plain)
    g = jax.jit(jax.grad(lambda x, e: jaxloss.cross_entropy(x, Y, label_smoothing=e,
                                                            reduction="sum")))(x, 0.0)  # fmt: skip
    assert np.all(np.isfinite(g))
    capped = jax.jit(lambda c: jaxloss.cross_entropy(X, Y, logit_softcap=c))(jnp.inf)
    np.testing.assert_allclose(capped, jaxloss.cross_entropy(X, Y), rtol=1e-6)


def _sigmoid_focal64(x, t, gamma, alpha):
    """The plain formula, float64: α_t·(1 − p_t)^γ·BCE."""
    p = jax.nn.sigmoid(x)
    bce = -(t * jnp.log(p) + (1 - t) * jnp.log1p(-p))
    m = 1 - (t * p + (1 - t) * (1 - p))
    return (alpha * t + (1 - alpha) * (1 - t)) * m**gamma * bce


def _softmax_focal64(x, y, gamma):
    log_p = jnp.take_along_axis(jax.nn.log_softmax(x), y[:, None], -1)[:, 0]
    return -((1 - jnp.exp(log_p)) ** gamma) * log_p


def _ce64(x, y, eps, zl):
    lse = jax.scipy.special.logsumexp(x, axis=-1)
    nll = lse[:, None] - x
    label = jnp.take_along_axis(nll, y[:, None], -1)[:, 0]
    return (1 - eps) * label + eps * jnp.mean(nll, -1) + zl * lse**2


def _check_hyper_grad(ours, ref, a, b):
    a, b = jnp.float64(a), jnp.float64(b)
    g_ref = jax.grad(ref, argnums=(0, 1))(a, b)
    g = jax.jit(jax.grad(ours, argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-12)
    assert abs(float(g[0])) > 1e-3  # not silently zero
    _, fwd = jax.jvp(ours, (a, b), (jnp.float64(1.0), jnp.float64(0.0)))
    np.testing.assert_allclose(fwd, g_ref[0], rtol=1e-9)


def test_focal_gamma_and_alpha_gradients_match_float64_autodiff():
    """d/dγ and d/dα of `sigmoid_focal_loss`, reverse and forward mode, against float64
    autodiff of the plain formula."""
    with jax.enable_x64():
        x, t = jnp.asarray(XB, jnp.float64), jnp.asarray(TB, jnp.float64)
        _check_hyper_grad(
            lambda g, a: jnp.sum(jaxloss.sigmoid_focal_loss(x, t, gamma=g, alpha=a)),
            lambda g, a: jnp.sum(_sigmoid_focal64(x, t, g, a)),
            1.5,
            0.25,
        )


@pytest.mark.slow
def test_softmax_hyperparameter_gradients_match_float64_autodiff():
    """d/dγ of `softmax_focal_loss` and d/dε, d/dλ_z of `cross_entropy`, as above."""
    with jax.enable_x64():
        x = jnp.asarray(X, jnp.float64)
        _check_hyper_grad(
            lambda g, _: jnp.sum(jaxloss.softmax_focal_loss(x, Y, gamma=g)),
            lambda g, _: jnp.sum(_softmax_focal64(x, Y, g)),
            0.7,
            0.0,
        )
        _check_hyper_grad(
            lambda e, z: jaxloss.cross_entropy(x, Y, label_smoothing=e, z_loss=z, reduction="mean"),
            lambda e, z: jnp.mean(_ce64(x, Y, e, z)),
            0.2,
            1e-2,
        )


@pytest.mark.slow
def test_distillation_hyperparameter_gradients_match_finite_differences():
    """d/dT and d/dβ of `softmax_kl_divergence` (β = 0.3: JSD; at the ends D does not depend
    on β, so the derivative is 0), float64, against central differences."""
    with jax.enable_x64():
        s, t = jnp.asarray(X, jnp.float64), jnp.asarray(X2, jnp.float64)
        # A class outside the teacher's support (reverse KL would be +inf there).
        t_off = t.at[1, 0].set(-jnp.inf)

        def f(temp, beta):
            teacher = jnp.where(beta < 1, t_off, t)
            return jnp.sum(jaxloss.softmax_kl_divergence(s, teacher, temperature=temp, beta=beta))

        grad = jax.jit(jax.grad(f, argnums=(0, 1)))
        h = 1e-6
        for temp, beta in [(2.0, 0.3), (0.7, 0.0), (1.3, 1.0)]:
            g_t, g_b = grad(temp, beta)
            fd_t = (f(temp + h, beta) - f(temp - h, beta)) / (2 * h)
            np.testing.assert_allclose(g_t, fd_t, rtol=1e-6)
            fd_b = (f(temp, beta + h) - f(temp, beta - h)) / (2 * h) if 0 < beta < 1 else 0.0
            np.testing.assert_allclose(g_b, fd_b, rtol=1e-6, atol=1e-12)
            assert np.isfinite(g_t)
