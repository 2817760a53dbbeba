"""Saturated rows through every public function, at every derivative order, on every kernel.

A row is saturated when every entry but the maximum is so far below it that `exp(x_j − m)`
underflows (tests/cases.py: `saturated`). There `log Σ exp(x − m)` is exactly 0, and a
non-smooth primitive with a tie there (JAX gives `maximum` half the derivative on each side of
a tie) gives a wrong derivative silently: `finite_log_sum` as `max(log_s, 0)` halved the
maximum's gradient through `log_softmax` and left 0.5 on the Hessian's diagonal of
`logsumexp`, `softmax` and the dense losses, at gap 88 in float32 and 746 in float64.

Value, `grad`, `vjp` and `jvp` (and `hessian` in the slow tier) against float64 autodiff of the
case's plain formula, float32, bfloat16 and float64 inputs, each kernel the case dispatches
pinned (`Case.kernels`). The first-order inputs hold the case's ordinary random rows too: this
is every public function's `grad`/`vjp`/`jvp` test (tests/test_matrix.py tests values).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from tests.cases import (
    CASE_KERNEL_IDS,
    CASE_KERNELS,
    HESSIAN_KERNEL_IDS,
    HESSIAN_KERNELS,
    Case,
    oracle,
    saturated,
)
from tests.test_implementations import _pin

KERNELS = ["portable", "xla_cpu"]  # log_softmax and logsumexp have no XLA:GPU kernel
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f64": jnp.float64}
TOLS = {"f32": 1e-5, "bf16": 1e-2, "f64": 1e-12}


def _wide(a):
    """numpy cannot hold bfloat16 as float64 directly: through float32, exactly."""
    return a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a


def _close(got, want, tol):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


def _inputs(case: Case, dtype: str, ordinary: bool = True):
    """The saturated rows, below the case's own random draw where `ordinary` (so that one
    program checks both: this is every case's first-order test)."""
    rng = np.random.default_rng([sum(map(ord, case.name)), 5])
    args = saturated(case, DTYPES[dtype], rng)
    if ordinary:
        drawn = case.make(rng, DTYPES[dtype])
        args = tuple(jnp.concatenate([a, b]) for a, b in zip(drawn, args, strict=True))
    ct = rng.normal(size=np.shape(case.fn(*args)))
    tangent = rng.normal(size=args[0].shape)
    return args, ct, tangent


# float32 in the fast tier; bfloat16 (computed in float32 inside) and float64 in the slow one.
FIRST_ORDER_DTYPES = [pytest.param(d, marks=() if d == "f32" else pytest.mark.slow) for d in DTYPES]


@pytest.mark.parametrize("dtype", FIRST_ORDER_DTYPES)
@pytest.mark.parametrize(("case", "impl"), CASE_KERNELS, ids=CASE_KERNEL_IDS)
def test_saturated_rows_first_order(case: Case, dtype: str, impl: str):
    with jax.enable_x64(dtype == "f64"):
        args, ct, tangent = _inputs(case, dtype)
        fn = lambda x0: case.fn(x0, *args[1:])  # noqa: E731
        out = _pin(impl, fn)(args[0])
        ct, tangent = jnp.asarray(ct, out.dtype), jnp.asarray(tangent, args[0].dtype)

        def transforms(x0):
            grad = jax.grad(lambda x0: jnp.sum(fn(x0) * ct))(x0)
            vjp = jax.vjp(fn, x0)[1](ct)[0]
            return grad, vjp, jax.jvp(fn, (x0,), (tangent,))[1]

        grad, vjp, jvp = _pin(impl, transforms)(args[0])
        with jax.enable_x64(True):
            ct64 = np.asarray(_wide(ct), np.float64)
            t64 = np.asarray(_wide(tangent), np.float64)
            want_grad = oracle(
                case, args, lambda f, a: jax.grad(lambda x: jnp.sum(f(x) * ct64))(a[0])
            )
            want_jvp = oracle(case, args, lambda f, a: jax.jvp(f, (a[0],), (t64,))[1])
            want = case.ref(*[np.asarray(a.astype(jnp.float32)) if a.dtype == jnp.bfloat16
                              else np.asarray(a) for a in args])  # fmt: skip

    # Values: the elementwise ones come back in bfloat16.
    narrow = case.elementwise and dtype == "bf16"
    _close(out, want, 1e-12 if dtype == "f64" else 1e-2 if narrow else 1e-5)
    tol = TOLS[dtype]
    _close(grad, want_grad, tol)
    _close(vjp, want_grad, tol)
    _close(jvp, want_jvp, tol)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize(("case", "impl"), HESSIAN_KERNELS, ids=HESSIAN_KERNEL_IDS)
def test_saturated_rows_hessian(case: Case, dtype: str, impl: str):
    # The Hessian of the first two rows: [2, K, 2, K] stays small.
    with jax.enable_x64(dtype == "f64"):
        args, ct, _ = _inputs(case, dtype, ordinary=False)
        args, ct = [a[:2] for a in args], jnp.asarray(ct[:2], args[0].dtype)
        hess = _pin(impl, jax.hessian(lambda x0: jnp.sum(case.fn(x0, *args[1:]) * ct)))(args[0])
        with jax.enable_x64(True):
            ct64 = np.asarray(ct, np.float64)
            want = oracle(case, args, lambda f, a: jax.hessian(
                lambda x: jnp.sum(f(x) * ct64))(a[0]))  # fmt: skip
    _close(hess, want, TOLS[dtype])


@pytest.mark.slow  # a Hessian
@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_the_issue_examples(impl: str, dtype: str):
    # The three lines that found it: a gap of 100 in float32, 800 in float64.
    gap = 100.0 if dtype == "f32" else 800.0
    with jax.enable_x64(dtype == "f64"):
        x = jnp.array([[gap, 0.0, 0.0]], DTYPES[dtype])
        y = jnp.array([1])
        g1, g2, h = _pin(
            impl,
            lambda: (
                jax.grad(lambda z: jaxloss.log_softmax(z)[0, 1])(x),
                jax.grad(lambda z: jaxloss.nll_loss(jaxloss.log_softmax(z), y).sum())(x),
                jax.hessian(lambda z: jaxloss.logsumexp(z).sum())(x),
            ),
        )()
    np.testing.assert_allclose(g1, [[-1.0, 1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(g2, [[1.0, -1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(h[0, :, 0], np.zeros((3, 3)), atol=1e-7)


@pytest.mark.slow  # Hessians
@pytest.mark.parametrize("pw", [1.0, 2.5])
def test_bce_mixed_hessian_at_hard_labels(pw: float):
    # ∂²ℓ/∂x∂t, ∂²ℓ/∂t∂p_w and the rest at x = 0 (the tie of max(x, 0) and |x|), ±88 and hard
    # labels t ∈ {0, 1}: every argument differentiated together, against float64 autodiff of
    # −w·[p_w·t·log σ(x) + (1 − t)·log σ(−x)].
    x = jnp.array([0.0, 0.0, 88.0, -88.0, 3.0, 0.0], jnp.float32)
    t = jnp.array([0.0, 1.0, 0.0, 1.0, 0.3, 0.5], jnp.float32)
    w = jnp.full_like(x, pw)

    def loss(v, f):
        return jnp.sum(f(v[0], v[1], v[2]))

    def ours(x, t, w):
        return jaxloss.binary_cross_entropy_with_logits(x, t, pos_weight=w)

    def plain(x, t, w):
        return -(w * t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x))

    got = jax.hessian(loss)(jnp.stack([x, t, w]), ours)
    with jax.enable_x64(True):
        want = jax.hessian(loss)(jnp.stack([x, t, w]).astype(jnp.float64), plain)
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want), rtol=1e-6, atol=1e-6)
