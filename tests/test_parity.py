"""Drop-in parity with optax.losses, and PyTorch's documented semantics for the options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxloss
from tests import reference as ref

RNG = np.random.default_rng(1234)
SHAPE = (3, 4, 5)  # batch (3, 4) with 5 classes on the last axis, or classes over axes (1, 2)


def _logits():
    return jnp.asarray(RNG.normal(size=SHAPE) * 2, jnp.float32)


def _where(kind, axis):
    if kind is None:
        return None
    batch = [n for a, n in enumerate(SHAPE) if a not in axis]
    if kind == "examples":
        return jnp.asarray(RNG.random(size=batch) > 0.3)
    mask = RNG.random(size=SHAPE) > 0.3
    return jnp.asarray(mask)


AXES = [-1, (1, 2), (2, 1)]
WHERES = [None, "examples", "classes"]


def _norm(axis):
    return tuple(a % 3 for a in ((axis,) if isinstance(axis, int) else axis))


def _check(ours, theirs, args):
    np.testing.assert_allclose(ours(*args), theirs(*args), rtol=2e-6, atol=2e-6)
    gs = jax.grad(lambda *a: jnp.sum(ours(*a)), argnums=tuple(range(len(args))))(*args)
    go = jax.grad(lambda *a: jnp.sum(theirs(*a)), argnums=tuple(range(len(args))))(*args)
    for a, b in zip(gs, go, strict=True):
        # Where Optax's gradient is NaN (w.r.t. masked targets) ours must be finite.
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.isfinite(a[np.isnan(b)]))
        ok = ~np.isnan(b)
        np.testing.assert_allclose(a[ok], b[ok], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("where_kind", WHERES)
@pytest.mark.parametrize("axis", AXES, ids=str)
def test_integer_labels_match_optax(axis, where_kind):
    axes = _norm(axis)
    x = _logits()
    k = int(np.prod([SHAPE[a] for a in axes]))
    batch = [n for a, n in enumerate(SHAPE) if a not in axes]
    y = jnp.asarray(RNG.integers(0, k, size=batch))
    where = _where(where_kind, axes)
    if where_kind == "classes":
        # Keep every label's class in (Optax reads a masked label's logit; we give +inf).
        flat = jaxloss._checks.classes_last(where, axes)
        flat = flat | (jnp.arange(k).reshape((1,) * y.ndim + (k,)) == y[..., None])
        where = jaxloss._checks.classes_restore(flat, axes, SHAPE)

    def ours(x):
        return jaxloss.softmax_cross_entropy_with_integer_labels(x, y, axis, where)

    def theirs(x):
        return optax.softmax_cross_entropy_with_integer_labels(x, y, axis, where)

    _check(ours, theirs, (x,))


@pytest.mark.parametrize("where_kind", WHERES)
@pytest.mark.parametrize("axis", AXES, ids=str)
def test_dense_targets_match_optax(axis, where_kind):
    axes = _norm(axis)
    x = _logits()
    t = jax.nn.softmax(jnp.asarray(RNG.normal(size=SHAPE), jnp.float32), axis=axes)
    where = _where(where_kind, axes)
    _check(
        lambda x, t: jaxloss.softmax_cross_entropy(x, t, axis, where),
        lambda x, t: optax.softmax_cross_entropy(x, t, axis, where),
        (x, t),
    )


@pytest.mark.parametrize("where_kind", WHERES)
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", ["kl_divergence", "kl_divergence_with_log_targets"])
def test_kl_matches_optax(name, axis, where_kind):
    axes = _norm(axis)
    log_q = jax.nn.log_softmax(_logits(), axis=axes)
    p = jax.nn.softmax(_logits(), axis=axes)
    target = jnp.log(p) if name.endswith("log_targets") else p
    where = _where(where_kind, axes)
    if where_kind == "examples":
        where = jnp.expand_dims(where, axes)  # Optax's KL sums with `where` as given
    _check(
        lambda a, b: getattr(jaxloss, name)(a, b, axis, where),
        lambda a, b: getattr(optax.losses, name)(a, b, axis, where),
        (log_q, target),
    )


# --- PyTorch semantics, from its documented formulas (tests/reference.py) ----------------------


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"ignore_index": -100},
        {"class_weights": np.linspace(0.2, 3.0, 6)},
        {"label_smoothing": 0.2},
        {"label_smoothing": 0.2, "class_weights": np.linspace(0.2, 3.0, 6), "ignore_index": 3},
        {"z_loss": 1e-3, "logit_softcap": 4.0},
    ],
    ids=["plain", "ignore", "weights", "smoothing", "weights+smoothing+ignore", "zloss+softcap"],
)
def test_cross_entropy_options_match_pytorch_formulas(options, reduction):
    x = jnp.asarray(RNG.normal(size=(10, 6)) * 3, jnp.float32)
    y = RNG.integers(0, 6, size=10)
    y[[1, 4]] = options.get("ignore_index", 0)
    y = jnp.asarray(y)
    got = jaxloss.cross_entropy(x, y, reduction=reduction, **options)
    want = ref.cross_entropy(x, y, reduction=reduction, **options)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_sum_and_count_accumulates_to_the_global_mean():
    x = jnp.asarray(RNG.normal(size=(12, 5)), jnp.float32)
    y = jnp.asarray(RNG.integers(0, 5, size=12)).at[jnp.array([0, 1, 2, 7])].set(-100)
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    opts = dict(ignore_index=-100, class_weights=w, label_smoothing=0.1)
    total, count = 0.0, 0.0
    for part in jnp.split(jnp.arange(12), 3):  # micro-batches with unequal valid counts
        s, c = jaxloss.cross_entropy(x[part], y[part], reduction="sum_and_count", **opts)
        total, count = total + s, count + c
    mean = jaxloss.cross_entropy(x, y, reduction="mean", **opts)
    np.testing.assert_allclose(total / count, mean, rtol=1e-6)
    np.testing.assert_allclose(mean, ref.cross_entropy(x, y, reduction="mean", **opts), rtol=2e-6)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_nll_loss_matches_pytorch_formula(reduction):
    log_q = jax.nn.log_softmax(jnp.asarray(RNG.normal(size=(8, 4)), jnp.float32))
    y = jnp.asarray(RNG.integers(0, 4, size=8)).at[3].set(-100)
    w = np.array([0.5, 1.0, 2.0, 4.0])
    got = jaxloss.nll_loss(log_q, y, ignore_index=-100, class_weights=w, reduction=reduction)
    want = ref.nll_loss(log_q, y, ignore_index=-100, class_weights=w, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_against_torch_when_installed():
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    x = RNG.normal(size=(9, 5)).astype(np.float32)
    y = RNG.integers(0, 5, size=9)
    y[2] = -100
    w = np.linspace(0.5, 2.0, 5).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    theirs = f.cross_entropy(
        tx, torch.tensor(y), weight=torch.tensor(w), ignore_index=-100, label_smoothing=0.15
    )
    theirs.backward()
    ours, g = jax.value_and_grad(
        lambda x: jaxloss.cross_entropy(
            x,
            jnp.asarray(y),
            ignore_index=-100,
            class_weights=w,
            label_smoothing=0.15,
            reduction="mean",
        )
    )(jnp.asarray(x))
    np.testing.assert_allclose(ours, theirs.item(), rtol=2e-6)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=2e-5, atol=1e-7)
