"""Named edge cases: infinities, masks, zero probabilities, precision near p = 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxloss
from tests import reference as ref

NEG_INF = -jnp.inf


def _finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(np.asarray(a))), a


def _int_ce_sum(x, y, **kw):
    return jnp.sum(jaxloss.cross_entropy(x, y, **kw))


# --- -inf and huge logits ----------------------------------------------------------------------


def test_neg_inf_logits_on_other_classes_give_finite_loss_and_grad():
    x = jnp.array([[2.0, NEG_INF, 0.5], [NEG_INF, NEG_INF, 1.0]])
    y = jnp.array([0, 2])
    loss, g = jax.value_and_grad(_int_ce_sum)(x, y)
    _finite(loss, g)
    np.testing.assert_allclose(jaxloss.cross_entropy(x, y), ref.cross_entropy(x, y), rtol=1e-6)
    np.testing.assert_allclose(g, ref.softmax(x) - np.eye(3)[np.asarray(y)], atol=1e-7)
    _, t = jax.jvp(lambda x: jaxloss.cross_entropy(x, y), (x,), (jnp.ones_like(x),))
    _finite(t)


def test_neg_inf_label_logit_gives_inf_loss():
    x = jnp.array([[NEG_INF, 0.0, 1.0]])
    assert jaxloss.cross_entropy(x, jnp.array([0]))[0] == jnp.inf


@pytest.mark.parametrize("big", [1e30, -1e30])
def test_huge_logits(big):
    x = jnp.array([[big, 0.0, 1.0], [0.0, big, -big]])
    y = jnp.array([1, 1])
    loss, g = jax.value_and_grad(_int_ce_sum)(x, y)
    _finite(loss, g)
    np.testing.assert_allclose(jaxloss.cross_entropy(x, y), ref.cross_entropy(x, y), rtol=1e-6)
    np.testing.assert_allclose(g, ref.softmax(x) - np.eye(3)[[1, 1]], atol=1e-7)
    _finite(jaxloss.logsumexp(x), jaxloss.softmax(x), jaxloss.softmax_entropy(x))


def test_all_neg_inf_row_logsumexp_is_neg_inf_with_zero_grad():
    x = jnp.array([[NEG_INF, NEG_INF], [0.0, 1.0]])
    assert jaxloss.logsumexp(x)[0] == -jnp.inf
    g = jax.grad(lambda x: jaxloss.logsumexp(x)[1])(x)
    _finite(g)
    np.testing.assert_allclose(g[0], 0.0)


def test_empty_class_axis():
    x = jnp.zeros((3, 0))
    assert np.all(jaxloss.logsumexp(x) == -jnp.inf)
    assert jaxloss.softmax(x).shape == (3, 0)


# --- masks ---------------------------------------------------------------------------------------


def test_fully_masked_rows_give_zero_loss_and_zero_grad():
    x = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    y = jnp.array([2, 0])
    for where in (jnp.array([True, False]), jnp.array([[True] * 3, [False] * 3])):
        loss, g = jax.value_and_grad(lambda x, w=where: _int_ce_sum(x, y, where=w))(x)
        per = jaxloss.cross_entropy(x, y, where=where)
        assert per[1] == 0
        np.testing.assert_array_equal(g[1], 0.0)
        _finite(loss, g)
        _, t = jax.jvp(lambda x, w=where: jaxloss.cross_entropy(x, y, where=w), (x,), (x,))
        assert t[1] == 0
    soft = jnp.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    loss, g = jax.value_and_grad(
        lambda x: jnp.sum(jaxloss.softmax_cross_entropy(x, soft, where=jnp.array([True, False])))
    )(x)
    np.testing.assert_array_equal(g[1], 0.0)
    np.testing.assert_allclose(loss, ref.softmax_cross_entropy(x, soft)[0], rtol=1e-6)


def test_class_mask_leaves_classes_out_of_normalisation():
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    mask = jnp.array([[True, True, False, True]])
    got = jaxloss.cross_entropy(x, jnp.array([1]), where=mask)
    np.testing.assert_allclose(got, ref.cross_entropy(x[:, [0, 1, 3]], [1]), rtol=1e-6)
    g = jax.grad(lambda x: _int_ce_sum(x, jnp.array([1]), where=mask))(x)
    assert g[0, 2] == 0
    np.testing.assert_allclose(jaxloss.softmax(x, where=mask)[0, 2], 0.0)
    assert jaxloss.log_softmax(x, where=mask)[0, 2] == -jnp.inf


def test_masked_label_class_gives_inf():
    x = jnp.array([[1.0, 2.0, 3.0]])
    mask = jnp.array([[True, False, True]])
    assert jaxloss.cross_entropy(x, jnp.array([1]), where=mask)[0] == jnp.inf


def test_mean_over_nothing_is_zero_with_zero_grad():
    x = jnp.ones((3, 4))
    y = jnp.full((3,), -100)
    loss, g = jax.value_and_grad(
        lambda x: jaxloss.cross_entropy(x, y, ignore_index=-100, reduction="mean")
    )(x)
    assert loss == 0
    np.testing.assert_array_equal(g, 0.0)


# --- zero probabilities: 0 log 0 = 0, also in gradients ------------------------------------------


def test_entropy_zero_probabilities():
    p = jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(jaxloss.entropy(p), [np.log(2), 0.0], rtol=1e-6)
    g = jax.grad(lambda p: jnp.sum(jaxloss.entropy(p)))(p)
    _finite(g)
    assert g[0, 2] == 0 and g[1, 1] == 0
    _, t = jax.jvp(lambda p: jaxloss.entropy(p), (p,), (jnp.ones_like(p),))
    _finite(t)


def test_kl_zero_targets_and_neg_inf_log_targets():
    p = jnp.array([[0.5, 0.5, 0.0]])
    log_q = jnp.log(jnp.array([[0.5, 0.5, 0.0]]))  # q = 0 exactly where p = 0
    kl = jaxloss.kl_divergence(log_q, p)
    assert kl[0] == 0
    gq, gp = jax.grad(lambda lq, p: jnp.sum(jaxloss.kl_divergence(lq, p)), (0, 1))(log_q, p)
    _finite(gq, gp)
    log_p = jnp.log(p)
    kl2 = jaxloss.kl_divergence_with_log_targets(log_q, log_p)
    assert kl2[0] == 0
    grads = jax.grad(
        lambda lq, lp: jnp.sum(jaxloss.kl_divergence_with_log_targets(lq, lp)), (0, 1)
    )(log_q, log_p)
    _finite(*grads)
    # Optax gives NaN gradients w.r.t. the targets here; we pin that we do not.
    assert np.isnan(
        np.asarray(jax.grad(lambda p: jnp.sum(optax.losses.kl_divergence(log_q, p)))(p))
    ).any()


def test_kl_target_outside_prediction_support_is_inf():
    p = jnp.array([0.5, 0.5])
    log_q = jnp.log(jnp.array([1.0, 0.0]))
    assert jaxloss.kl_divergence(log_q, p) == jnp.inf


def test_soft_cross_entropy_zero_targets_with_neg_inf_logits():
    x = jnp.array([[1.0, NEG_INF, 0.0]])
    t = jnp.array([[0.7, 0.0, 0.3]])
    loss, g = jax.value_and_grad(lambda x: jnp.sum(jaxloss.softmax_cross_entropy(x, t)))(x)
    _finite(loss, g)
    np.testing.assert_allclose(loss, ref.softmax_cross_entropy(x, t)[0], rtol=1e-6)
    assert np.isnan(np.asarray(optax.softmax_cross_entropy(x, t))).all()


def test_softmax_entropy_with_neg_inf_logits():
    x = jnp.array([[0.0, 0.0, NEG_INF]])
    h, g = jax.value_and_grad(lambda x: jnp.sum(jaxloss.softmax_entropy(x)))(x)
    np.testing.assert_allclose(h, np.log(2), rtol=1e-6)
    _finite(g)


# --- precision near p_y = 1 -----------------------------------------------------------------------


def test_true_class_gradient_has_no_cancellation():
    # p_y = 1 − 1e-6: the exact gradient is −1e-6/(1 + 1e-6) at the label.
    r = 1e-6
    x = jnp.array([[0.0, np.log(r)]], jnp.float32)
    y = jnp.array([0])
    exact = -ref.softmax(x)[0, 1]
    g = jax.grad(lambda x: _int_ce_sum(x, y))(x)
    assert abs(float(g[0, 0]) - exact) / abs(exact) < 1e-5
    plain = jax.grad(lambda x: -jax.nn.log_softmax(x)[0, 0])(x)
    assert abs(float(plain[0, 0]) - exact) / abs(exact) > 1e-2  # autodiff loses the digits
    np.testing.assert_allclose(jaxloss.cross_entropy(x, y), -ref.log_softmax(x)[:, 0], rtol=1e-5)
    # Soft targets with a one-hot row and forward mode get the same exact component.
    gs = jax.grad(lambda x: jnp.sum(jaxloss.softmax_cross_entropy(x, jnp.array([[1.0, 0.0]]))))(x)
    assert abs(float(gs[0, 0]) - exact) / abs(exact) < 1e-5
    _, t = jax.jvp(lambda x: jaxloss.cross_entropy(x, y), (x,), (jnp.array([[1.0, 0.0]]),))
    assert abs(float(t[0]) - exact) / abs(exact) < 1e-5


def _grad_error(fn, x, y):
    g = np.asarray(jax.grad(lambda x: jnp.sum(fn(x, y)))(x), np.float64)
    want = ref.softmax(np.asarray(x)) - np.eye(x.shape[-1])[np.asarray(y)]
    return np.max(np.abs(g - want))


@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_gradient_error_no_worse_than_optax(scale, offset):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(64, 100)) * scale + offset, jnp.float32)
    y = jnp.asarray(rng.integers(0, 100, size=64))
    ours = _grad_error(jaxloss.softmax_cross_entropy_with_integer_labels, x, y)
    theirs = _grad_error(optax.softmax_cross_entropy_with_integer_labels, x, y)
    assert ours <= max(theirs, 1e-7) * 1.01, (ours, theirs)


def test_inputs_are_not_modified():
    x = jnp.array([[1.0, 2.0, 3.0]])
    y = jnp.array([1])
    x_np, y_np = np.asarray(x).copy(), np.asarray(y).copy()
    jax.grad(lambda x: _int_ce_sum(x, y, label_smoothing=0.1))(x)
    jax.jit(jaxloss.cross_entropy, donate_argnums=())(x, y)
    np.testing.assert_array_equal(x, x_np)
    np.testing.assert_array_equal(y, y_np)


def test_softmax_entropy_gradient_of_a_confident_row():
    # Autodiff of −Σ p log p was 45% off here (found while writing the docs).
    x = jnp.array([20.0, 0.0])
    g = jax.grad(jaxloss.softmax_entropy)(x)
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.asarray(x), jnp.float64)
        want = jax.grad(lambda x: -jnp.sum(jax.nn.softmax(x) * jax.nn.log_softmax(x)))(x64)
    np.testing.assert_allclose(g, want, rtol=1e-5)


def test_neg_inf_label_logit_has_finite_gradient():
    # The loss is +inf, but its derivative, softmax − one_hot, is finite (−1 at the label).
    x = jnp.array([[-jnp.inf, 0.0, 1.0]])
    g = jax.grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, jnp.array([0]))))(x)
    np.testing.assert_allclose(g, ref.softmax(x) - np.eye(3)[[0]], atol=1e-7)
