"""softmax_focal_loss, poly_loss_cross_entropy, smooth_labels: float64 references, Optax parity,
the confident-row regime, masks and reductions, transforms, and bad arguments."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxloss
from tests import reference as ref

B, K = 6, 5
GAMMAS = (0.0, 0.5, 1.0, 2.0)


def _data(seed=0, scale=2.0, b=B, k=K):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(b, k)) * scale).astype(np.float32)
    y = rng.integers(0, k, size=b).astype(np.int32)
    t = rng.dirichlet(np.ones(k), size=b).astype(np.float32)
    return x, y, t


def _naive_focal(x, y, gamma, alpha):
    """The formula as written, for float64 autodiff: −α_y (1 − p_y)^γ log p_y."""
    log_p = jnp.take_along_axis(jax.nn.log_softmax(x), y[:, None], -1)[:, 0]
    return -alpha[y] * (1 - jnp.exp(log_p)) ** gamma * log_p


def _f64_grad(f, *args, argnums=0):
    with jax.enable_x64(True):
        a64 = [jnp.asarray(a, jnp.float64 if np.asarray(a).dtype.kind == "f" else a.dtype)
               for a in args]  # fmt: skip
        return np.asarray(jax.grad(lambda *a: jnp.sum(f(*a)), argnums)(*a64))


# --- softmax_focal_loss ----------------------------------------------------------------------


@pytest.mark.parametrize("gamma", (*GAMMAS, 3.5))
def test_focal_value_and_grad_against_float64(gamma):
    x, y, _ = _data(1)
    alpha = np.linspace(0.25, 1.5, K).astype(np.float32)
    got = jaxloss.softmax_focal_loss(x, y, gamma=gamma, alpha=alpha)
    want = ref.softmax_focal_loss(x, y, gamma=gamma, alpha=alpha)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)

    def f(x, a):
        return jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=gamma, alpha=a))

    gx, ga = jax.grad(f, (0, 1))(x, alpha)
    naive = lambda x, a: _naive_focal(x, jnp.asarray(y), gamma, a)  # noqa: E731
    np.testing.assert_allclose(gx, _f64_grad(naive, x, alpha), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ga, _f64_grad(naive, x, alpha, argnums=1), rtol=1e-5, atol=1e-7)


def test_focal_gamma_zero_is_cross_entropy_exactly():
    x, y, _ = _data(2)
    y[1] = -100
    keep = np.array([True, True, False, True, True, True])
    for kw in ({}, {"ignore_index": -100}):
        kw = {**kw, "where": keep}
        ce = lambda x, kw=kw: jaxloss.cross_entropy(x, y, **kw)  # noqa: E731
        fl = lambda x, kw=kw: jaxloss.softmax_focal_loss(x, y, gamma=0.0, **kw)  # noqa: E731
        np.testing.assert_array_equal(fl(x), ce(x))
        g = jax.grad(lambda x, f: jnp.sum(f(x)), 0)
        np.testing.assert_array_equal(g(x, fl), g(x, ce))


def test_focal_alpha_forms_and_gradient():
    x, y, _ = _data(3)
    a = np.array([1, 2, 3, 4, 5])
    base = jaxloss.softmax_focal_loss(x, y, gamma=1.0)
    for alpha in (a.tolist(), a, jnp.asarray(a, jnp.int32), a.astype(np.float32)):
        got = jaxloss.softmax_focal_loss(x, y, gamma=1.0, alpha=alpha)
        np.testing.assert_allclose(got, a[y] * base, rtol=1e-6)
    np.testing.assert_allclose(jaxloss.softmax_focal_loss(x, y, gamma=1.0, alpha=0.25),
                               0.25 * base, rtol=1e-6)  # fmt: skip
    # dℓ/dα_c = Σ over the examples labelled c of (1 − p_y)^γ·nll: a plain (not stopped) gradient.
    ga = jax.grad(lambda al: jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=1.0, alpha=al)))(
        a.astype(np.float32)
    )
    np.testing.assert_allclose(ga, np.bincount(y, weights=np.asarray(base), minlength=K),
                               rtol=1e-6)  # fmt: skip


def test_focal_dropped_examples_ignore_infinite_alpha_and_nan_logits():
    x, _, _ = _data(4)
    y = np.array([0, 1, 2, 3, 4, 0], np.int32)  # the dropped example's class 2 is its own
    x[2] = np.nan
    keep = np.ones(B, bool)
    keep[2] = False
    alpha = np.ones(K, np.float32)
    alpha[2] = np.inf

    def f(x, a):
        return jaxloss.softmax_focal_loss(x, y, where=keep, gamma=0.5, alpha=a)

    out = f(x, alpha)
    assert out[2] == 0
    gx, ga = jax.grad(lambda x, a: jnp.sum(f(x, a)), (0, 1))(x, alpha)
    assert np.all(gx[2] == 0) and np.all(np.isfinite(gx))
    assert np.all(np.isfinite(out)) and ga[2] == 0 and np.all(np.isfinite(ga))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_confident_row_p_one_minus_1e7(gamma):
    # Two classes, p_y = 1 − 1e-7: the loss ≈ 1e-7^(γ+1) and its gradient keep their digits.
    d = np.log((1 - 1e-7) / 1e-7)
    x = np.array([[d, 0.0], [0.0, d]], np.float32)
    y = np.array([0, 1], np.int32)
    got = jaxloss.softmax_focal_loss(x, y, gamma=gamma)
    want = ref.softmax_focal_loss(x, y, gamma=gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    g = jax.grad(lambda x: jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=gamma)))(x)
    want_g = _f64_grad(lambda x: _naive_focal(x, jnp.asarray(y), gamma, jnp.ones(2)), x)
    np.testing.assert_allclose(g, want_g, rtol=1e-4)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_finite_at_huge_gaps_under_transforms(gamma):
    x = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, -np.inf], [-1e4, 0.0, 1e4]], np.float32)
    y = np.array([0, 1, 0], np.int32)  # two certain rows, one certainly wrong (loss 2e4)
    f = lambda x: jaxloss.softmax_focal_loss(x, y, gamma=gamma)  # noqa: E731
    s = lambda x: jnp.sum(f(x))  # noqa: E731
    out = f(x)
    np.testing.assert_array_equal(out[:2], 0.0)
    np.testing.assert_allclose(out[2], 2e4, rtol=1e-6)
    for g in (jax.grad(s)(x), jax.jit(jax.grad(s))(x)):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g[2], [-1.0, 0.0, 1.0], atol=1e-6)
        np.testing.assert_array_equal(g[:2], 0.0)  # CE's gradient underflows to 0 there too
    tx = np.ones_like(x)
    val, tan = jax.jvp(f, (x,), (tx,))
    np.testing.assert_array_equal(val, out)
    assert np.all(np.isfinite(tan))
    row = lambda r, t: jaxloss.softmax_focal_loss(r[None], t[None], gamma=gamma)[0]  # noqa: E731
    np.testing.assert_array_equal(jax.vmap(row)(x, y), out)


@pytest.mark.parametrize("gamma", (0.5, 2.0))
def test_focal_gradient_at_exactly_certain_row_is_zero(gamma):
    # nll = log1p(2e^{−200}) is 0 in float32: the derivative (1−p)^γ + γ(1−p)^{γ−1}·p·nll is
    # then 0 (γ > 0), where autodiff of the plain formula gives NaN for γ < 1.
    x = np.array([[200.0, 0.0, 0.0]], np.float32)
    y = np.array([0], np.int32)
    g = jax.grad(lambda x: jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=gamma)))(x)
    np.testing.assert_array_equal(g, 0.0)
    h = jax.hessian(lambda x: jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=2.0)))(x)
    assert np.all(np.isfinite(h))
    # nll = 8.5e-18, kept by cross_entropy: a tiny, finite, nonzero gradient.
    x40 = np.array([[40.0, 0.0, 0.0]], np.float32)
    g40 = jax.grad(lambda x: jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=gamma)))(x40)
    assert np.all(np.isfinite(g40)) and g40[0, 0] <= 0 and (gamma > 1 or g40[0, 0] < 0)


@pytest.mark.slow  # Hessians
def test_focal_jvp_matches_grad_and_hessian_matches_float64():
    x, y, _ = _data(5, scale=1.5)
    f = lambda x: jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=1.5))  # noqa: E731
    tx = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    _, tan = jax.jvp(f, (x,), (tx,))
    np.testing.assert_allclose(tan, np.sum(jax.grad(f)(x) * tx), rtol=1e-5)
    y2 = y[:2]
    h = jax.hessian(lambda x: jnp.sum(jaxloss.softmax_focal_loss(x, y2, gamma=1.5)))(x[:2])
    with jax.enable_x64(True):
        want = jax.hessian(
            lambda x: jnp.sum(_naive_focal(x, jnp.asarray(y[:2]), 1.5, jnp.ones(K)))
        )(jnp.asarray(x[:2], jnp.float64))
    np.testing.assert_allclose(h, want, rtol=1e-4, atol=1e-5)


def test_focal_reductions_and_masks():
    x, y, _ = _data(6)
    y[0] = -100
    keep = np.array([True, True, True, False, True, True])
    alpha = np.linspace(0.5, 2.0, K)
    kw = dict(gamma=2.0, alpha=alpha, ignore_index=-100, where=keep)
    per = np.asarray(jaxloss.softmax_focal_loss(x, y, **kw))
    assert per[0] == 0 and per[3] == 0
    kept = keep & (y != -100)
    # The mean divides by the number of kept examples (4), not by Σ α_y.
    mean = jaxloss.softmax_focal_loss(x, y, reduction="mean", **kw)
    np.testing.assert_allclose(mean, per.sum() / kept.sum(), rtol=1e-6)
    total, count = jaxloss.softmax_focal_loss(x, y, reduction="sum_and_count", **kw)
    np.testing.assert_allclose(total, per.sum(), rtol=1e-6)
    assert float(count) == kept.sum()
    want = ref.softmax_focal_loss(x[keep], y[keep], gamma=2.0, alpha=alpha, ignore_index=-100,
                                  reduction="mean")  # fmt: skip
    np.testing.assert_allclose(mean, want, rtol=1e-6)
    none_kept = jaxloss.softmax_focal_loss(x, y, where=np.zeros(B, bool), reduction="mean")
    assert float(none_kept) == 0.0
    g = jax.grad(lambda x: jaxloss.softmax_focal_loss(x, y, where=np.zeros(B, bool),
                                                       reduction="mean"))(x)  # fmt: skip
    np.testing.assert_array_equal(g, 0.0)


def test_focal_class_mask_and_tuple_axis():
    x, y, _ = _data(7)
    cmask = np.ones((B, K), bool)
    cmask[:, 4] = False
    y = np.where(y == 4, 0, y).astype(np.int32)
    got = jaxloss.softmax_focal_loss(x, y, where=cmask, gamma=2.0)
    want = ref.softmax_focal_loss(x[:, :4], y, gamma=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Classes on axis 0, and on two axes flattened.
    np.testing.assert_allclose(jaxloss.softmax_focal_loss(x.T, y, axis=0, gamma=2.0),
                               ref.softmax_focal_loss(x, y, gamma=2.0), rtol=1e-5)  # fmt: skip
    x6 = np.random.default_rng(0).normal(size=(B, 2, 3)).astype(np.float32)
    y6 = np.arange(B, dtype=np.int32)
    np.testing.assert_allclose(
        jaxloss.softmax_focal_loss(x6, y6, axis=(1, 2), gamma=2.0, alpha=np.arange(1, 7)),
        ref.softmax_focal_loss(x6.reshape(B, 6), y6, gamma=2.0, alpha=np.arange(1, 7)),
        rtol=1e-5,
    )


def test_focal_out_of_range_labels_and_nan():
    x, y, _ = _data(8)
    y[1], y[2] = K, -1
    x[3, 0] = np.nan
    out = np.asarray(jaxloss.softmax_focal_loss(x, y, gamma=2.0, alpha=np.ones(K)))
    assert np.isnan(out[1]) and np.isnan(out[2]) and np.isnan(out[3])
    assert np.all(np.isfinite(np.delete(out, [1, 2, 3])))
    assert np.isnan(jaxloss.softmax_focal_loss(x, y, gamma=2.0, reduction="mean"))


def test_focal_bf16_computed_in_float32():
    x, y, _ = _data(9)
    xb = jnp.asarray(x, jnp.bfloat16)
    got = jaxloss.softmax_focal_loss(xb, y, gamma=2.0)
    assert got.dtype == jnp.float32
    want = ref.softmax_focal_loss(np.asarray(xb.astype(jnp.float32)), y, gamma=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    g = jax.grad(lambda x: jnp.sum(jaxloss.softmax_focal_loss(x, y, gamma=2.0)))(xb)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


def test_focal_jit_and_vmap_match_eager():
    x, y, _ = _data(10)
    f = lambda x, y: jaxloss.softmax_focal_loss(x, y, gamma=0.5, alpha=np.arange(1.0, 6.0))  # noqa: E731
    eager = f(x, y)
    np.testing.assert_allclose(jax.jit(f)(x, y), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda r, t: f(r[None], t[None])[0])(x, y), eager,
                               rtol=1e-6)  # fmt: skip


# --- poly_loss_cross_entropy -------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", (2.0, -1.0, 0.5))
def test_poly_matches_optax_values_and_grads(epsilon):
    x, y, t = _data(11)
    onehot = np.eye(K, dtype=np.float32)[y]
    for labels in (t, onehot):
        got = jaxloss.poly_loss_cross_entropy(x, labels, epsilon=epsilon)
        want = optax.losses.poly_loss_cross_entropy(x, labels, epsilon=epsilon)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

        def mine(x, t):
            return jnp.sum(jaxloss.poly_loss_cross_entropy(x, t, epsilon=epsilon) * np.arange(B))

        def theirs(x, t):
            return jnp.sum(optax.losses.poly_loss_cross_entropy(x, t, epsilon=epsilon)
                           * np.arange(B))  # fmt: skip

        for a, b in zip(jax.grad(mine, (0, 1))(x, labels), jax.grad(theirs, (0, 1))(x, labels),
                        strict=True):  # fmt: skip
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_poly_matches_optax_with_class_mask_and_axis():
    x, _, t = _data(12)
    cmask = np.random.default_rng(1).random((B, K)) < 0.7
    cmask[:, 0] = True
    t = np.where(cmask, t, 0).astype(np.float32)
    got = jaxloss.poly_loss_cross_entropy(x, t, where=cmask)
    want = optax.losses.poly_loss_cross_entropy(x, t, where=cmask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got0 = jaxloss.poly_loss_cross_entropy(x.T, t.T, axis=0)
    np.testing.assert_allclose(got0, optax.losses.poly_loss_cross_entropy(x, t), rtol=1e-5)


def test_poly_value_and_grads_against_float64():
    x, _, t = _data(13, scale=3.0)
    got = jaxloss.poly_loss_cross_entropy(x, t, epsilon=2.0)
    np.testing.assert_allclose(got, ref.poly_loss_cross_entropy(x, t), rtol=2e-6)

    def naive(x, t):
        log_p = jax.nn.log_softmax(x)
        return -jnp.sum(t * log_p, -1) + 2.0 * jnp.sum(t * (1 - jnp.exp(log_p)), -1)

    f = lambda x, t: jnp.sum(jaxloss.poly_loss_cross_entropy(x, t))  # noqa: E731
    gx, gt = jax.grad(f, (0, 1))(x, t)
    np.testing.assert_allclose(gx, _f64_grad(naive, x, t), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gt, _f64_grad(naive, x, t, argnums=1), rtol=1e-5, atol=1e-7)
    tx = np.ones_like(x)
    _, tan = jax.jvp(lambda x: jaxloss.poly_loss_cross_entropy(x, t), (x,), (tx,))
    jac = jax.jacrev(lambda x: jaxloss.poly_loss_cross_entropy(x, t))(x)  # [B, B, K]
    np.testing.assert_allclose(tan, jac.sum((-1, -2)), rtol=1e-5, atol=1e-6)


def test_poly_confident_one_hot_row_keeps_its_digits():
    # p_y = 1 − 1e-9 in float32: Optax's 1 − p_y is 0; here it is 1e-9 to rounding, and the
    # label's gradient (p_y − 1)(1 + ε p_y) too.
    d = np.float32(np.log((1 - 1e-9) / 1e-9))
    x = np.array([[d, 0.0]], np.float32)
    t = np.array([[1.0, 0.0]], np.float32)
    got = jaxloss.poly_loss_cross_entropy(x, t, epsilon=2.0)
    np.testing.assert_allclose(got, ref.poly_loss_cross_entropy(x, t), rtol=1e-5)
    g = jax.grad(lambda x: jnp.sum(jaxloss.poly_loss_cross_entropy(x, t)))(x)
    p1 = 1 / (1 + np.exp(-np.float64(d)))
    np.testing.assert_allclose(g[0, 0], (p1 - 1) * (1 + 2 * p1), rtol=1e-5)
    assert float(optax.losses.poly_loss_cross_entropy(x, t)[0]) - float(
        optax.losses.softmax_cross_entropy(x, t)[0]) == 0.0  # the digits Optax loses  # fmt: skip


def test_poly_integer_one_hot_labels_and_epsilon_zero():
    x, y, t = _data(14)
    onehot_i = np.eye(K, dtype=np.int32)[y]
    as_float = onehot_i.astype(np.float32)
    np.testing.assert_array_equal(jaxloss.poly_loss_cross_entropy(x, onehot_i),
                                  jaxloss.poly_loss_cross_entropy(x, as_float))  # fmt: skip
    np.testing.assert_array_equal(jaxloss.poly_loss_cross_entropy(x, t, epsilon=0.0),
                                  jaxloss.softmax_cross_entropy(x, t))  # fmt: skip


def test_poly_example_mask_reductions_nan_and_inf():
    x, _, t = _data(15)
    x[1] = np.nan
    x[2, 3] = -np.inf
    t[2, 3] = 0.0
    keep = np.ones(B, bool)
    keep[1] = False
    per = jaxloss.poly_loss_cross_entropy(x, t, where=keep)
    assert per[1] == 0 and np.all(np.isfinite(per))
    g = jax.grad(lambda x: jnp.sum(jaxloss.poly_loss_cross_entropy(x, t, where=keep)))(x)
    assert np.all(g[1] == 0) and np.all(np.isfinite(g))
    mean = jaxloss.poly_loss_cross_entropy(x, t, where=keep, reduction="mean")
    np.testing.assert_allclose(mean, np.sum(per) / 5, rtol=1e-6)
    total, count = jaxloss.poly_loss_cross_entropy(x, t, where=keep, reduction="sum_and_count")
    np.testing.assert_allclose(total, np.sum(per), rtol=1e-6)
    assert float(count) == 5.0
    assert np.isnan(jaxloss.poly_loss_cross_entropy(x, t)[1])


def test_poly_bf16_computed_in_float32():
    x, _, t = _data(16)
    xb = jnp.asarray(x, jnp.bfloat16)
    got = jaxloss.poly_loss_cross_entropy(xb, t)
    assert got.dtype == jnp.float32
    want = ref.poly_loss_cross_entropy(np.asarray(xb.astype(jnp.float32)), t)
    np.testing.assert_allclose(got, want, rtol=1e-5)


# --- smooth_labels ----------------------------------------------------------------------------


CT = np.arange(B * K, dtype=np.float32).reshape(B, K)  # a cotangent that tells entries apart


@pytest.mark.parametrize("alpha", (0.0, 0.1, 1.0))
def test_smooth_labels_matches_optax_and_reference(alpha):
    _, y, t = _data(17)
    for labels in (t, np.eye(K, dtype=np.float32)[y]):
        got = jaxloss.smooth_labels(labels, alpha)
        np.testing.assert_allclose(got, optax.smooth_labels(labels, alpha), rtol=1e-6)
        np.testing.assert_allclose(got, ref.smooth_labels(labels, alpha), rtol=1e-6)
        mine = jax.grad(lambda t: jnp.sum(jaxloss.smooth_labels(t, alpha) * CT))(labels)
        theirs = jax.grad(lambda t: jnp.sum(optax.smooth_labels(t, alpha) * CT))(labels)
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)
    np.testing.assert_allclose(jaxloss.smooth_labels(t.T, alpha, axis=0).T,
                               optax.smooth_labels(t, alpha), rtol=1e-6)  # fmt: skip


def test_smooth_labels_class_mask_counts_kept_classes():
    _, _, t = _data(18)
    cmask = np.ones((B, K), bool)
    cmask[:, :2] = False
    cmask[0] = False  # a fully masked row is 0, not α/0
    got = np.asarray(jaxloss.smooth_labels(t, 0.3, where=cmask))
    theirs = np.asarray(optax.smooth_labels(t, 0.3, where=cmask))
    np.testing.assert_allclose(got[cmask], theirs[cmask], rtol=1e-6)
    np.testing.assert_array_equal(got[~cmask], 0.0)
    ex = np.asarray(jaxloss.smooth_labels(t, 0.3, where=np.arange(B) != 2))
    np.testing.assert_array_equal(ex[2], 0.0)
    np.testing.assert_allclose(np.delete(ex, 2, 0), np.delete(ref.smooth_labels(t, 0.3), 2, 0),
                               rtol=1e-6)  # fmt: skip


def test_smooth_labels_integer_labels():
    y = np.array([0, 3, 4, 1], np.int8)
    got = jaxloss.smooth_labels(y, 0.2, num_classes=5)
    np.testing.assert_allclose(got, ref.smooth_labels(np.eye(5)[y], 0.2), rtol=1e-6)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(jaxloss.smooth_labels(y, 0.2, num_classes=5, axis=0),
                               np.asarray(got).T, rtol=1e-6)  # fmt: skip
    bad = np.asarray(jaxloss.smooth_labels(np.array([0, 5, -1]), 0.2, num_classes=5))
    assert np.all(np.isnan(bad[1:])) and np.all(np.isfinite(bad[0]))
    masked = jaxloss.smooth_labels(np.array([0, -100]), 0.2, num_classes=5,
                                   where=np.array([True, False]))  # fmt: skip
    np.testing.assert_array_equal(masked[1], 0.0)
    # Fed to cross-entropy, the smoothed one-hot matches cross_entropy's label_smoothing.
    x, yy, _ = _data(19)
    np.testing.assert_allclose(
        jaxloss.softmax_cross_entropy(x, jaxloss.smooth_labels(yy, 0.1, num_classes=K)),
        jaxloss.cross_entropy(x, yy, label_smoothing=0.1), rtol=1e-5)  # fmt: skip


def test_smooth_labels_keeps_dtype_and_transforms():
    _, _, t = _data(20)
    tb = jnp.asarray(t, jnp.bfloat16)
    out = jaxloss.smooth_labels(tb, 0.1)
    assert out.dtype == jnp.bfloat16
    want = ref.smooth_labels(np.asarray(tb.astype(jnp.float32)), 0.1)
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=4e-3)
    f = lambda t: jaxloss.smooth_labels(t, 0.1)  # noqa: E731
    np.testing.assert_allclose(jax.jit(f)(t), f(t), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(f)(t), f(t), rtol=1e-6)
    _, tan = jax.jvp(f, (t,), (np.ones_like(t),))
    np.testing.assert_allclose(tan, 0.9, rtol=1e-6)


# --- bad arguments ----------------------------------------------------------------------------


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)
    with pytest.raises(exc, match=pattern):
        jax.jit(lambda *a: fn(*a, **kwargs))(*args)


X = np.zeros((4, 5), np.float32)
Y = np.array([0, 1, 2, 3], np.int32)
T = np.eye(5, dtype=np.float32)[Y]


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        (
            {"gamma": -1.0},
            ValueError,
            r"softmax_focal_loss: `gamma` must be a finite number in \[0",
        ),
        ({"gamma": float("nan")}, ValueError, "softmax_focal_loss: `gamma`"),
        ({"gamma": float("inf")}, ValueError, "softmax_focal_loss: `gamma`"),
        (
            {"alpha": np.ones(4)},
            ValueError,
            re.escape("`alpha` must be a scalar or have shape (5,)"),
        ),
        ({"reduction": "avg"}, ValueError, "softmax_focal_loss: unknown `reduction`"),
        ({"ignore_index": 1.5}, TypeError, "softmax_focal_loss: `ignore_index`"),
    ],
)
def test_focal_bad_options(kwargs, exc, pattern):
    _raises(exc, pattern, jaxloss.softmax_focal_loss, X, Y, **kwargs)


def test_focal_bad_arrays_name_the_function():
    fn = jaxloss.softmax_focal_loss
    _raises(TypeError, r"softmax_focal_loss: `labels` must be integer.*\(4,\)", fn, X,
            Y.astype(np.float32))  # fmt: skip
    _raises(ValueError, re.escape("softmax_focal_loss: `labels` must have the logits' shape"),
            fn, X, Y[:3])  # fmt: skip
    _raises(TypeError, "softmax_focal_loss: `logits` must have a floating dtype", fn,
            X.astype(np.int32), Y)  # fmt: skip
    _raises(ValueError, "softmax_focal_loss: `where`", fn, X, Y, where=np.ones(3, bool))
    with pytest.raises(TypeError, match="softmax_focal_loss: `gamma` must be a real number"):
        jax.jit(lambda g: fn(X, Y, gamma=g))(jnp.array(2.0, jnp.complex64))


def test_poly_bad_arguments():
    fn = jaxloss.poly_loss_cross_entropy
    _raises(ValueError, "poly_loss_cross_entropy: `epsilon` must be a finite number", fn, X, T,
            epsilon=float("inf"))  # fmt: skip
    _raises(TypeError, re.escape("poly_loss_cross_entropy: `labels` are integers of shape (4,) "
                                 "for logits of shape (4, 5)"), fn, X, Y)  # fmt: skip
    _raises(ValueError, re.escape("poly_loss_cross_entropy: `labels` with shape (4, 4) must have "
                                  "the shape of `logits` (4, 5)"), fn, X, T[:, :4])  # fmt: skip
    _raises(ValueError, "poly_loss_cross_entropy: unknown `reduction`", fn, X, T, reduction="x")
    with pytest.raises(ValueError, match="poly_loss_cross_entropy: `epsilon` must be a scalar"):
        jax.jit(lambda e: fn(X, T, epsilon=e))(jnp.ones(4))


def test_smooth_labels_bad_arguments():
    fn = jaxloss.smooth_labels
    _raises(
        ValueError, r"smooth_labels: `alpha` must be a finite number in \[0, 1\]", fn, T, alpha=1.5
    )
    _raises(ValueError, "smooth_labels: `alpha`", fn, T, alpha=-0.1)
    _raises(TypeError, "smooth_labels: integer `labels`.*pass `num_classes`", fn, Y, alpha=0.1)
    _raises(
        TypeError, "smooth_labels: `num_classes` is for integer", fn, T, alpha=0.1, num_classes=5
    )
    _raises(ValueError, "smooth_labels: `num_classes` must be a positive int", fn, Y, alpha=0.1,
            num_classes=0)  # fmt: skip
    with pytest.raises(ValueError, match="smooth_labels: `alpha` must be a scalar"):
        jax.jit(lambda a: fn(T, a))(jnp.full(4, 0.1))
