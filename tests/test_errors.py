"""Bad input: trace-time errors that name the argument and the shapes; no silent finite loss."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss

X = jnp.zeros((4, 5))
Y = jnp.array([0, 1, 2, 3])


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)
    # The same error comes at trace time under jit.
    with pytest.raises(exc, match=pattern):
        jax.jit(lambda *a: fn(*a, **kwargs))(*args)


def test_non_float_logits():
    _raises(TypeError, r"`logits` must have a floating dtype, got int32 with shape \(4, 5\)",
            jaxloss.cross_entropy, jnp.zeros((4, 5), jnp.int32), Y)  # fmt: skip


def test_non_integer_labels_hint_at_dense_version():
    pattern = r"`labels` must be integer.*float32 with shape \(4,\).*softmax_cross_entropy"
    fn = jaxloss.softmax_cross_entropy_with_integer_labels
    _raises(TypeError, pattern, fn, X, jnp.zeros((4,)))


def test_label_shape_mismatch_names_both_shapes():
    _raises(ValueError, re.escape("expected (4,) for logits of shape (4, 5), got (4, 1)"),
            jaxloss.cross_entropy, X, Y[:, None])  # fmt: skip


@pytest.mark.parametrize("axis", [2, -3, (0, 0), "x", 1.5])
def test_bad_axis(axis):
    with pytest.raises((ValueError, TypeError), match="axis"):
        jaxloss.cross_entropy(X, jnp.zeros((5,), jnp.int32), axis=axis)
    with pytest.raises((ValueError, TypeError), match="axis"):
        jaxloss.logsumexp(X, axis=axis)


def test_where_not_broadcastable():
    _raises(ValueError, r"`where` with shape \(3,\) broadcasts neither to the logits' shape "
            r"\(4, 5\).*batch shape \(4,\)", jaxloss.cross_entropy, X, Y,
            where=jnp.ones((3,), bool))  # fmt: skip


def test_where_must_be_boolean():
    with pytest.raises(TypeError, match="`where` must be a boolean mask"):
        jaxloss.entropy(X, where=jnp.ones((4,)))


@pytest.mark.parametrize("eps", [-0.1, 1.5])
def test_label_smoothing_out_of_range(eps):
    with pytest.raises(
        ValueError, match=r"cross_entropy: `label_smoothing` must be a finite number in \[0, 1\]"
    ):
        jaxloss.cross_entropy(X, Y, label_smoothing=eps)


def test_unknown_reduction():
    with pytest.raises(ValueError, match="unknown `reduction`='avg'"):
        jaxloss.cross_entropy(X, Y, reduction="avg")
    with pytest.raises(ValueError, match="unknown `reduction`"):
        jaxloss.nll_loss(X, Y, reduction="batchmean")


def test_class_weights_wrong_length():
    with pytest.raises(ValueError, match=r"`class_weights` must have shape \(5,\).*got \(4,\)"):
        jaxloss.cross_entropy(X, Y, class_weights=jnp.ones(4))


def test_dense_shape_mismatch():
    with pytest.raises(
        ValueError, match=r"`labels` with shape \(4, 4\) must have the shape of `logits` \(4, 5\)"
    ):
        jaxloss.softmax_cross_entropy(X, jnp.zeros((4, 4)))


def test_bad_base_and_softcap():
    with pytest.raises(ValueError, match="`base`"):
        jaxloss.entropy(jnp.ones((2,)) / 2, base=1)
    with pytest.raises(ValueError, match=r"`logit_softcap` must be a number in \(0, inf\)"):
        jaxloss.cross_entropy(X, Y, logit_softcap=0.0)


@pytest.mark.parametrize("label", [5, -1, 1000])
def test_out_of_range_labels_give_nan_never_silent(label):
    y = Y.at[2].set(label)
    loss = jaxloss.cross_entropy(X, y)
    assert np.isnan(loss[2]) and np.all(np.isfinite(np.delete(np.asarray(loss), 2)))
    assert np.isnan(jaxloss.cross_entropy(X, y, reduction="mean"))
    assert np.isnan(jaxloss.nll_loss(jax.nn.log_softmax(X), y)[2])
    g = jax.grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, y)))(X)
    assert np.isnan(g[2]).all()


def test_ignored_label_is_not_out_of_range():
    y = Y.at[2].set(-100)
    loss = jaxloss.cross_entropy(X, y, ignore_index=-100)
    assert loss[2] == 0 and np.all(np.isfinite(loss))


def test_opt_in_label_check_raises_under_jit_naming_label_and_position():
    y = Y.at[2].set(7)
    f = jax.jit(lambda x, y: jaxloss.cross_entropy(x, y, check_labels=True))
    with pytest.raises(Exception, match=r"label 7 at position \(2,\) is outside \[0, 5\)"):
        jax.block_until_ready(f(X, y))
    np.testing.assert_allclose(f(X, Y), np.log(5.0), rtol=1e-6)  # good labels pass
    ok = jax.jit(lambda x, y: jaxloss.cross_entropy(x, y, ignore_index=-100, check_labels=True))(
        X, Y.at[0].set(-100)
    )
    assert ok[0] == 0
