"""The options core: one semantics for every integer-label loss (issue 11, part 1).

Class weights are differentiable (checked against float64 autodiff of the plain formula), the
mean is Σ/count whenever an example is kept, scalar options are checked, labels of any integer
dtype are compared without wrapping, `check_labels` works at any rank and under vmap/scan, and
one `where` rule holds for every function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxloss

K = 5
RNG = np.random.default_rng(11)
X = jnp.asarray(RNG.normal(size=(6, K)) * 2, jnp.float32)
Y = jnp.array([0, 3, 1, 4, 2, 3])
W = jnp.array([0.5, 2.0, 1.0, 0.0, 3.0])


def _ce64(x, y, w, eps=0.0, zl=0.0):
    """Plain float64 formula (PyTorch's), per example."""
    x = jnp.asarray(x, jnp.float64)
    lse = jax.scipy.special.logsumexp(x, axis=-1)
    nll = lse[:, None] - x
    k = x.shape[-1]
    label = jnp.take_along_axis(nll, y[:, None], -1)[:, 0] * w[y]
    smooth = jnp.sum(w[None, :] * nll, -1) / k
    return (1 - eps) * label + eps * smooth + zl * lse**2


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_class_weights_gradient_matches_float64_autodiff(eps, reduction):
    with jax.enable_x64():
        x64 = jnp.asarray(X, jnp.float64)
        w64 = jnp.asarray(W, jnp.float64)

        def ref(w):
            per = _ce64(x64, Y, w, eps)
            return jnp.sum(per) / jnp.sum(w[Y]) if reduction == "mean" else jnp.sum(per)

        def ours(w):
            out = jaxloss.cross_entropy(
                x64, Y, class_weights=w, label_smoothing=eps, reduction=reduction
            )
            return out if reduction == "mean" else jnp.sum(out)

        g_ref = jax.grad(ref)(w64)
        g = jax.grad(ours)(w64)
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
        assert np.any(np.abs(g) > 1e-3)  # not silently zero
        # Forward mode agrees with reverse mode.
        t = jnp.linspace(-1.0, 1.0, K)
        _, jvp = jax.jvp(ours, (w64,), (t,))
        np.testing.assert_allclose(jvp, g_ref @ t, rtol=1e-10, atol=1e-12)


def test_nll_loss_class_weights_differentiable():
    lq = jax.nn.log_softmax(X)
    g = jax.grad(lambda w: jaxloss.nll_loss(lq, Y, class_weights=w, reduction="sum"))(W)
    expected = np.zeros(K)
    np.add.at(
        expected,
        np.asarray(Y),
        -np.take_along_axis(np.asarray(lq), np.asarray(Y)[:, None], 1)[:, 0],
    )
    np.testing.assert_allclose(g, expected, rtol=1e-6)


@pytest.mark.parametrize("weights", [[1, 2, 3, 1, 1], [1.0, 2.0, 3.0, 1.0, 1.0]])
def test_class_weights_lists_and_integers(weights):
    out = jaxloss.cross_entropy(X, Y, class_weights=weights)
    ref = jaxloss.cross_entropy(X, Y, class_weights=jnp.asarray(weights, jnp.float32))
    np.testing.assert_allclose(out, ref)


def test_mean_with_negative_weight_sum_is_sum_over_count_as_torch():
    w = np.array([1.0, -6.0, 0.5, 1.0, 1.0], np.float32)
    ours = jaxloss.cross_entropy(X, Y, class_weights=w, reduction="mean")
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(np.asarray(X)), torch.tensor(np.asarray(Y)).long(), weight=torch.tensor(w)
    )
    assert float(np.sum(w[np.asarray(Y)])) < 0
    np.testing.assert_allclose(ours, ref.item(), rtol=1e-5)


def test_mean_is_nan_for_nan_weight_and_for_bad_label_with_zero_weight():
    w = W.at[1].set(jnp.nan)
    assert np.isnan(jaxloss.cross_entropy(X, Y, class_weights=w, reduction="mean"))
    y = Y.at[0].set(9)  # out of range; class 0's weight set to 0 below
    w0 = W.at[0].set(0.0)
    assert np.isnan(jaxloss.cross_entropy(X, y, class_weights=w0, reduction="mean"))
    assert np.isnan(jaxloss.nll_loss(jax.nn.log_softmax(X), y, reduction="mean"))


def test_mean_with_nothing_kept_is_zero_with_zero_gradient():
    keep = jnp.zeros(Y.shape, bool)
    f = lambda x: jaxloss.cross_entropy(x, Y, where=keep, reduction="mean")  # noqa: E731
    assert f(X) == 0
    assert np.all(jax.grad(f)(X) == 0)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, keep, r: jaxloss.kl_divergence(
            jax.nn.log_softmax(x), jax.nn.softmax(-x), where=keep, reduction=r
        ),
        lambda x, keep, r: jaxloss.kl_divergence_with_log_targets(
            jax.nn.log_softmax(x), jax.nn.log_softmax(-x), where=keep, reduction=r
        ),
        lambda x, keep, r: jaxloss.entropy(jax.nn.softmax(x), where=keep, reduction=r),
        lambda x, keep, r: jaxloss.softmax_entropy(x, where=keep, reduction=r),
        lambda x, keep, r: jaxloss.softmax_cross_entropy(
            x, jax.nn.softmax(-x), where=keep, reduction=r
        ),
    ],
)
def test_reduction_mean_counts_only_kept_rows(fn):
    keep = jnp.array([True, False, True, True, False, True])
    per = fn(X, keep, "none")
    mean = fn(X, keep, "mean")
    np.testing.assert_allclose(mean, np.sum(per) / 4, rtol=1e-6)
    total, count = fn(X, keep, "sum_and_count")
    assert count == 4
    np.testing.assert_allclose(total, np.sum(per), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"z_loss": -1.0}, "`z_loss` must be a finite number in \\[0, inf\\)"),
        ({"z_loss": float("inf")}, "`z_loss`"),
        ({"z_loss": float("nan")}, "`z_loss`"),
        ({"label_smoothing": float("nan")}, "`label_smoothing`"),
        ({"logit_softcap": float("nan")}, "`logit_softcap`"),
        ({"logit_softcap": -2.0}, "`logit_softcap`"),
    ],
)
@pytest.mark.parametrize("which", ["cross_entropy", "linear_cross_entropy"])
def test_bad_scalar_options_rejected_everywhere(kwargs, message, which):
    with pytest.raises(ValueError, match=f"{which}: {message}"):
        if which == "cross_entropy":
            jaxloss.cross_entropy(X, Y, **kwargs)
        else:
            jaxloss.linear_cross_entropy(X, jnp.eye(K), Y, **kwargs)


def test_infinite_softcap_means_no_cap():
    np.testing.assert_allclose(
        jaxloss.cross_entropy(X, Y, logit_softcap=float("inf")), jaxloss.cross_entropy(X, Y)
    )
    np.testing.assert_allclose(
        jaxloss.linear_cross_entropy(X, jnp.eye(K), Y, logit_softcap=float("inf")),
        jaxloss.cross_entropy(X, Y),
        rtol=1e-6,
    )


def test_full_smoothing_with_masked_label_class_is_finite():
    mask = jnp.ones(X.shape, bool).at[:, 0].set(False)
    y = jnp.zeros(Y.shape, Y.dtype)  # every label in the masked class
    loss = jaxloss.cross_entropy(X, y, where=mask, label_smoothing=1.0)
    ref = jnp.mean(jax.nn.logsumexp(X[:, 1:], -1, keepdims=True) - X[:, 1:], -1)
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, y, where=mask, label_smoothing=1.0)))(X)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.uint8, jnp.int16, jnp.uint16, jnp.uint32])
def test_narrow_label_dtypes_do_not_wrap(dtype):
    k = 1000 if dtype != jnp.int8 else 200
    x = jnp.asarray(RNG.normal(size=(3, k)), jnp.float32)
    top = min(int(jnp.iinfo(dtype).max), k - 1)
    y = jnp.array([0, top, 5]).astype(dtype)
    out = jaxloss.cross_entropy(x, y, check_labels=True)
    ref = jaxloss.cross_entropy(x, y.astype(jnp.int32))
    np.testing.assert_allclose(out, ref)
    assert np.all(np.isfinite(out))


def test_check_labels_for_a_scalar_label_and_under_vmap():
    with pytest.raises(ValueError, match=r"cross_entropy: label 9 at position \(\) is outside"):
        jaxloss.cross_entropy(jnp.zeros(5), jnp.array(9), check_labels=True)
    y = jnp.array([[0, 1, 2], [3, 9, 0]])
    f = jax.vmap(jax.vmap(lambda x, y: jaxloss.cross_entropy(x, y, check_labels=True)))
    x = jnp.zeros((2, 3, 5))
    with pytest.raises(Exception, match=r"label 9 at position \(1, 1\) is outside \[0, 5\)"):
        jax.block_until_ready(jax.jit(f)(x, y))
    np.testing.assert_allclose(jax.jit(f)(x, y % 5), np.log(5.0), rtol=1e-6)


def test_check_labels_under_scan():
    def body(c, xy):
        x, y = xy
        return c + jnp.sum(jaxloss.cross_entropy(x, y, check_labels=True)), None

    xs = jnp.zeros((4, 2, 5))
    ys = jnp.zeros((4, 2), jnp.int32).at[2, 1].set(-1)
    with pytest.raises(Exception, match=r"label -1 at position \(1,\)"):
        jax.block_until_ready(jax.lax.scan(body, 0.0, (xs, ys))[0])


def test_check_labels_names_the_function_called_and_suggests_ignore_index():
    y = Y.at[1].set(-100)
    with pytest.raises(
        ValueError,
        match=r"softmax_cross_entropy_with_integer_labels: label -100 .*ignore_index=-100",
    ):
        jaxloss.softmax_cross_entropy_with_integer_labels(X, y, check_labels=True)
    # With ignore_index=-100 given, -100 is fine; no hint for other values.
    jaxloss.cross_entropy(X, y, ignore_index=-100, check_labels=True)
    with pytest.raises(ValueError) as info:
        jaxloss.nll_loss(X, Y.at[1].set(7), check_labels=True)
    assert str(info.value).startswith("nll_loss: label 7") and "ignore_index" not in str(info.value)


def test_check_labels_is_the_first_line_on_stderr_under_jit(capfd):
    f = jax.jit(lambda x, y: jaxloss.cross_entropy(x, y, check_labels=True))
    with pytest.raises(Exception, match="label 7"):
        jax.block_until_ready(f(X, Y.at[0].set(7)))
    err = capfd.readouterr().err
    assert err.startswith("jaxloss: cross_entropy: label 7 at position (0,)"), err[:300]
    assert "Traceback" not in err  # JAX's own log of the failed callback is filtered


def test_check_labels_cannot_be_exported():
    f = jax.jit(lambda x, y: jaxloss.cross_entropy(x, y, check_labels=True))
    with pytest.raises(Exception, match=r"(?i)callback|custom call"):
        jax.export.export(f)(X, Y)


def test_errors_name_the_function_the_user_called():
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy_with_integer_labels: `labels`"):
        jaxloss.softmax_cross_entropy_with_integer_labels(X, jnp.zeros(6))


def test_optax_parity_integer_one_hot_and_broadcast_targets():
    onehot = jax.nn.one_hot(Y, K, dtype=jnp.int32)
    np.testing.assert_allclose(
        jaxloss.softmax_cross_entropy(X, onehot),
        optax.losses.softmax_cross_entropy(X, onehot),
        rtol=1e-6,
    )
    prior = jnp.array([0.1, 0.2, 0.3, 0.2, 0.2])
    lq = jax.nn.log_softmax(X)
    np.testing.assert_allclose(
        jaxloss.kl_divergence(lq, prior),
        optax.losses.kl_divergence(lq, jnp.broadcast_to(prior, lq.shape)),
        rtol=1e-5,
    )
    with pytest.raises(TypeError, match="softmax_cross_entropy_with_integer_labels"):
        jaxloss.softmax_cross_entropy(X, Y)


def test_one_where_rule_for_an_ambiguous_square_mask():
    x = jnp.asarray(RNG.normal(size=(K, K)), jnp.float32)
    keep = jnp.array([True, False, True, True, False])
    # Lower rank: an example (row) mask, for every function.
    lse = jaxloss.logsumexp(x, where=keep)
    assert np.all(np.isneginf(lse[~np.asarray(keep)]))
    np.testing.assert_allclose(
        lse[np.asarray(keep)], jax.nn.logsumexp(x[np.asarray(keep)], -1), rtol=1e-6
    )
    h = jaxloss.softmax_entropy(x, where=keep)
    assert np.all(h[~np.asarray(keep)] == 0) and np.all(h[np.asarray(keep)] > 0)
    ce = jaxloss.cross_entropy(x, jnp.arange(K), where=keep)
    assert np.all(ce[~np.asarray(keep)] == 0)
    # The input's rank: entries (here classes, through [1, K]).
    cls = keep[None, :]
    np.testing.assert_allclose(
        jaxloss.logsumexp(x, where=cls), jax.nn.logsumexp(x, -1, where=cls), rtol=1e-6
    )
    # [K] on [B, K] with B != K cannot mask examples: the error says how to mask classes.
    with pytest.raises(ValueError, match=r"where\[None, :\]"):
        jaxloss.logsumexp(x[:3], where=keep)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0])
@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_linear_cross_entropy_numerics_match_cross_entropy(scale, offset, eps):
    """With weight = I the fused loss sees the logits themselves: it must be as exact as
    cross_entropy (shift-free smoothing, the label kept out of the row's sum)."""
    x = jnp.asarray(RNG.normal(size=(6, K)) * scale + offset, jnp.float32)
    w = jnp.array([1.0, 2.0, 0.5, 1.0, 3.0])
    with jax.enable_x64():
        x64 = jnp.asarray(x, jnp.float64)
        ref = _ce64(x64, Y, jnp.asarray(w, jnp.float64), eps)
        g_ref = jax.grad(lambda x: jnp.sum(_ce64(x, Y, jnp.asarray(w, jnp.float64), eps)))(x64)
    f = lambda x: jaxloss.linear_cross_entropy(  # noqa: E731
        x, jnp.eye(K), Y, class_weights=w, label_smoothing=eps, reduction="sum"
    )
    per = jaxloss.linear_cross_entropy(x, jnp.eye(K), Y, class_weights=w, label_smoothing=eps)
    tol = 2e-6 * (1 + np.abs(np.asarray(ref)))
    assert np.all(np.abs(np.asarray(per) - np.asarray(ref)) <= tol), (per, ref)
    np.testing.assert_allclose(jax.grad(f)(x), g_ref, rtol=2e-5, atol=1e-6)


def test_linear_cross_entropy_confident_row_true_class_gradient():
    # p_y = 1 − 1e-6: the label's gradient p_y − 1 = −1e-6 to f32 rounding, not 0 or −1.19e-6.
    gap = float(np.log((K - 1) / 1e-6))
    x = jnp.zeros((1, K)).at[0, 2].set(gap)
    y = jnp.array([2])
    g = jax.grad(lambda x: jnp.sum(jaxloss.linear_cross_entropy(x, jnp.eye(K), y)))(x)
    g_ce = jax.grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, y)))(x)
    np.testing.assert_allclose(g[0, 2], -1e-6, rtol=1e-5)
    np.testing.assert_allclose(g, g_ce, rtol=1e-5, atol=1e-12)
    loss = jaxloss.linear_cross_entropy(x, jnp.eye(K), y)
    np.testing.assert_allclose(loss, 1e-6, rtol=1e-5)  # log1p(1e-6), not lse − x_y = 0


def test_scalar_options_must_be_numbers_not_strings():
    with pytest.raises(TypeError, match="cross_entropy: `label_smoothing` must be a number"):
        jaxloss.cross_entropy(X, Y, label_smoothing="0.1")
    with pytest.raises(TypeError, match="softmax_kl_divergence: `temperature` must be a number"):
        jaxloss.softmax_kl_divergence(X, X, temperature="2")


# ---------------------------------------------------------------------------------------------
# Issue 20, item 5: soft-target options, per-example `weights=`, `axis=None`.


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_soft_target_smoothing_and_class_weights_match_torch(reduction):
    """PyTorch's probability-target formula, ``−Σ_k w_k·((1 − ε)·t_k + ε/K)·log p_k``, and its
    ``"mean"``, which divides by the number of examples (not by Σ w as with class indices);
    values and gradients (logits, targets, class weights), float64, class axis 1."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3, 5))
    t = rng.dirichlet(np.ones(3), size=(4, 5)).transpose(0, 2, 1)
    w = np.array([0.5, 2.0, 1.0])
    xt, tt, wt = (torch.tensor(a, requires_grad=True) for a in (x, t, w))
    ref = torch.nn.functional.cross_entropy(
        xt, tt, weight=wt, label_smoothing=0.2, reduction=reduction
    )
    ref.sum().backward()
    with jax.enable_x64():

        def ours(x, t, w):
            return jaxloss.softmax_cross_entropy(
                x, t, axis=1, class_weights=w, label_smoothing=0.2, reduction=reduction
            )

        out = ours(*(jnp.asarray(a) for a in (x, t, w)))
        grads = jax.grad(lambda *a: jnp.sum(ours(*a)), argnums=(0, 1, 2))(x, t, w)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12)
    for g, a in zip(grads, (xt, tt, wt), strict=True):
        np.testing.assert_allclose(g, a.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_soft_target_smoothing_counts_the_classes_where_leaves_in():
    x = X[:2]
    t = jax.nn.one_hot(jnp.array([0, 2]), K)
    keep = jnp.array([True, True, True, False, True])
    out = jaxloss.softmax_cross_entropy(x, t, where=keep[None, :], label_smoothing=0.2)
    ref = jaxloss.softmax_cross_entropy(x[:, keep], 0.8 * t[:, keep] + 0.2 / 4)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    # The smoothed integer-label loss is the same number.
    np.testing.assert_allclose(
        out, jaxloss.cross_entropy(x, jnp.array([0, 2]), where=keep[None, :],
                                   label_smoothing=0.2), rtol=1e-6)  # fmt: skip


B2 = jnp.asarray(RNG.normal(size=(6,)), jnp.float32)
T2 = jax.nn.softmax(jnp.asarray(RNG.normal(size=(6, K)), jnp.float32))
LOG_T2 = jnp.log(T2)
BIN_T = jnp.array([0.0, 1.0, 1.0, 0.0, 0.3, 1.0])

# Every loss that reduces: (function, its arrays, options). Each has one loss per row of 6.
WEIGHTED = [
    (jaxloss.cross_entropy, (X, Y), {}),
    (jaxloss.cross_entropy, (X, Y), {"class_weights": W, "label_smoothing": 0.1}),
    (jaxloss.nll_loss, (jax.nn.log_softmax(X), Y), {"class_weights": W}),
    (jaxloss.softmax_cross_entropy, (X, T2), {}),
    (jaxloss.softmax_cross_entropy, (X, T2), {"class_weights": W, "label_smoothing": 0.1}),
    (jaxloss.poly_loss_cross_entropy, (X, T2), {}),
    (jaxloss.softmax_focal_loss, (X, Y), {"alpha": 0.25}),
    (jaxloss.softmax_kl_divergence, (X, 2 * X), {"beta": 0.5}),
    (jaxloss.kl_divergence, (LOG_T2, jax.nn.softmax(X)), {}),
    (jaxloss.kl_divergence_with_log_targets, (LOG_T2, jax.nn.log_softmax(X)), {}),
    (jaxloss.entropy, (T2,), {}),
    (jaxloss.softmax_entropy, (X,), {}),
    (jaxloss.sigmoid_binary_cross_entropy, (B2, BIN_T), {}),
    (jaxloss.binary_cross_entropy_with_logits, (B2, BIN_T), {"weight": jnp.full(6, 2.0)}),
    (jaxloss.sigmoid_focal_loss, (B2, BIN_T), {"gamma": 1.5}),
]
WEIGHTED_IDS = [f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(WEIGHTED)]


@pytest.mark.parametrize(("fn", "args", "options"), WEIGHTED, ids=WEIGHTED_IDS)
def test_per_example_weights_give_the_weighted_mean(fn, args, options):
    """``weights=s``: per-example ``s·ℓ``; ``"mean"`` = Σ s·ℓ·c / Σ s·c over the kept examples,
    with c each example's own count weight (its label's class weight for the integer-label
    losses, as their unweighted mean); ``"sum_and_count"`` returns that denominator; weight 0
    adds 0 even to an infinite loss."""
    s = jnp.array([1.0, 0.0, 2.0, 0.5, 3.0, 1.5])
    keep = jnp.array([True, True, True, True, False, True])
    per = fn(*args, where=keep, **options)
    _, count = fn(*args, where=keep, reduction="sum_and_count", **options)
    n_kept = int(np.sum(keep))
    c = (  # the count weight of each kept example, from the unweighted reduction
        np.asarray(W)[np.asarray(Y)] * keep if float(count) != n_kept else np.asarray(keep, float)
    )
    np.testing.assert_allclose(fn(*args, where=keep, weights=s, **options), s * per, rtol=1e-6)
    total, n = fn(*args, where=keep, weights=s, reduction="sum_and_count", **options)
    np.testing.assert_allclose(total, np.sum(s * per), rtol=1e-6)
    np.testing.assert_allclose(n, np.sum(s * c), rtol=1e-6)
    mean = fn(*args, where=keep, weights=s, reduction="mean", **options)
    np.testing.assert_allclose(mean, np.sum(s * per) / np.sum(s * c), rtol=1e-6)


def test_per_example_weights_gradient_matches_float64_autodiff_and_zero_weight_drops_inf():
    """d mean/d s and d mean/d x against autodiff of ``Σ s·ℓ / Σ s`` in float64; an example of
    weight 0 whose loss is +inf (its label's logit is −inf) adds 0."""
    with jax.enable_x64():
        x = jnp.asarray(X, jnp.float64)
        s = jnp.array([1.0, 0.5, 2.0, 0.5, 3.0, 1.5])

        def ours(x, s):
            return jaxloss.cross_entropy(x, Y, weights=s, reduction="mean")

        def ref(x, s):
            return jnp.sum(s * _ce64(x, Y, jnp.ones(K))) / jnp.sum(s)

        g = jax.grad(ours, argnums=(0, 1))(x, s)
        g_ref = jax.grad(ref, argnums=(0, 1))(x, s)
        for a, b in zip(g, g_ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    x_inf = X.at[1, Y[1]].set(-jnp.inf)
    s0 = jnp.array([1.0, 0.0, 2.0, 0.5, 3.0, 1.5])
    out = jaxloss.cross_entropy(x_inf, Y, weights=s0, reduction="mean")
    ref = np.sum(s0 * jaxloss.cross_entropy(X, Y)) / np.sum(s0)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


@pytest.mark.parametrize(("fn", "args", "options"), WEIGHTED[::2], ids=WEIGHTED_IDS[::2])
def test_weights_of_the_wrong_shape_name_the_argument_and_the_shapes(fn, args, options):
    with pytest.raises(ValueError, match=rf"{fn.__name__}: `weights` with shape \(5,\) must have "
                       r"the per-example loss's shape \(6,\)"):  # fmt: skip
        fn(*args, weights=jnp.ones(5), **options)
    with pytest.raises(TypeError, match=rf"{fn.__name__}: `weights` must be a real number array"):
        fn(*args, weights=jnp.ones(6, jnp.complex64), **options)


def test_axis_none_as_optax():
    """``axis=None`` takes every axis as the class axis (one value), as Optax's
    `softmax_cross_entropy`, `poly_loss_cross_entropy`, `kl_divergence`,
    `kl_divergence_with_log_targets` and `smooth_labels` do."""
    t = jax.nn.softmax(jnp.asarray(RNG.normal(size=(6, K)), jnp.float32), axis=None)
    pairs = [
        (jaxloss.softmax_cross_entropy(X, t, axis=None),
         optax.softmax_cross_entropy(X, t, axis=None)),
        (jaxloss.poly_loss_cross_entropy(X, t, axis=None),
         optax.losses.poly_loss_cross_entropy(X, t, axis=None)),
        (jaxloss.kl_divergence(jnp.log(t + 0.01), t, axis=None),
         optax.losses.kl_divergence(jnp.log(t + 0.01), t, axis=None)),
        (jaxloss.kl_divergence_with_log_targets(LOG_T2, jnp.log(t), axis=None),
         optax.losses.kl_divergence_with_log_targets(LOG_T2, jnp.log(t), axis=None)),
        (jaxloss.smooth_labels(t, 0.1, axis=None), optax.losses.smooth_labels(t, 0.1, axis=None)),
    ]  # fmt: skip
    for ours, ref in pairs:
        assert np.shape(ours) == np.shape(ref)
        np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-7)
