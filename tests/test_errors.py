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


# --- errors that point the right way (issue 20, item 6) ------------------------------------------


def test_integer_one_hot_labels_suggest_the_dense_loss_or_argmax():
    one_hot = jax.nn.one_hot(Y, 5, dtype=jnp.int32)
    pattern = (
        r"got \(4, 5\)\. `labels` have the logits' shape: one-hot\? use "
        r"`jaxloss.softmax_cross_entropy`, or pass `jnp.argmax\(labels, axis=-1\)`"
    )
    _raises(ValueError, pattern, jaxloss.cross_entropy, X, one_hot)
    _raises(ValueError, pattern, jaxloss.softmax_focal_loss, X, one_hot)
    # Float one-hot rows: the dtype message, with both fixes.
    pattern = (
        r"the logits' shape: one-hot\? use `jaxloss.softmax_cross_entropy`, or pass class "
        r"indices, `jnp.argmax"
    )
    _raises(TypeError, pattern, jaxloss.cross_entropy, X, one_hot.astype(float))


def test_classes_on_another_axis_suggest_that_axis():
    # PyTorch's [N, C, H, W] segmentation layout without axis=1.
    x, y = jnp.zeros((2, 5, 3, 4)), jnp.zeros((2, 3, 4), jnp.int32)
    pattern = (
        r"got \(2, 3, 4\)\. The classes look like axis 1 \(PyTorch's \[N, C, \.\.\.\] "
        r"layout\): pass `axis=1`"
    )
    _raises(ValueError, pattern, jaxloss.cross_entropy, x, y)
    _raises(ValueError, pattern, jaxloss.accuracy, x, y)
    assert jaxloss.cross_entropy(x, y, axis=1).shape == (2, 3, 4)
    # No guess where no axis fits.
    with pytest.raises(ValueError) as e:
        jaxloss.cross_entropy(x, jnp.zeros((2, 7), jnp.int32))
    assert "look like" not in str(e.value)


def test_transposed_weight_suggests_dot_t():
    h, w = jnp.zeros((4, 3)), jnp.zeros((7, 3))
    with pytest.raises(ValueError, match=r"`weight` looks like \[V, D\].*pass `weight\.T`"):
        jaxloss.linear_cross_entropy(h, w, Y)
    with pytest.raises(ValueError) as e:  # neither layout: no .T hint
        jaxloss.linear_cross_entropy(h, jnp.zeros((7, 2)), Y)
    assert "weight.T" not in str(e.value)


def test_check_labels_error_is_caught_by_value_error_or_jax_runtime_error():
    # Under jit a host callback's exception reaches the caller as JaxRuntimeError (a
    # RuntimeError, not a ValueError); the docs' pattern catches both.
    y = Y.at[2].set(7)
    f = jax.jit(lambda x, y: jaxloss.cross_entropy(x, y, check_labels=True))
    for call in (lambda: jaxloss.cross_entropy(X, y, check_labels=True), lambda: f(X, y)):
        try:
            jax.block_until_ready(call())
        except (ValueError, jax.errors.JaxRuntimeError) as e:
            assert "label 7 at position (2,) is outside [0, 5)" in str(e)
        else:
            raise AssertionError("no error")


def test_python_lists_are_refused_naming_the_argument():
    lst = [[0.0, 1.0], [1.0, 0.0]]
    y, p = jnp.array([0, 1]), jnp.full((2, 2), 0.5)
    calls = {
        "accuracy": lambda: jaxloss.accuracy(lst, y),
        "binary_cross_entropy_with_logits": lambda: jaxloss.binary_cross_entropy_with_logits(
            lst, p
        ),
        "cross_entropy": lambda: jaxloss.cross_entropy(lst, y),
        "entropy": lambda: jaxloss.entropy(lst),
        "kl_divergence": lambda: jaxloss.kl_divergence(lst, p),
        "kl_divergence_with_log_targets": lambda: jaxloss.kl_divergence_with_log_targets(lst, p),
        "linear_cross_entropy": lambda: jaxloss.linear_cross_entropy(lst, p, y),
        "log_softmax": lambda: jaxloss.log_softmax(lst),
        "logsumexp": lambda: jaxloss.logsumexp(lst),
        "nll_loss": lambda: jaxloss.nll_loss(lst, y),
        "poly_loss_cross_entropy": lambda: jaxloss.poly_loss_cross_entropy(lst, p),
        "sigmoid_binary_cross_entropy": lambda: jaxloss.sigmoid_binary_cross_entropy(lst, p),
        "sigmoid_focal_loss": lambda: jaxloss.sigmoid_focal_loss(lst, p),
        "smooth_labels": lambda: jaxloss.smooth_labels(lst, 0.1),
        "softmax": lambda: jaxloss.softmax(lst),
        "softmax_cross_entropy": lambda: jaxloss.softmax_cross_entropy(lst, p),
        "softmax_cross_entropy_with_integer_labels": (
            lambda: jaxloss.softmax_cross_entropy_with_integer_labels(lst, y)
        ),
        "softmax_entropy": lambda: jaxloss.softmax_entropy(lst),
        "softmax_focal_loss": lambda: jaxloss.softmax_focal_loss(lst, y),
        "softmax_kl_divergence": lambda: jaxloss.softmax_kl_divergence(lst, p),
    }
    # perplexity takes Python numbers (a sum and a count) by design.
    assert set(calls) == set(jaxloss.__all__) - {"perplexity"}
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{name}: `\w+` must be an array, got a Python list"):
            call()
    with pytest.raises(TypeError, match=r"cross_entropy: `labels` must be an array"):
        jaxloss.cross_entropy(X, [0, 1, 2, 3])


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (jaxloss.cross_entropy, {"label_smoothing": True}),
        (jaxloss.cross_entropy, {"z_loss": True}),
        (jaxloss.softmax_focal_loss, {"gamma": True}),
        (jaxloss.poly_loss_cross_entropy, {"epsilon": np.True_}),
        (jaxloss.accuracy, {"k": True}),
    ],
)
def test_bools_are_not_numbers_for_hyperparameters(fn, kwargs):
    labels = jnp.eye(5)[:4] if fn is jaxloss.poly_loss_cross_entropy else Y
    with pytest.raises(TypeError, match=rf"`{next(iter(kwargs))}` must be a"):
        fn(X, labels, **kwargs)


def test_labels_that_would_wrap_to_int32_are_refused():
    # x64 is off: JAX converts int64 labels to int32, so 2**32 + 1 would read as label 1.
    y = np.array([0, 1, 2, 2**32 + 1], np.int64)
    for fn in (jaxloss.cross_entropy, jaxloss.accuracy, jaxloss.nll_loss):
        with pytest.raises(ValueError, match=r"`labels` of dtype int64 holds 4294967297, outside"):
            fn(X, y)
    with pytest.raises(ValueError, match=r"`labels` of dtype int64 holds -2147483649"):
        jaxloss.smooth_labels(np.array([-(2**31) - 1]), 0.1, num_classes=5)
    with pytest.raises(ValueError, match="linear_cross_entropy: `labels` of dtype int64"):
        jaxloss.linear_cross_entropy(jnp.zeros((4, 3)), jnp.zeros((3, 5)), y)
    # In range: fine, and -100 stays -100.
    ok = jaxloss.cross_entropy(X, np.array([0, 1, 2, -100], np.int64), ignore_index=-100)
    assert ok[3] == 0


def test_ignore_index_outside_the_label_range_names_ignore_index():
    pattern = r"cross_entropy: `ignore_index`=1099511627776 is outside \[-2147483648, 2147483647\]"
    _raises(ValueError, pattern, jaxloss.cross_entropy, X, Y, ignore_index=2**40)
    with pytest.raises(ValueError, match=r"linear_cross_entropy: `ignore_index`="):
        jaxloss.linear_cross_entropy(jnp.zeros((4, 3)), jnp.zeros((3, 5)), Y, ignore_index=2**31)
