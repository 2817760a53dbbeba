"""accuracy and perplexity: the tie rule, NaN and out-of-range labels, counts that agree with
cross_entropy's, and exact perplexity from accumulated (sum, count) pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxloss

B, K = 12, 7


def _ref_accuracy(x, y, k, keep=None):
    """Per-example hits by the documented rule, float64 NumPy, looping over examples."""
    x = np.asarray(x, np.float64)
    out = np.zeros(y.shape)
    for i in np.ndindex(*y.shape):
        row, label = x[i], int(y[i])
        if not 0 <= label < row.shape[-1] or np.isnan(row).any():
            out[i] = np.nan
            continue
        ahead = sum(
            1 for j, v in enumerate(row) if v > row[label] or (v == row[label] and j < label)
        )
        out[i] = float(ahead < k)
    return out


def _tied_logits(seed, shape=(B, K)):
    # Small integers: many ties, so the tie rule is exercised on most rows.
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 3, K])
def test_accuracy_per_example_against_the_rule_and_top_k(k):
    x = _tied_logits(0)
    y = np.random.default_rng(1).integers(0, K, size=B)
    got = jaxloss.accuracy(jnp.asarray(x), jnp.asarray(y), k=k, reduction="none")
    want = _ref_accuracy(x, y, k)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == jnp.float32
    # The rule is membership in jax.lax.top_k (lower index first among ties) ...
    _, top = jax.lax.top_k(jnp.asarray(x), k)
    np.testing.assert_array_equal(got, np.any(np.asarray(top) == y[:, None], -1))
    if k == 1:  # ... and for k = 1, argmax(logits) == labels.
        np.testing.assert_array_equal(got, np.argmax(x, -1) == y)
    np.testing.assert_allclose(
        jaxloss.accuracy(jnp.asarray(x), jnp.asarray(y), k=k), want.mean(), rtol=1e-6
    )


def test_tie_rule_explicitly():
    x = jnp.array([[1.0, 1.0, 0.0]] * 3)
    y = jnp.array([0, 1, 2])
    np.testing.assert_array_equal(jaxloss.accuracy(x, y, reduction="none"), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(jaxloss.accuracy(x, y, k=2, reduction="none"), [1.0, 1.0, 0.0])
    # An all-equal row (an untrained model) is not "all correct": only class 0 is a hit.
    flat = jnp.zeros((4, 4))
    np.testing.assert_array_equal(
        jaxloss.accuracy(flat, jnp.arange(4), reduction="none"), [1.0, 0.0, 0.0, 0.0]
    )


def test_matches_torch_topk_without_ties():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 11)).astype(np.float32)
    y = rng.integers(0, 11, size=64)
    for k in (1, 3, 5):
        top = torch.topk(torch.tensor(x), k, dim=-1).indices.numpy()
        want = np.mean(np.any(top == y[:, None], -1))
        np.testing.assert_allclose(jaxloss.accuracy(x, jnp.asarray(y), k=k), want, rtol=1e-6)


def test_nan_logits_and_out_of_range_labels_give_nan_infinities_rank():
    x = np.array([[0.0, 1.0, 2.0], [0.0, np.nan, 2.0], [np.inf, 1.0, np.inf], [-np.inf, 0, 1]])
    y = np.array([2, 2, 2, 0])
    out = np.asarray(jaxloss.accuracy(jnp.float32(x), jnp.asarray(y), reduction="none"))
    np.testing.assert_array_equal(out, [1.0, np.nan, 0.0, 0.0])
    assert np.isnan(jaxloss.accuracy(jnp.float32(x), jnp.asarray(y)))
    np.testing.assert_array_equal(
        jaxloss.accuracy(jnp.float32(x), jnp.array([2, 2, 0, 0]), k=2, reduction="none"),
        [1.0, np.nan, 1.0, 0.0],
    )
    for label in (3, -1, 1000):
        out = jaxloss.accuracy(jnp.zeros((2, 3)), jnp.array([0, label]), reduction="none")
        assert out[0] == 1.0 and np.isnan(out[1])
    # The losses agree: the same rows are NaN.
    ce = jaxloss.cross_entropy(jnp.float32(x[:2]), jnp.asarray(y[:2]))
    assert np.isfinite(ce[0]) and np.isnan(ce[1])


def test_nan_rows_stay_nan_at_large_vocabularies():
    # Regression: the rank and the NaN count were one int32 sum with each NaN weighted K + 1,
    # which overflows from K = 46341 (the first K failing): an all-NaN row scored 1.0 at top-5.
    num_classes = 46341
    x = jnp.zeros((3, num_classes)).at[0].set(jnp.nan).at[1, : num_classes // 2].set(jnp.nan)
    y = jnp.array([0, 3, 2])  # row 2 (all ties): rank 2, a top-5 hit, a top-1 miss
    mask = jnp.ones((1, num_classes), bool).at[0, -1].set(False)
    for kw in ({"k": 5}, {"where": mask}, {"k": 5, "where": mask}):
        out = jaxloss.accuracy(x, y, reduction="none", **kw)
        assert np.isnan(out[0]) and np.isnan(out[1]) and out[2] == (kw.get("k", 1) == 5), kw


def test_narrow_labels_are_widened():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 200)), jnp.float32)
    y32 = jnp.array([5, 127, -1, 100], jnp.int32)
    got = jaxloss.accuracy(x, y32.astype(jnp.int8), k=50, reduction="none")
    want = jaxloss.accuracy(x, y32, k=50, reduction="none")
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[2])


def test_counts_agree_with_cross_entropy():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(B, K)), jnp.float32)
    y = rng.integers(0, K, size=B)
    y[[1, 5]] = -100
    y = jnp.asarray(y)
    example = jnp.asarray(rng.random(B) < 0.7)
    classes = rng.random((B, K)) < 0.6
    classes[3] = False  # a row with nothing left: neither counts it
    classes[np.arange(B), np.where(np.asarray(y) >= 0, np.asarray(y), 0)] |= np.arange(B) != 3
    classes = jnp.asarray(classes)
    for where in (None, example, classes):
        kw = dict(where=where, ignore_index=-100, reduction="sum_and_count")
        _, n_acc = jaxloss.accuracy(x, y, **kw)
        _, n_ce = jaxloss.cross_entropy(x, y, **kw)
        assert float(n_acc) == float(n_ce)
        mean = jaxloss.accuracy(x, y, where=where, ignore_index=-100)
        per = jaxloss.accuracy(x, y, where=where, ignore_index=-100, reduction="none")
        np.testing.assert_allclose(mean, float(jnp.sum(per)) / float(n_ce), rtol=1e-6)
    assert float(jaxloss.accuracy(x, y, where=example, ignore_index=-100, reduction="sum_and_count")
                 [1]) == float(jnp.sum(example & (y != -100)))  # fmt: skip


def test_masked_examples_and_classes():
    x = jnp.array([[3.0, 1.0, 0.0], [jnp.nan, 1.0, 0.0], [3.0, 1.0, 0.0]])
    y = jnp.array([1, 0, 0])
    keep = jnp.array([True, False, True])
    out = jaxloss.accuracy(x, y, where=keep, reduction="none")
    np.testing.assert_array_equal(out, [0.0, 0.0, 1.0])  # the NaN row is not counted
    assert float(jaxloss.accuracy(x, y, where=keep)) == 0.5
    # Masking the top class promotes the next one; a masked NaN is ignored; a label whose own
    # class is masked out is never a hit (cross_entropy gives it +inf).
    cls = jnp.array([[False, True, True], [False, True, True], [False, True, True]])
    out = jaxloss.accuracy(x, y, where=cls, reduction="none")
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.0])
    assert jaxloss.cross_entropy(x, y, where=cls)[2] == np.inf
    # Nothing counted: the mean is 0, as the losses' is.
    none = jnp.zeros(3, bool)
    assert float(jaxloss.accuracy(x, y, where=none)) == 0.0


def test_reductions_grad_jit_vmap_and_axes():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(3, 4, K)), jnp.float32)
    y = jnp.asarray(rng.integers(0, K, size=(3, 4)))
    per = jaxloss.accuracy(x, y, k=2, reduction="none")
    assert per.shape == (3, 4)
    assert float(jaxloss.accuracy(x, y, k=2, reduction="sum")) == float(jnp.sum(per))
    total, count = jaxloss.accuracy(x, y, k=2, reduction="sum_and_count")
    assert float(count) == 12.0 and float(total) == float(jnp.sum(per))
    f = lambda a: jaxloss.accuracy(a, y, k=2)  # noqa: E731
    np.testing.assert_array_equal(jax.grad(f)(x), np.zeros(x.shape))
    np.testing.assert_array_equal(jax.jit(f)(x), f(x))
    per_v = jax.vmap(lambda a, b: jaxloss.accuracy(a, b, k=2, reduction="none"))(x, y)
    np.testing.assert_array_equal(per_v, per)
    _, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
    assert float(tangent) == 0.0
    moved = jaxloss.accuracy(jnp.moveaxis(x, -1, 0), y, axis=0, k=2, reduction="none")
    np.testing.assert_array_equal(moved, per)
    # Two class axes: the label indexes the flattened slice.
    flat = jaxloss.accuracy(x.reshape(3, 4, 1, K), y, axis=(2, 3), k=2, reduction="none")
    np.testing.assert_array_equal(flat, per)
    bf = jaxloss.accuracy(x.astype(jnp.bfloat16), y, reduction="none")
    assert bf.dtype == jnp.float32
    with jax.enable_x64(True):
        assert jaxloss.accuracy(jnp.asarray(np.asarray(x), jnp.float64), y).dtype == jnp.float64


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"k": 0}, ValueError, r"accuracy: `k` must be an int in \[1, 5\]"),
        ({"k": 6}, ValueError, r"accuracy: `k` must be an int in \[1, 5\].*got 6"),
        ({"k": 1.5}, TypeError, r"accuracy: `k` must be an int, got 1.5"),
        ({"k": True}, TypeError, r"accuracy: `k` must be an int, got True"),
        ({"reduction": "avg"}, ValueError, "unknown `reduction`='avg'"),
        ({"where": jnp.ones((3,), bool)}, ValueError, r"`where` with shape \(3,\)"),
    ],
)
def test_accuracy_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        jaxloss.accuracy(jnp.zeros((4, 5)), jnp.zeros((4,), jnp.int32), **kwargs)


def test_accuracy_bad_inputs():
    with pytest.raises(TypeError, match=r"accuracy: `labels` must be integer.*float32"):
        jaxloss.accuracy(jnp.zeros((4, 5)), jnp.zeros((4,)))
    # One-hot labels: the fix is argmax, not a loss.
    one_hot = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 5)
    with pytest.raises(TypeError, match=r"one-hot\? pass class indices, `jnp.argmax\(labels") as e:
        jaxloss.accuracy(jnp.zeros((4, 5)), one_hot)
    assert "softmax_cross_entropy" not in str(e.value)
    with pytest.raises(ValueError, match=r"one-hot\? pass `jnp.argmax\(labels, axis=-1\)`") as e:
        jaxloss.accuracy(jnp.zeros((4, 5)), one_hot.astype(jnp.int32))
    assert "softmax_cross_entropy" not in str(e.value)
    with pytest.raises(TypeError, match=r"accuracy: `logits` must have a floating dtype"):
        jaxloss.accuracy(jnp.zeros((4, 5), jnp.int32), jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match=r"accuracy: `labels`.*expected \(4,\).*got \(4, 1\)"):
        jaxloss.accuracy(jnp.zeros((4, 5)), jnp.zeros((4, 1), jnp.int32))


# --- perplexity --------------------------------------------------------------------------------


def _lm_batch(seed, n=24, v=13, ignored=()):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, v)) * 2, jnp.float32)
    y = rng.integers(0, v, size=n)
    y[list(ignored)] = -100
    return x, jnp.asarray(y)


def test_perplexity_is_exp_of_the_mean_bit_for_bit_and_matches_torch():
    x, y = _lm_batch(0, ignored=(2, 3, 9))
    pair = jaxloss.cross_entropy(x, y, ignore_index=-100, reduction="sum_and_count")
    mean = jaxloss.cross_entropy(x, y, ignore_index=-100, reduction="mean")
    assert float(jaxloss.perplexity(*pair)) == float(jnp.exp(mean))
    want = torch.exp(
        torch.nn.functional.cross_entropy(
            torch.tensor(np.asarray(x), dtype=torch.float64),
            torch.tensor(np.asarray(y), dtype=torch.long),
            ignore_index=-100,
        )
    ).item()
    np.testing.assert_allclose(jaxloss.perplexity(*pair), want, rtol=1e-6)


def test_accumulated_pairs_give_the_whole_batch_perplexity_and_mean_of_means_does_not():
    x, y = _lm_batch(1, n=24, ignored=(0, 1, 2, 3, 4, 5, 6, 13))  # micro-batch 1 mostly ignored
    whole = jaxloss.perplexity(
        *jaxloss.cross_entropy(x, y, ignore_index=-100, reduction="sum_and_count")
    )
    total, count = jnp.float32(0), jnp.float32(0)
    means = []
    for i in range(0, 24, 8):
        s, n = jaxloss.cross_entropy(
            x[i : i + 8], y[i : i + 8], ignore_index=-100, reduction="sum_and_count"
        )
        total, count = total + s, count + n
        means.append(jaxloss.cross_entropy(x[i : i + 8], y[i : i + 8], ignore_index=-100,
                                           reduction="mean"))  # fmt: skip
    assert float(count) == 16.0
    np.testing.assert_allclose(jaxloss.perplexity(total, count), whole, rtol=1e-6)
    # The counts differ (1, 7, 8), so the mean of the micro-batch means is not the mean.
    wrong = jnp.exp(jnp.mean(jnp.stack(means)))
    assert abs(float(wrong) / float(whole) - 1) > 1e-2


def test_perplexity_edges():
    assert np.isnan(jaxloss.perplexity(0.0, 0))
    assert np.isnan(jaxloss.perplexity(jnp.nan, 3.0))
    assert np.isnan(jaxloss.perplexity(1.0, jnp.nan))
    assert jaxloss.perplexity(jnp.inf, 3.0) == np.inf
    assert float(jaxloss.perplexity(0.0, 5)) == 1.0
    # Nothing counted (all ignored): NaN, with gradient 0, not NaN.
    x, _ = _lm_batch(2, n=4)
    y = jnp.full((4,), -100)
    f = lambda a: jaxloss.perplexity(  # noqa: E731
        *jaxloss.cross_entropy(a, y, ignore_index=-100, reduction="sum_and_count")
    )
    v, g = jax.value_and_grad(f)(x)
    assert np.isnan(v) and np.all(np.asarray(g) == 0)
    # Differentiable elsewhere: d PPL / d S = PPL / N.
    d = jax.grad(jaxloss.perplexity)(jnp.float32(6.0), jnp.float32(4.0))
    np.testing.assert_allclose(d, np.exp(1.5) / 4, rtol=1e-6)
    # Vectorised: per-sequence perplexities, a count per sequence.
    out = jaxloss.perplexity(jnp.array([2.0, 0.0, 3.0]), jnp.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(out, [np.e, np.nan, np.e**3], rtol=1e-6)
    assert jaxloss.perplexity(jnp.float32(1.0), 2).dtype == jnp.float32
    assert jaxloss.perplexity(jnp.bfloat16(1.0), jnp.bfloat16(2.0)).dtype == jnp.float32


def test_perplexity_bad_arguments():
    with pytest.raises(
        ValueError,
        match=r"perplexity: `loss_sum` with shape \(3,\) and `count` "
        r"with shape \(2,\) do not broadcast",
    ):
        jaxloss.perplexity(jnp.zeros(3), jnp.ones(2))  # fmt: skip
    with pytest.raises(TypeError, match=r"perplexity: `count` must be a number.*bool"):
        jaxloss.perplexity(1.0, True)
