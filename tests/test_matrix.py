"""Every public function through a matrix of dtypes and transforms, against float64 oracles."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from tests.cases import (
    CASE_IDS,
    CASE_KERNEL_IDS,
    CASE_KERNELS,
    CASES,
    HESSIAN_KERNEL_IDS,
    HESSIAN_KERNELS,
    Case,
    oracle,
)
from tests.test_implementations import _pin

# The implementation axis: each case on each kernel it dispatches (`Case.kernels`), pinned. The
# default dispatch runs the XLA:CPU kernel here; tests/test_implementations.py runs it on the
# named edge cases.
impls = pytest.mark.parametrize(("case", "impl"), CASE_KERNELS, ids=CASE_KERNEL_IDS)

# float16 is computed as bfloat16 is (in float32 inside): the slow tier runs it.
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16,
          "f16": pytest.param(jnp.float16, marks=pytest.mark.slow)}  # fmt: skip


def _programs(case: Case, impl: str) -> list[str]:
    """The jaxprs a case traces under `impl`: forward (f32 and bf16), value_and_grad, jvp."""
    args = case.make(np.random.default_rng(0), jnp.float32)
    narrow = case.make(np.random.default_rng(0), jnp.bfloat16)
    rest = args[1:]

    def scalar(x0):
        return jnp.sum(case.fn(x0, *rest))

    def programs():
        return [
            str(jax.make_jaxpr(case.fn)(*args)),
            str(jax.make_jaxpr(case.fn)(*narrow)),
            str(jax.make_jaxpr(jax.value_and_grad(scalar))(args[0])),
            str(jax.make_jaxpr(lambda x, t: jax.jvp(scalar, (x,), (t,)))(args[0], args[0])),
        ]

    try:
        return _pin(impl, programs)()
    except ValueError as e:  # the function has no kernel of that implementation
        assert str(e).endswith(f"has no {impl.removesuffix('_cut')} kernel"), e
        return None


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kernels_are_the_implementations_whose_programs_differ(case: Case):
    # The guard for `Case.kernels`: an implementation is listed exactly when its programs
    # differ from every one listed before it, so a new kernel path cannot go untested and no
    # test compiles a program twice.
    seen = [_programs(case, "portable")]
    differ = ["portable"]
    for impl in ("xla_cpu", "xla_cpu_cut", "xla_gpu"):
        progs = _programs(case, impl)
        if progs is not None and progs not in seen:
            differ.append(impl)
            seen.append(progs)
    assert tuple(differ) == case.kernels


def _rng(case: Case, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([sum(map(ord, case.name)), salt])


# Public functions with their own test file instead of a row here, and why.
ELSEWHERE = {
    # custom_vjp (no forward mode) with hidden/weight inputs: tests/test_linear_cross_entropy.py
    "linear_cross_entropy": "test_linear_cross_entropy.py",
    # metrics, not differentiable losses (comparisons; stop_gradient): tests/test_metrics.py
    "accuracy": "test_metrics.py",
    "perplexity": "test_metrics.py",
}


def test_every_public_function_has_a_case():
    covered = {c.fn for c in CASES} | {n for n in CASE_IDS}
    missing = [n for n in jaxloss.__all__ if n not in covered and n not in ELSEWHERE]
    for name, test_file in ELSEWHERE.items():
        assert (Path(__file__).parent / test_file).is_file(), (name, test_file)
    assert not missing, f"public functions without a test case: {missing}"


@impls
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_value_against_float64(case: Case, dtype, impl: str):
    args = case.make(_rng(case), dtype)
    out = _pin(impl, case.fn)(*args)
    # The reference sees exactly the (possibly rounded) inputs jaxloss saw.
    expected = case.ref(*[np.asarray(a.astype(jnp.float32)) if a.dtype != jnp.int32 else
                          np.asarray(a) for a in args])  # fmt: skip
    if case.elementwise:
        assert out.dtype == args[0].dtype
        tol = 1e-5 if dtype == jnp.float32 else 1e-2  # rounded back to the input dtype
    else:
        # Reductions are computed and returned in float32 for low-precision inputs.
        assert out.dtype == jnp.float32, out.dtype
        tol = 1e-5
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_under_x64(case: Case):
    with jax.enable_x64(True):
        args = case.make(_rng(case), jnp.float64)
        out = case.fn(*args)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out), case.ref(*map(np.asarray, args)), rtol=1e-12)


@pytest.mark.parametrize("transform", ["jit", "vmap"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jit_and_vmap_match_eager(case: Case, transform: str):
    args = case.make(_rng(case), jnp.float32)
    eager = case.fn(*args)
    if transform == "jit":
        out = jax.jit(case.fn)(*args)
    else:
        # Map over the batch one example at a time: each call sees a single row.
        out = jax.vmap(lambda *a: case.fn(*(v[None] for v in a))[0])(*args)
    np.testing.assert_allclose(out, eager, rtol=2e-6, atol=2e-6)


# grad, vjp and jvp of every case on every kernel: tests/test_saturated.py, on inputs that hold
# ordinary random rows and saturated ones (one program for both).


@pytest.mark.slow
@pytest.mark.parametrize(("case", "impl"), HESSIAN_KERNELS, ids=HESSIAN_KERNEL_IDS)
def test_hessian_against_float64_autodiff(case: Case, impl: str):
    rng = _rng(case, 3)
    args = case.make(rng, jnp.float32)
    args = tuple(a[:2] for a in args)  # two examples keep the Hessian small
    ct = rng.normal(size=np.shape(case.fn(*args))).astype(np.float32)
    got = _pin(impl, jax.hessian(lambda x0: jnp.sum(case.fn(x0, *args[1:]) * ct)))(args[0])
    want = oracle(case, args, lambda f, a: jax.hessian(lambda x: jnp.sum(f(x) * ct))(a[0]))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_public_functions_run_under_their_named_scope():
    # Profiles and the compiled program's op metadata name the function the user called.
    for name in jaxloss.__all__:
        assert getattr(jaxloss, name).__wrapped__.__name__ == name
    x, y = jnp.ones((2, 3)), jnp.zeros(2, jnp.int32)
    text = jax.jit(jaxloss.cross_entropy).lower(x, y).as_text(debug_info=True)
    assert "jaxloss.cross_entropy/" in text
