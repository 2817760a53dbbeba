"""Saturated rows through every public function, at every derivative order, on every kernel.

A row is saturated when every entry but the maximum is so far below it that `exp(x_j − m)`
underflows (tests/cases.py: `saturated`). There `log Σ exp(x − m)` is exactly 0, and a
non-smooth primitive with a tie there (JAX gives `maximum` half the derivative on each side of
a tie) gives a wrong derivative silently: `finite_log_sum` as `max(log_s, 0)` halved the
maximum's gradient through `log_softmax` and left 0.5 on the Hessian's diagonal of
`logsumexp`, `softmax` and the dense losses, at gap 88 in float32 and 746 in float64.

Value, `grad`, `vjp`, `jvp` and `hessian` against float64 autodiff of the case's plain formula,
float32 (and bfloat16 for the gradient) and float64 inputs, each kernel pinned.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from tests.cases import CASE_IDS, CASES, Case, saturated
from tests.test_implementations import _use

KERNELS = ["portable", "xla_cpu", "xla_gpu"]
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f64": jnp.float64}


def _oracle(case: Case, args, fn_of_plain):
    """`fn_of_plain(plain_of_first, args64)` in float64."""
    a64 = [jnp.asarray(np.asarray(a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a),
                       jnp.float64 if jnp.issubdtype(a.dtype, jnp.floating) else a.dtype)
           for a in args]  # fmt: skip
    return np.asarray(fn_of_plain(lambda x0: case.plain(x0, *a64[1:]), a64))


def _close(got, want, tol):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_saturated_rows_at_every_order(case: Case, dtype: str, impl: str):
    rng = np.random.default_rng([sum(map(ord, case.name)), 5])
    with jax.enable_x64(dtype == "f64"), _use(impl):
        args = saturated(case, DTYPES[dtype], rng)
        fn = lambda x0: case.fn(x0, *args[1:])  # noqa: E731
        out = fn(args[0])
        ct = jnp.asarray(rng.normal(size=out.shape), out.dtype)
        tangent = jnp.asarray(rng.normal(size=args[0].shape), args[0].dtype)
        scalar = lambda x0: jnp.sum(fn(x0) * ct)  # noqa: E731
        grad = jax.grad(scalar)(args[0])
        vjp = jax.vjp(fn, args[0])[1](ct)[0]
        jvp = jax.jvp(fn, (args[0],), (tangent,))[1]
        # The Hessian of the first two rows only: [2, K, 2, K] stays small.
        args2, ct2 = [a[:2] for a in args], ct[:2]
        hess = None
        if dtype != "bf16":
            hess = jax.hessian(lambda x0: jnp.sum(case.fn(x0, *args2[1:]) * ct2))(args2[0])

        with jax.enable_x64(True):
            ct64 = np.asarray(ct.astype(jnp.float32) if dtype == "bf16" else ct, np.float64)
            t64 = np.asarray(tangent.astype(jnp.float32) if dtype == "bf16" else tangent, float)
            scalar64 = lambda f: lambda x: jnp.sum(f(x) * ct64)  # noqa: E731
            want_grad = _oracle(case, args, lambda f, a: jax.grad(scalar64(f))(a[0]))
            want_jvp = _oracle(case, args, lambda f, a: jax.jvp(f, (a[0],), (t64,))[1])
            want_hess = _oracle(case, args2, lambda f, a: jax.hessian(
                lambda x: jnp.sum(f(x) * ct64[:2]))(a[0]))  # fmt: skip
            want = case.ref(*[np.asarray(a.astype(jnp.float32)) if a.dtype == jnp.bfloat16
                              else np.asarray(a) for a in args])  # fmt: skip

    # Values: the elementwise ones come back in bfloat16.
    _close(out, want, 1e-12 if dtype == "f64" else 1e-2 if case.elementwise and dtype == "bf16"
           else 1e-5)  # fmt: skip
    tol = {"f32": 1e-5, "bf16": 1e-2, "f64": 1e-12}[dtype]
    _close(grad, want_grad, tol)
    _close(vjp, want_grad, tol)
    _close(jvp, want_jvp, tol)
    if hess is not None:
        _close(hess, want_hess, tol)


@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_the_issue_examples(impl: str, dtype: str):
    # The three lines that found it: a gap of 100 in float32, 800 in float64.
    gap = 100.0 if dtype == "f32" else 800.0
    with jax.enable_x64(dtype == "f64"), _use(impl):
        x = jnp.array([[gap, 0.0, 0.0]], DTYPES[dtype])
        y = jnp.array([1])
        g1 = jax.grad(lambda z: jaxloss.log_softmax(z)[0, 1])(x)
        g2 = jax.grad(lambda z: jaxloss.nll_loss(jaxloss.log_softmax(z), y).sum())(x)
        h = jax.hessian(lambda z: jaxloss.logsumexp(z).sum())(x)
    np.testing.assert_allclose(g1, [[-1.0, 1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(g2, [[1.0, -1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(h[0, :, 0], np.zeros((3, 3)), atol=1e-7)


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
