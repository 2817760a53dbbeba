"""The identities the library rests on, as property-based tests (derandomised, so repeatable)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxloss

# At full size in the slow tier; in the fast tier the identities run on fixed inputs in
# docs/theory.md's executed blocks (tests/test_docs.py).
pytestmark = pytest.mark.slow

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@st.composite
def logits_rows(draw, min_k=2, max_k=8):
    k = draw(st.integers(min_k, max_k))
    b = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).normal(size=(b, k)) * scale


@st.composite
def distributions(draw):
    x = draw(logits_rows())
    zeros = draw(st.booleans())
    p = np.exp(x - x.max(-1, keepdims=True))
    if zeros:  # put exact zeros in, keeping the largest entry
        p = np.where(p < np.median(p, -1, keepdims=True), 0.0, p)
    return p / p.sum(-1, keepdims=True)


def _f32(a):
    return jnp.asarray(a, jnp.float32)


@SETTINGS
@given(distributions(), logits_rows())
def test_cross_entropy_is_entropy_plus_kl(p, x):
    if x.shape != p.shape:
        x = np.resize(x, p.shape)
    log_q = jaxloss.log_softmax(_f32(x))
    ce = jaxloss.softmax_cross_entropy(_f32(x), _f32(p))
    h = jaxloss.entropy(_f32(p))
    kl = jaxloss.kl_divergence(log_q, _f32(p))
    np.testing.assert_allclose(ce, h + kl, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(distributions(), logits_rows())
def test_kl_is_non_negative_and_zero_only_at_equality(p, x):
    if x.shape != p.shape:
        x = np.resize(x, p.shape)
    q = np.asarray(jaxloss.softmax(_f32(x)), np.float64)
    kl = np.asarray(jaxloss.kl_divergence(jnp.log(_f32(q)), _f32(p)))
    assert np.all(kl >= -1e-6)
    self_kl = jaxloss.kl_divergence(jnp.log(_f32(p)), _f32(p))
    np.testing.assert_allclose(self_kl, 0.0, atol=1e-6)
    far = np.abs(p - q).sum(-1) > 0.1
    assert np.all(kl[far] > 1e-4)


@SETTINGS
@given(distributions(), distributions())
def test_kl_both_directions_match_their_definitions(p, q):
    # Each direction against its own definition (the asymmetry itself: the example below).
    if p.shape != q.shape or np.any(p == 0) or np.any(q == 0):
        return
    fwd = jaxloss.kl_divergence(jnp.log(_f32(q)), _f32(p))
    bwd = jaxloss.kl_divergence(jnp.log(_f32(p)), _f32(q))
    np.testing.assert_allclose(fwd, np.sum(p * np.log(p / q), -1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bwd, np.sum(q * np.log(q / p), -1), rtol=1e-4, atol=1e-5)


def test_kl_asymmetry_example():
    p, q = _f32([0.9, 0.1]), _f32([0.5, 0.5])
    fwd = jaxloss.kl_divergence(jnp.log(q), p)
    bwd = jaxloss.kl_divergence(jnp.log(p), q)
    assert abs(float(fwd) - float(bwd)) > 0.1


@SETTINGS
@given(logits_rows(), st.data())
def test_nll_of_log_softmax_is_cross_entropy_is_kl_for_one_hot(x, data):
    y = np.array([data.draw(st.integers(0, x.shape[1] - 1)) for _ in range(x.shape[0])])
    ce = jaxloss.cross_entropy(_f32(x), jnp.asarray(y))
    nll = jaxloss.nll_loss(jaxloss.log_softmax(_f32(x)), jnp.asarray(y))
    one_hot = jax.nn.one_hot(y, x.shape[1])
    kl = jaxloss.kl_divergence(jaxloss.log_softmax(_f32(x)), one_hot)
    np.testing.assert_allclose(ce, nll, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ce, kl, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jaxloss.entropy(one_hot), 0.0, atol=0)


@SETTINGS
@given(logits_rows(), st.floats(-50, 50), st.data())
def test_shift_invariance(x, c, data):
    y = jnp.asarray([data.draw(st.integers(0, x.shape[1] - 1)) for _ in range(x.shape[0])])
    a = jaxloss.cross_entropy(_f32(x), y)
    b = jaxloss.cross_entropy(_f32(x + c), y)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jaxloss.softmax(_f32(x)), jaxloss.softmax(_f32(x + c)), atol=1e-5)


@SETTINGS
@given(logits_rows(), distributions())
def test_gradient_is_softmax_minus_target(x, p):
    if x.shape != p.shape:
        x = np.resize(x, p.shape)
    g = jax.grad(lambda x: jnp.sum(jaxloss.softmax_cross_entropy(x, _f32(p))))(_f32(x))
    want = np.asarray(jaxloss.softmax(_f32(x))) * p.sum(-1, keepdims=True) - p
    np.testing.assert_allclose(g, want, atol=1e-6)
    y = np.argmax(p, -1)
    gi = jax.grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, jnp.asarray(y))))(_f32(x))
    np.testing.assert_allclose(
        gi, np.asarray(jaxloss.softmax(_f32(x))) - np.eye(x.shape[1])[y], atol=1e-6
    )


@SETTINGS
@given(distributions(), logits_rows())
def test_bits_are_nats_over_ln2(p, x):
    nats = jaxloss.entropy(_f32(p))
    np.testing.assert_allclose(jaxloss.entropy(_f32(p), base=2), nats / np.log(2), rtol=1e-6)
    sm_nats = jaxloss.softmax_entropy(_f32(x))
    np.testing.assert_allclose(
        jaxloss.softmax_entropy(_f32(x), base=2), sm_nats / np.log(2), rtol=1e-6
    )


@SETTINGS
@given(distributions(), logits_rows())
def test_minimising_cross_entropy_over_q_minimises_kl(p, x):
    # With p fixed, CE(p, q) − KL(p‖q) = H(p) does not depend on q: the two share minimisers.
    if x.shape != p.shape:
        x = np.resize(x, p.shape)
    x2 = x[::-1].copy() * 0.5
    diff1 = jaxloss.softmax_cross_entropy(_f32(x), _f32(p)) - jaxloss.kl_divergence(
        jaxloss.log_softmax(_f32(x)), _f32(p)
    )
    diff2 = jaxloss.softmax_cross_entropy(_f32(x2), _f32(p)) - jaxloss.kl_divergence(
        jaxloss.log_softmax(_f32(x2)), _f32(p)
    )
    np.testing.assert_allclose(diff1, diff2, rtol=1e-5, atol=1e-5)
