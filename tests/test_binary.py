"""Binary and multi-label losses: Optax and PyTorch parity, float64 references for values and
gradients, the exact limits at |x| = 1e4 and ±inf, masks, reductions, dtypes and bad arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

# The public `print_saved_residuals` only prints; its data comes from this private helper.
from jax._src.ad_checkpoint import saved_residuals

import jaxloss

RNG = np.random.default_rng(2024)
B, K = 5, 4
BCE = jaxloss.sigmoid_binary_cross_entropy
BCEL = jaxloss.binary_cross_entropy_with_logits
FOCAL = jaxloss.sigmoid_focal_loss
GAMMAS = [0.0, 0.5, 1.0, 2.0, 2.5]


def _x(scale=3.0, shape=(B, K)):
    return jnp.asarray(RNG.normal(size=shape) * scale, jnp.float32)


def _soft(shape=(B, K)):
    return jnp.asarray(RNG.uniform(size=shape), jnp.float32)


def _hard(shape=(B, K)):
    return jnp.asarray(RNG.integers(0, 2, size=shape), jnp.float32)


def _grads(f, *args, argnums=0):
    return jax.grad(lambda *a: jnp.sum(f(*a)), argnums=argnums)(*args)


# --- float64 formulas, differentiated by autodiff: the oracle for values and gradients ---------


def naive_bce(x, t, w=1.0, pw=1.0):
    s = jax.nn.sigmoid(x)
    return -w * (pw * t * jnp.log(s) + (1 - t) * jnp.log(1 - s))


def naive_focal(x, t, alpha=None, gamma=2.0):
    s = jax.nn.sigmoid(x)
    m = (1 - t) * s + t * (1 - s)
    loss = m**gamma * naive_bce(x, t)
    return loss if alpha is None else (alpha * t + (1 - alpha) * (1 - t)) * loss


def stable_focal(x, t, gamma):
    """The focal formula with σ(−x) and softplus taken directly: float64 stays exact at |x| = 80,
    where 1 − σ(x) in `naive_focal` loses its digits even in float64."""
    m = (1 - t) * jax.nn.sigmoid(x) + t * jax.nn.sigmoid(-x)
    return m**gamma * (t * jax.nn.softplus(-x) + (1 - t) * jax.nn.softplus(x))


def _f64(*arrays):
    return [jnp.asarray(np.asarray(a), jnp.float64) for a in arrays]


def _check_against_naive(ours, naive, arrays, argnums, rtol=1e-5, atol=1e-6):
    """Values and gradients (w.r.t. `argnums`) in float32 against float64 autodiff."""
    ct = RNG.normal(size=np.shape(ours(*arrays)))
    got = ours(*arrays)
    g_got = jax.grad(lambda *a: jnp.sum(ours(*a) * ct), argnums=argnums)(*arrays)
    with jax.enable_x64(True):
        a64 = _f64(*arrays)
        want = naive(*a64)
        g_want = jax.grad(lambda *a: jnp.sum(naive(*a) * ct), argnums=argnums)(*a64)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
        for a, b in zip(g_got, g_want, strict=True):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
        # And in float64 under x64, to float64 precision.
        got64 = ours(*a64)
        assert got64.dtype == jnp.float64
        np.testing.assert_allclose(got64, want, rtol=1e-12, atol=1e-14)
        g64 = jax.grad(lambda *a: jnp.sum(ours(*a) * ct), argnums=argnums)(*a64)
        for a, b in zip(g64, g_want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_sigmoid_bce_against_float64(labels):
    t = _hard() if labels == "hard" else _soft()
    _check_against_naive(BCE, naive_bce, (_x(), t), (0, 1))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_bce_with_logits_against_float64(smoothing):
    x, t = _x(), _hard()
    w = jnp.asarray(RNG.uniform(0.5, 2, size=(B, K)), jnp.float32)
    pw = jnp.asarray(RNG.uniform(0.5, 4, size=(K,)), jnp.float32)

    def ours(x, t, w, pw):
        return BCEL(x, t, weight=w, pos_weight=pw, label_smoothing=smoothing)

    def naive(x, t, w, pw):
        return naive_bce(x, t * (1 - smoothing) + smoothing / 2, w, pw[None, :])

    _check_against_naive(ours, naive, (x, t, w, pw), (0, 1, 2, 3))


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_focal_against_float64(labels, gamma, alpha):
    x = _x()
    t = _hard() if labels == "hard" else _soft()

    def ours(x, t):
        return FOCAL(x, t, alpha=alpha, gamma=gamma)

    def naive(x, t):
        return naive_focal(x, t, alpha, gamma)

    _check_against_naive(ours, naive, (x, t), (0, 1))


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0, 2.5])
@pytest.mark.parametrize("x0", [30.0, 50.0, 80.0])
def test_focal_large_logits_in_float32(x0, gamma):
    # Where the plain formula loses everything (1 − σ(80) rounds to 0, even 1 − σ(30) keeps
    # three digits in float64), ours keeps float64's values and gradients to float32 precision.
    x = jnp.array([x0, -x0, x0, -x0], jnp.float32)
    t = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)
    _check_against_naive(
        lambda x, t: FOCAL(x, t, gamma=gamma), lambda x, t: stable_focal(x, t, gamma),
        (x, t), (0, 1), rtol=2e-5, atol=float(np.finfo(np.float32).tiny),
    )  # fmt: skip


def test_focal_gamma_zero_is_bce_exactly():
    x, t = _x(10.0), _soft()
    np.testing.assert_array_equal(FOCAL(x, t, gamma=0.0), BCE(x, t))
    np.testing.assert_array_equal(_grads(lambda x: FOCAL(x, t, gamma=0), x), _grads(BCE, x, t))
    a = FOCAL(x, t, gamma=0.0, alpha=0.3)
    np.testing.assert_allclose(a, (0.3 * t + 0.7 * (1 - t)) * BCE(x, t), rtol=1e-7)


# --- Optax and PyTorch parity ----------------------------------------------------------------


@pytest.mark.parametrize("labels", ["hard", "soft", "int", "broadcast"])
def test_sigmoid_bce_matches_optax(labels):
    x = _x()
    t = {
        "hard": _hard(),
        "soft": _soft(),
        "int": jnp.asarray(RNG.integers(0, 2, size=(B, K)), jnp.int32),
        "broadcast": _soft((1, K)),
    }[labels]
    np.testing.assert_allclose(BCE(x, t), optax.losses.sigmoid_binary_cross_entropy(x, t),
                               rtol=1e-6, atol=1e-7)  # fmt: skip
    assert BCE(x, t).shape == (B, K)
    np.testing.assert_allclose(
        _grads(BCE, x, t), _grads(optax.losses.sigmoid_binary_cross_entropy, x, t),
        rtol=1e-5, atol=1e-7,
    )  # fmt: skip
    if labels == "soft":
        np.testing.assert_allclose(
            _grads(BCE, x, t, argnums=1),
            _grads(optax.losses.sigmoid_binary_cross_entropy, x, t, argnums=1), rtol=1e-5,
        )  # fmt: skip


@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_focal_matches_optax(labels, gamma, alpha):
    x = _x()
    t = _hard() if labels == "hard" else _soft()

    def ours(x, t):
        return FOCAL(x, t, alpha=alpha, gamma=gamma)

    def theirs(x, t):
        return optax.losses.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)

    np.testing.assert_allclose(ours(x, t), theirs(x, t), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(_grads(ours, x, t), _grads(theirs, x, t), rtol=2e-5, atol=1e-7)
    if labels == "soft":  # at hard labels Optax drops a term (see the next test)
        g_ours, g_theirs = _grads(ours, x, t, argnums=1), _grads(theirs, x, t, argnums=1)
        np.testing.assert_allclose(g_ours, g_theirs, rtol=2e-5, atol=1e-6)


def test_focal_label_gradient_at_hard_labels_is_the_true_one():
    x, t = jnp.array([2.0, -1.0]), jnp.array([1.0, 0.0])
    with jax.enable_x64(True):
        want = _grads(lambda t: naive_focal(x, t), *_f64(t))
    got = _grads(lambda t: FOCAL(x, t), t)
    optax_g = _grads(lambda t: optax.losses.sigmoid_focal_loss(x, t), t)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(np.abs(np.asarray(optax_g) - np.asarray(want)) > 1e-2)


def _torch(x, t, **kw):
    kw = {k: torch.tensor(np.asarray(v)) if v is not None and k != "reduction" else v
          for k, v in kw.items()}  # fmt: skip
    return torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(np.asarray(x)), torch.tensor(np.asarray(t)), **kw
    )


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("options", ["plain", "weight", "pos_weight", "both"])
def test_bce_with_logits_matches_torch(options, reduction):
    x, t = _x(), _soft()
    w = jnp.asarray(RNG.uniform(0, 2, size=(B, 1)), jnp.float32)  # per example, broadcast
    pw = jnp.asarray(RNG.uniform(0.5, 4, size=(K,)), jnp.float32)
    kw = {
        "weight": w if options in ("weight", "both") else None,
        "pos_weight": pw if options in ("pos_weight", "both") else None,
    }
    ours = BCEL(x, t, reduction=reduction, **kw)
    np.testing.assert_allclose(ours, _torch(x, t, reduction=reduction, **kw).numpy(),
                               rtol=2e-6, atol=1e-6)  # fmt: skip
    # Gradients w.r.t. the logits through torch's autograd (its functional form does not
    # differentiate weight and pos_weight: theirs are checked against float64 above).
    tx = torch.tensor(np.asarray(x), requires_grad=True)
    kw_t = {k: None if v is None else torch.tensor(np.asarray(v)) for k, v in kw.items()}
    out = torch.nn.functional.binary_cross_entropy_with_logits(
        tx, torch.tensor(np.asarray(t)), reduction=reduction, **kw_t
    )
    out.sum().backward()
    gx = jax.grad(lambda x: jnp.sum(BCEL(x, t, reduction=reduction, **kw)))(x)
    # The gradient (pw·t + 1 − t)·σ(x) − pw·t cancels when it is small: in f32 both sides are
    # ~4e-7 off the float64 value at pw ≤ 4 (measured over 200 draws), so atol is 1e-6, not 1e-7.
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_label_smoothing_is_torch_on_smoothed_labels_and_keras_convention():
    x, t = _x(), _hard()
    eps = 0.1
    ours = BCEL(x, t, label_smoothing=eps, reduction="mean")
    np.testing.assert_allclose(ours, _torch(x, t * 0.9 + 0.05).numpy(), rtol=2e-6)
    # Keras: 1 − ε/2 for the positive class, ε/2 for the negative one.
    np.testing.assert_allclose(BCEL(jnp.zeros(2), jnp.array([1.0, 0.0]), label_smoothing=1.0),
                               [np.log(2.0)] * 2, rtol=1e-7)  # fmt: skip


# --- exact limits ------------------------------------------------------------------------------


def test_limits_at_1e4_are_exact():
    x = jnp.array([1e4, -1e4, 1e4, -1e4], jnp.float32)
    t = jnp.array([0.0, 1.0, 1.0, 0.0], jnp.float32)
    np.testing.assert_array_equal(BCE(x, t), [1e4, 1e4, 0.0, 0.0])
    np.testing.assert_array_equal(_grads(BCE, x, t), [1.0, -1.0, 0.0, 0.0])
    np.testing.assert_array_equal(_grads(BCE, x, t, argnums=1), [-1e4, 1e4, -1e4, 1e4])
    pw = jnp.float32(3.0)
    np.testing.assert_array_equal(BCEL(x, t, pos_weight=pw), [1e4, 3e4, 0.0, 0.0])
    np.testing.assert_array_equal(_grads(lambda x: BCEL(x, t, pos_weight=pw), x),
                                  [1.0, -3.0, 0.0, 0.0])  # fmt: skip
    for gamma in GAMMAS:
        np.testing.assert_array_equal(FOCAL(x, t, gamma=gamma), [1e4, 1e4, 0.0, 0.0])
        np.testing.assert_array_equal(_grads(lambda x, g=gamma: FOCAL(x, t, gamma=g), x),
                                      [1.0, -1.0, 0.0, 0.0])  # fmt: skip
        np.testing.assert_array_equal(FOCAL(x, t, gamma=gamma, alpha=0.25),
                                      [7500.0, 2500.0, 0.0, 0.0])  # fmt: skip


def test_confident_gradient_keeps_its_digits():
    # σ(20) − 1 rounds to 0 in float32; (1 − t)σ(x) − tσ(−x) does not.
    g = _grads(BCE, jnp.float32(20.0), jnp.float32(1.0))
    np.testing.assert_allclose(g, -np.exp(-20.0) / (1 + np.exp(-20.0)), rtol=1e-6)
    np.testing.assert_allclose(BCE(jnp.float32(20.0), jnp.float32(1.0)), np.log1p(np.exp(-20.0)),
                               rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("fn", ["bce", "pos_weight", "focal", "focal_small_gamma"])
def test_infinite_logits(fn):
    f = {
        "bce": BCE,
        "pos_weight": lambda x, t: BCEL(x, t, pos_weight=jnp.float32(2.0)),
        "focal": FOCAL,
        "focal_small_gamma": lambda x, t: FOCAL(x, t, gamma=0.5),
    }[fn]
    inf = jnp.inf
    x = jnp.array([inf, inf, -inf, -inf, inf], jnp.float32)
    t = jnp.array([1.0, 0.0, 0.0, 1.0, 0.5], jnp.float32)
    np.testing.assert_array_equal(f(x, t), [0.0, inf, 0.0, inf, inf])
    pw = 2.0 if fn == "pos_weight" else 1.0
    np.testing.assert_array_equal(_grads(f, x, t)[:4], [0.0, 1.0, 0.0, -pw])
    assert np.isfinite(np.asarray(_grads(f, x, t)[4]))


@pytest.mark.parametrize("f", [BCE, BCEL, FOCAL], ids=["bce", "bcel", "focal"])
def test_nan_in_nan_out(f):
    x = jnp.array([jnp.nan, 1.0], jnp.float32)
    t = jnp.array([1.0, jnp.nan], jnp.float32)
    assert np.all(np.isnan(np.asarray(f(x, t))))
    assert np.isnan(f(x, t, reduction="mean"))


# --- masks, reductions, dtypes, transforms -----------------------------------------------------


def _all_fns():
    w = jnp.asarray(RNG.uniform(0.5, 2, size=(K,)), jnp.float32)
    pw = jnp.asarray(RNG.uniform(0.5, 2, size=(K,)), jnp.float32)
    return {
        "bce": BCE,
        "bcel": lambda x, t, where=None, **kw: BCEL(
            x, t, where, weight=w, pos_weight=pw, label_smoothing=0.1, **kw
        ),
        "focal": lambda x, t, where=None, **kw: FOCAL(x, t, where, alpha=0.25, gamma=1.5, **kw),
    }


FNS = _all_fns()


@pytest.mark.parametrize("name", list(FNS))
def test_mask_drops_elements_whatever_their_inputs(name):
    f = FNS[name]
    x, t = _x(), _soft()
    keep = jnp.asarray(RNG.random((B, K)) > 0.4)
    xb = jnp.where(keep, x, jnp.nan).at[0, 0].set(jnp.inf)
    tb = jnp.where(keep, t, jnp.inf)
    xb, tb = jnp.where(keep, x, xb), jnp.where(keep, t, tb)
    loss = f(xb, tb, keep)
    np.testing.assert_array_equal(np.asarray(loss)[~np.asarray(keep)], 0.0)
    np.testing.assert_allclose(np.asarray(loss)[np.asarray(keep)],
                               np.asarray(f(x, t))[np.asarray(keep)], rtol=1e-6)  # fmt: skip
    gx, gt = _grads(lambda x, t: f(x, t, keep), xb, tb, argnums=(0, 1))
    for g in (gx, gt):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_array_equal(np.asarray(g)[~np.asarray(keep)], 0.0)
    # The mean counts kept elements; sum_and_count returns the same pieces.
    mean = f(xb, tb, keep, reduction="mean")
    np.testing.assert_allclose(mean, np.asarray(loss).sum() / np.asarray(keep).sum(), rtol=1e-6)
    total, count = f(xb, tb, keep, reduction="sum_and_count")
    assert float(count) == float(np.asarray(keep).sum())
    np.testing.assert_allclose(total / count, mean, rtol=1e-6)
    # A mask broadcast over the batch (one flag per class).
    col = jnp.array([True, False, True, True])
    np.testing.assert_allclose(f(x, t, col, reduction="sum"), jnp.sum(f(x, t)[:, col]), rtol=1e-6)


@pytest.mark.parametrize("name", list(FNS))
def test_nothing_kept_gives_zero_mean_and_gradient(name):
    f, x, t = FNS[name], _x(), _soft()
    none = jnp.zeros((B, K), bool)
    assert float(f(x, t, none, reduction="mean")) == 0.0
    g = _grads(lambda x: f(x, t, none, reduction="mean"), x)
    np.testing.assert_array_equal(g, 0.0)


def test_masked_weight_and_pos_weight_get_no_gradient():
    x, t = _x(), _soft()
    keep = jnp.asarray(RNG.random((B, K)) > 0.4)
    w = jnp.where(keep, 1.5, jnp.nan)
    pw = jnp.where(keep, 2.0, jnp.inf)
    gw, gp = jax.grad(lambda w, p: jnp.sum(BCEL(x, t, keep, weight=w, pos_weight=p)),
                      argnums=(0, 1))(w, pw)  # fmt: skip
    for g in (gw, gp):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_array_equal(np.asarray(g)[~np.asarray(keep)], 0.0)


@pytest.mark.parametrize("name", list(FNS))
def test_reductions(name):
    f, x, t = FNS[name], _x(), _soft()
    per = np.asarray(f(x, t))
    np.testing.assert_allclose(f(x, t, reduction="sum"), per.sum(), rtol=1e-6)
    np.testing.assert_allclose(f(x, t, reduction="mean"), per.mean(), rtol=1e-6)
    total, count = f(x, t, reduction="sum_and_count")
    assert float(count) == B * K
    np.testing.assert_allclose(total, per.sum(), rtol=1e-6)


def test_weight_does_not_enter_the_mean_denominator():
    # PyTorch: mean = Σ w·ℓ / N, not Σ w·ℓ / Σ w.
    x, t = _x(), _soft()
    w = jnp.full((B, K), 3.0)
    np.testing.assert_allclose(BCEL(x, t, weight=w, reduction="mean"),
                               3 * BCE(x, t, reduction="mean"), rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", list(FNS))
def test_low_precision_computed_in_float32(name, dtype):
    f, x, t = FNS[name], _x().astype(dtype), _soft().astype(dtype)
    out = f(x, t)
    assert out.dtype == jnp.float32
    want = f(x.astype(jnp.float32), t.astype(jnp.float32))
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
    g = _grads(f, x, t)
    assert g.dtype == dtype


def test_integer_and_bool_labels():
    x = _x()
    y = RNG.integers(0, 2, size=(B, K))
    for labels in (jnp.asarray(y, jnp.int8), jnp.asarray(y, bool)):
        for f in FNS.values():
            np.testing.assert_allclose(f(x, labels), f(x, jnp.asarray(y, jnp.float32)),
                                       rtol=1e-7)  # fmt: skip


def test_int_weights_and_lists_are_accepted():
    x, t = _x(), _soft()
    got = BCEL(x, t, weight=[1, 2, 1, 2], pos_weight=[2, 2, 2, 2])
    want = BCEL(x, t, weight=jnp.array([1.0, 2, 1, 2]), pos_weight=jnp.full(K, 2.0))
    np.testing.assert_allclose(got, want, rtol=1e-7)


@pytest.mark.slow  # Hessians
@pytest.mark.parametrize("name", list(FNS))
def test_jit_vmap_jvp_and_hessian(name):
    f, x, t = FNS[name], _x(), _soft()
    eager = f(x, t)
    np.testing.assert_allclose(jax.jit(f)(x, t), eager, rtol=1e-6, atol=1e-7)
    vm = jax.vmap(lambda a, b: f(a[None], b[None])[0])(x, t)
    np.testing.assert_allclose(vm, eager, rtol=1e-6, atol=1e-7)
    # Forward mode against reverse mode, and the Hessian against float64 autodiff of the rule.
    tan = jnp.asarray(RNG.normal(size=x.shape), jnp.float32)
    _, fwd = jax.jvp(lambda a: jnp.sum(f(a, t)), (x,), (tan,))
    np.testing.assert_allclose(fwd, jnp.sum(_grads(f, x, t) * tan), rtol=1e-5)
    xs, ts = x[:2], t[:2]
    hess = jax.hessian(lambda a: jnp.sum(f(a, ts) ** 2))(xs)
    jac = jax.jacfwd(lambda a: jax.grad(lambda b: jnp.sum(f(b, ts) ** 2))(a))(xs)
    np.testing.assert_allclose(hess, jac, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(hess)))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
def test_focal_hessian_against_float64(gamma):
    x, t = _x(1.0, (2, 3)), _soft((2, 3))
    got = jax.hessian(lambda a: jnp.sum(FOCAL(a, t, gamma=gamma)))(x)
    with jax.enable_x64(True):
        x64, t64 = _f64(x, t)
        want = jax.hessian(lambda a: jnp.sum(naive_focal(a, t64, None, gamma)))(x64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_bce_hessian_against_float64():
    x, t = _x(1.0, (2, 3)), _soft((2, 3))
    pw = jnp.array([1.0, 2.0, 3.0])
    got = jax.hessian(lambda a: jnp.sum(BCEL(a, t, pos_weight=pw)))(x)
    with jax.enable_x64(True):
        x64, t64, p64 = _f64(x, t, pw)
        want = jax.hessian(lambda a: jnp.sum(naive_bce(a, t64, 1.0, p64[None])))(x64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(FNS))
def test_backward_keeps_one_array(name):
    # Besides the arguments (and the [K] weights), the backward pass keeps one [B, K] array: the
    # gradient's coefficient. Not a zeros buffer, nor α_t, nor broadcast weights.
    x, t = _x(), _soft()
    res = saved_residuals(lambda a: jnp.sum(FNS[name](a, t)), x)
    big = [src for aval, src in res if "argument" not in src and aval.shape == (B, K)]
    assert len(big) == 1, res


# --- bad arguments ---------------------------------------------------------------------------


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)
    with pytest.raises(exc, match=pattern):
        jax.jit(lambda *a: fn(*a, **kwargs))(*args)


X, T = jnp.zeros((3, 4)), jnp.zeros((3, 4))


@pytest.mark.parametrize("f", [BCE, BCEL, FOCAL], ids=lambda f: f.__name__)
def test_shared_errors(f):
    name = f.__name__
    _raises(TypeError, rf"{name}: `logits` must have a floating dtype, got int32",
            f, jnp.zeros((3, 4), jnp.int32), T)  # fmt: skip
    _raises(ValueError, rf"{name}: `logits` with shape \(3, 4\) and `labels` with shape "
            r"\(3, 5\) do not broadcast", f, X, jnp.zeros((3, 5)))  # fmt: skip
    _raises(TypeError, rf"{name}: `labels` must be a real number array.*complex",
            f, X, jnp.zeros((3, 4), jnp.complex64))  # fmt: skip
    _raises(TypeError, rf"{name}: `where` must be a boolean mask", f, X, T,
            where=jnp.ones((3, 4)))  # fmt: skip
    _raises(ValueError, rf"{name}: `where` with shape \(2, 4\) does not broadcast to the loss's "
            r"shape \(3, 4\)", f, X, T, where=jnp.ones((2, 4), bool))  # fmt: skip
    _raises(ValueError, rf"{name}: unknown `reduction`='avg'", f, X, T, reduction="avg")


def test_option_errors():
    _raises(ValueError, r"`weight` with shape \(5,\) does not broadcast", BCEL, X, T,
            weight=jnp.ones(5))  # fmt: skip
    _raises(ValueError, r"`pos_weight` with shape \(2, 3, 4\) does not broadcast.*\(3, 4\)",
            BCEL, X, T, pos_weight=jnp.ones((2, 3, 4)))  # fmt: skip
    _raises(ValueError, r"binary_cross_entropy_with_logits: `label_smoothing` must be a finite "
            r"number in \[0, 1\], got 1.5", BCEL, X, T, label_smoothing=1.5)  # fmt: skip
    with pytest.raises(ValueError, match=r"`label_smoothing` must be a scalar, got a traced value "
                       r"with shape \(2,\)"):  # fmt: skip
        jax.jit(lambda e: BCEL(X, T, label_smoothing=e))(jnp.array([0.1, 0.2]))
    _raises(ValueError, r"sigmoid_focal_loss: `gamma` must be a finite number in \[0, inf\)",
            FOCAL, X, T, gamma=-1.0)  # fmt: skip
    _raises(ValueError, r"sigmoid_focal_loss: `alpha` must be a finite number in \[0, 1\]",
            FOCAL, X, T, alpha=1.5)  # fmt: skip
    _raises(ValueError, r"`gamma` must be a finite number", FOCAL, X, T, gamma=float("nan"))


@pytest.mark.parametrize(
    "fn",
    [
        jaxloss.binary_cross_entropy_with_logits,
        jaxloss.sigmoid_binary_cross_entropy,
        jaxloss.sigmoid_focal_loss,
    ],
)
def test_a_one_output_head_against_flat_labels_is_an_error(fn):
    # [N, 1] logits (a Dense(1) head) with [N] labels broadcast to an [N, N] loss, silently
    # (the mean was 0.701 where the loss is 0.746). PyTorch raises; so do we, naming the fix.
    x, y = jnp.zeros((5, 1)), jnp.ones(5)
    with pytest.raises(ValueError, match=r"\(5, 1\).*\(5,\).*\(5, 5\).*logits\[\.\.\., 0\]"):
        fn(x, y)
    # Either fix works and gives N losses.
    assert fn(x[..., 0], y).shape == (5,)
    assert fn(x, y[:, None]).shape == (5, 1)


def test_broadcast_labels_follow_each_library():
    x, y = jnp.zeros((4, 3)), jnp.array([0.0, 1.0, 1.0])
    # Optax's names keep Optax's broadcasting of the labels to the logits' shape...
    assert jaxloss.sigmoid_binary_cross_entropy(x, y).shape == (4, 3)
    assert jaxloss.sigmoid_focal_loss(x, y).shape == (4, 3)
    # ...PyTorch's name keeps PyTorch's rule: the same shape (weights still broadcast).
    with pytest.raises(ValueError, match="same shape as `logits`"):
        jaxloss.binary_cross_entropy_with_logits(x, y)
    out = jaxloss.binary_cross_entropy_with_logits(x, jnp.broadcast_to(y, (4, 3)), pos_weight=y)
    assert out.shape == (4, 3)
