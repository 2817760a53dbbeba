"""Every implementation of every kernel (portable, XLA:CPU with its tuned paths, XLA:GPU) on
named inputs.

The portable kernels are what TPUs compile (and GPUs, but for short rows); here on a CPU they run
because
`jaxloss._impl.implementation` pins them. `xla_cpu_cut` is the XLA:CPU kernel with thresholds
that force every path it has on small inputs (row cuts, the label shift and its fallback,
recomputing exp, the label marked by scatters rather than the 0/1 weight of small arrays).
`default` is what a user gets: `lax.platform_dependent`'s choice.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

# The public `print_saved_residuals` only prints; its data comes from this private helper.
from jax._src.ad_checkpoint import saved_residuals

import jaxloss
from jaxloss import _impl, _xla_cpu
from jaxloss._xla_cpu import CpuConfig
from tests import reference as ref

CUT = CpuConfig(max_row=4, label_shift_min_size=0, narrow_keep_exp_max=0, small_max=0)
IMPLS = {
    "default": None,
    "portable": ("portable", None),
    "xla_cpu": ("xla_cpu", None),
    "xla_cpu_cut": ("xla_cpu", CUT),
    # The XLA:GPU row statistics (short rows; longer rows take the portable kernel), run on CPU.
    "xla_gpu": ("xla_gpu", None),
}


def _pin(impl: str, fn):
    """`fn` tracing only `impl`'s kernels (`default`: the platform's choice). Calls of several
    functions go in one `fn`: pinning a kernel none of them has is an error."""
    pinned = IMPLS[impl]
    return fn if pinned is None else _impl.pinned(fn, *pinned)


# `default` is `xla_cpu` on this machine (the branch XLA keeps): each kernel is run pinned, and
# the dispatch itself has its own tests below (`test_default_dispatch_*`).
# The XLA:GPU kernel is the portable one except in softmax_entropy (tests/cases.py: `kernels`):
# it runs in the NaN and ±inf tests (the row statistics), not in the integer-label tests.
impls = pytest.mark.parametrize("impl", [n for n in IMPLS if n not in ("default", "xla_gpu")])
impls_gpu = pytest.mark.parametrize("impl", [name for name in IMPLS if name != "default"])


def _ce_sum(x, y, **kw):
    return jnp.sum(jaxloss.cross_entropy(x, y, **kw))


# --- NaN in, NaN out; ±inf ------------------------------------------------------------------------


@impls_gpu
def test_nan_propagates(impl):
    x = jnp.array([[jnp.nan, 1.0, 0.0], [0.0, 1.0, 2.0]])
    lse, sm, lsm, h, sce, ce = _pin(
        impl,
        lambda: (
            jaxloss.logsumexp(x),
            jaxloss.softmax(x),
            jaxloss.log_softmax(x),
            jaxloss.softmax_entropy(x),
            jaxloss.softmax_cross_entropy(x, jnp.full((2, 3), 1 / 3)),
            jaxloss.cross_entropy(x, jnp.array([1, 1])),
        ),
    )()
    for out in (lse, h, sce, ce):
        assert np.isnan(out[0]) and np.isfinite(out[1]), out
    assert np.all(np.isnan(sm[0])) and np.all(np.isnan(lsm[0]))
    np.testing.assert_allclose(sm[1], ref.softmax(x[1:])[0], rtol=1e-6)


@impls_gpu
def test_infinities(impl):
    x = jnp.array([[jnp.inf, 1.0], [-jnp.inf, -jnp.inf], [-jnp.inf, 0.0]])
    lse, sm, g = _pin(
        impl,
        lambda: (
            jaxloss.logsumexp(x),
            jaxloss.softmax(x),
            jax.grad(lambda x: jnp.sum(jaxloss.logsumexp(x[1:])))(x),
        ),
    )()
    np.testing.assert_array_equal(lse, [jnp.inf, -jnp.inf, 0.0])
    np.testing.assert_array_equal(sm[1:], [[0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(g, [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])


@impls
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"z_loss": 1e-4}])
def test_plus_infinity_off_the_label_gives_an_infinite_loss(impl, options):
    # p_y = 0 where another class's logit is +inf: the loss is +inf, as jax.nn and Optax give
    # (the statistics shifted by the +inf maximum are NaN, and gave NaN). A +inf label logit
    # leaves inf − inf: NaN. 1000 classes, so XLA:CPU's forward sums in pieces.
    x = np.random.default_rng(4).normal(size=(3, 1000)).astype(np.float32)
    x[0, 7] = np.inf
    x[1, 2] = np.inf
    y = jnp.asarray([1, 2, 3])
    loss = jax.jit(_pin(impl, lambda x: jaxloss.cross_entropy(x, y, **options)))(x)
    # With a gradient (XLA:CPU's other kernel), rows 0 and 2: +inf + finite.
    y02 = y[jnp.asarray([0, 2])]
    value = jax.value_and_grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, y02, **options)))
    total = _pin(impl, value)(jnp.asarray(x[[0, 2]]))[0]
    assert float(loss[0]) == np.inf
    assert np.isnan(loss[1])
    want = ref.cross_entropy(np.asarray(x[2:], np.float64), np.asarray(y[2:]), **options)
    np.testing.assert_allclose(loss[2], want[0], rtol=1e-5)
    assert float(total) == np.inf


# --- exact at any scale ---------------------------------------------------------------------------


@impls
@pytest.mark.parametrize("top", [1.0, 1e4, 1e8])
def test_log_softmax_exact_at_any_scale(impl, top):
    # An ulp of 1e8 is 8 in float32: the second entry is two ulps below the first, and its
    # mass e^-16 must still be told apart from a tie.
    x = jnp.array([top, top - 16.0], jnp.float32)
    out, p = _pin(impl, lambda: (jaxloss.log_softmax(x), jaxloss.softmax(x)))()
    r = np.exp(-16.0)
    np.testing.assert_allclose(out, [-np.log1p(r), -16.0 - np.log1p(r)], rtol=1e-6)
    np.testing.assert_allclose(float(jnp.sum(p)), 1.0, rtol=1e-7)


@impls
@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_float64_cross_entropy_exact_at_large_offsets(impl, offset):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(8, 50)) * 3 + offset
    t = rng.dirichlet(np.ones(50), size=8)
    with jax.enable_x64(True):
        got, lsm = _pin(
            impl,
            lambda: (
                np.asarray(jaxloss.softmax_cross_entropy(jnp.asarray(x), jnp.asarray(t))),
                np.asarray(jaxloss.log_softmax(jnp.asarray(x))),
            ),
        )()
    # x − max is exact in float64 here, so this reference keeps ~1e-16 relative.
    d = x - x.max(-1, keepdims=True)
    want_lsm = d - np.log(np.exp(d).sum(-1, keepdims=True))
    np.testing.assert_allclose(lsm, want_lsm, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got, -(t * want_lsm).sum(-1), rtol=1e-13)


@impls
def test_true_class_gradient_is_exact(impl):
    r = 1e-6  # p_y = 1/(1 + r)
    x = jnp.array([[0.0, np.log(r)]], jnp.float32)
    exact = -ref.softmax(x)[0, 1]
    g = _pin(impl, jax.grad(lambda x: _ce_sum(x, jnp.array([0]))))(x)
    gs = _pin(impl, jax.grad(lambda x: jnp.sum(jaxloss.softmax_cross_entropy(x, jnp.eye(2)[:1]))))(
        x
    )
    assert abs(float(g[0, 0]) - exact) / abs(exact) < 1e-5
    assert abs(float(gs[0, 0]) - exact) / abs(exact) < 1e-5


# --- rows that are masked, ignored or empty give 0, whatever their logits -------------------------


@impls
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_masked_and_ignored_rows_have_zero_gradient(impl, bad):
    x = jnp.array([[1.0, 2.0, 0.5], [bad, 0.0, 1.0], [0.0, bad, 1.0]])
    y = jnp.array([0, 1, -100])
    keep = jnp.array([True, False, True])
    for opts in ({}, {"label_smoothing": 0.2}, {"z_loss": 1e-3}):
        loss, g = _pin(
            impl,
            jax.value_and_grad(lambda x, o=opts: _ce_sum(x, y, where=keep, ignore_index=-100, **o)),
        )(x)
        assert np.isfinite(loss)
        np.testing.assert_array_equal(g[1:], 0.0)
        assert np.all(np.isfinite(g[0])) and np.any(g[0] != 0)
    gd = _pin(
        impl,
        jax.grad(
            lambda x: jnp.sum(jaxloss.softmax_cross_entropy(x[:2], jnp.eye(3)[:2], where=keep[:2]))
        ),
    )(x)
    np.testing.assert_array_equal(gd[1:], 0.0)


# --- every path of the XLA:CPU kernel, and long rows ----------------------------------------------


@impls
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("far", [False, True])
def test_integer_label_paths_agree_with_float64(impl, dtype, far):
    # The XLA:CPU kernel's forward pass shifts by the label's logit unless some row would
    # overflow (a logit about 69 or more above its label's), then by the row maximum; its
    # gradient writes exp(x − m) once or recomputes it (`xla_cpu_cut` forces the latter and cuts
    # rows into pieces). Checked in the loss, its gradient and under vmap.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 50)) * 4
    y = rng.integers(0, 50, size=6)
    if far:
        x[2, (y[2] + 1) % 50] = x[2, y[2]] + 90.0  # row 2 overflows exp(x − x_y) in float32
    x[4, y[4]] = x[4].max() + 25.0  # a confident row: loss ≈ 1e-10, kept exactly
    x = jnp.asarray(x, dtype)
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    # log Σ_j exp(x_j − x_y) = log1p(Σ_{j≠y} ...): float64's own logsumexp − x_y would lose the
    # confident row's 1e-11 loss to cancellation.
    others = np.exp(x64 - x64[np.arange(6), y][:, None])
    others[np.arange(6), y] = 0.0
    want = np.log1p(others.sum(-1))
    got, got_vmap, g = _pin(
        impl,
        lambda: (
            jaxloss.cross_entropy(x, jnp.asarray(y)),
            jax.vmap(jaxloss.cross_entropy)(x, jnp.asarray(y)),
            jax.grad(lambda x: _ce_sum(x, jnp.asarray(y)))(x),
        ),
    )()
    np.testing.assert_allclose(got, want, rtol=2e-6)
    np.testing.assert_allclose(got_vmap, want, rtol=2e-6)
    p = np.exp(x64 - x64.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[np.arange(6), y] -= 1.0
    tol = 1e-6 if dtype == jnp.float32 else 8e-3
    np.testing.assert_allclose(np.asarray(g, np.float64), p, atol=tol * np.abs(p).max())
    if dtype == jnp.float32:  # the confident row's true-class entry, exact to rounding
        np.testing.assert_allclose(float(g[4, y[4]]), p[4, y[4]], rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("far", [False, True])
def test_off_label_sum_in_pieces_with_the_label_anywhere(dtype, far):
    # XLA:CPU's forward sums each piece of a row without a weight and reads the label's piece
    # again with it. Pieces of 3 over 12 classes, one row per label position: first, middle and
    # last entry of the first, a middle and the last piece. `far` makes a row overflow the label
    # shift, so the batch takes the max-shift branch, which sums in pieces too.
    cfg = CpuConfig(label_piece=3, label_pieces=2, label_piece_min=3, label_shift_min_size=0)
    assert _xla_cpu._label_piece(12, cfg) == 3
    rng = np.random.default_rng(11)
    x = rng.normal(size=(12, 12)) * 4
    y = np.arange(12)
    x[7, 7] = x[7].max() + 20.0  # a confident row: its loss ≈ 2e-9 must survive
    if far:
        x[2, 5] = x[2, 2] + 90.0
    x = jnp.asarray(x, dtype)
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    others = np.exp(x64 - x64[y, y][:, None])
    others[y, y] = 0.0
    keep = np.arange(12) != 4
    # `pinned` makes a new function: jit(jaxloss.cross_entropy) shares one trace cache.
    got = jax.jit(_impl.pinned(jaxloss.cross_entropy, "xla_cpu", cfg))(
        x, jnp.asarray(y), where=jnp.asarray(keep)
    )
    np.testing.assert_allclose(got, np.where(keep, np.log1p(others.sum(-1)), 0.0), rtol=2e-6)


@pytest.mark.slow  # [4, 40000] and longer rows, every path
@impls
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rows_longer_than_32k_classes(impl, dtype):
    # 40000 classes: XLA:CPU's default config cuts these rows into pieces, and bf16 at 120000
    # logits takes the label shift with a cond; every function is checked against float64.
    rng = np.random.default_rng(5)
    k = 40000
    x = jnp.asarray(rng.normal(size=(3, k)) * 3, dtype)
    y = jnp.asarray(rng.integers(0, k, size=3))
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    loss, g = _pin(impl, jax.value_and_grad(lambda x: _ce_sum(x, y, label_smoothing=0.1)))(x)
    lse, h = _pin(impl, lambda: (jaxloss.logsumexp(x), jaxloss.softmax_entropy(x)))()
    # XLA:CPU runs a variadic reduction as one sequential loop per row: the portable kernel's row
    # sum of 40000 terms is off by ~√K ulps there (2.4e-5 seen), where accelerators reduce in a
    # tree and XLA:CPU's own kernel in vectorised partial sums.
    rtol = 5e-5 if impl in ("portable", "xla_gpu") else 1e-6  # xla_gpu: long rows are portable
    want = ref.cross_entropy(x64, np.asarray(y), label_smoothing=0.1).sum()
    np.testing.assert_allclose(float(loss), want, rtol=max(rtol, 1e-5))
    p = ref.softmax(x64)
    want_g = 0.9 * (p - np.eye(k)[np.asarray(y)]) + 0.1 * (p - 1.0 / k)
    tol = rtol if dtype == jnp.float32 else 8e-3
    np.testing.assert_allclose(np.asarray(g, np.float64), want_g, atol=tol * np.abs(want_g).max())
    np.testing.assert_allclose(lse, ref.logsumexp(x64), rtol=rtol)
    np.testing.assert_allclose(h, ref.softmax_entropy(x64), rtol=max(rtol, 1e-5))


def test_more_classes_than_a_float_index_takes_the_portable_kernel():
    # The XLA:CPU kernel's labels index a float32 iota; past `max_float_index` classes it hands
    # the rows to the portable kernel instead of rounding a label.
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 10)), jnp.float32)
    y = jnp.array([0, 3, 9, 5])
    want = ref.cross_entropy(np.asarray(x), np.asarray(y))
    few = CpuConfig(max_float_index=8)
    got, g = _impl.pinned(jax.value_and_grad(lambda x: _ce_sum(x, y)), "xla_cpu", few)(x)
    jaxpr = str(jax.make_jaxpr(_impl.pinned(lambda x: _ce_sum(x, y), "xla_cpu", few))(x))
    tuned = str(jax.make_jaxpr(_impl.pinned(lambda x: _ce_sum(x, y), "xla_cpu"))(x))
    np.testing.assert_allclose(float(got), want.sum(), rtol=1e-6)
    # The tuned kernel reads the label's logit through an optimization barrier; the portable one
    # (whose row statistics are then XLA:CPU's) does not.
    assert "optimization_barrier" in tuned and "optimization_barrier" not in jaxpr
    np.testing.assert_allclose(g, ref.softmax(x) - np.eye(10)[np.asarray(y)], atol=1e-6)
    # No class-count limit at trace time (2^24 classes traced, not allocated).
    xs = jax.ShapeDtypeStruct((1, 2**24), jnp.float32)
    ys = jax.ShapeDtypeStruct((1,), jnp.int32)
    assert jax.eval_shape(jaxloss.cross_entropy, xs, ys).shape == (1,)


# --- what the backward pass keeps -----------------------------------------------------------------


def _residual_bytes(fn, *args):
    return sum(
        int(np.prod(aval.shape)) * aval.dtype.itemsize
        for aval, source in saved_residuals(fn, *args)
        if "argument" not in source
    )


@pytest.mark.parametrize("impl", ["portable", "xla_cpu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_residuals(impl, dtype):
    # bf16 logits above 2^22 elements (below, XLA:CPU keeps a float32 exp(x − m), cache-sized).
    b = 64 if dtype == jnp.float32 else 4200
    x = jnp.asarray(np.random.default_rng(0).normal(size=(b, 1000)), dtype)
    y = jnp.arange(b) % 1000
    theirs = _residual_bytes(
        lambda x: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(x, y)), x
    )
    ours = _residual_bytes(_pin(impl, lambda x: _ce_sum(x, y)), x)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(1, 1000)), x.dtype)
    lsm = _residual_bytes(_pin(impl, lambda x: jnp.sum(jaxloss.log_softmax(x) * w)), x)
    if impl == "xla_cpu" and dtype == jnp.float32:
        # The XLA:CPU kernel keeps exp(x − m), as Optax does, and scales it in place: that one
        # array and per-row numbers.
        assert b * 1000 * 4 <= ours <= b * 1000 * 4 + b * 64, (ours, theirs)
    else:
        # Only per-row numbers beyond the logits: the backward pass recomputes exp.
        assert ours <= b * 64, ours
        assert ours < theirs
    # log_softmax keeps its output, in float32 (what the tangent needs), no other [B, K] array.
    assert lsm <= b * 1000 * 4 + b * 64, lsm


@pytest.mark.parametrize("impl", ["portable", "xla_cpu"])
def test_compiled_scratch_is_small(impl):
    # No [B, K] scratch beyond the gradient's own buffer: XLA:CPU writes exp(x − m) into it and
    # scales it there; the portable kernel writes the gradient in its second pass.
    x = jnp.zeros((512, 4000), jnp.float32)
    y = jnp.zeros((512,), jnp.int32)
    vg = jax.jit(_pin(impl, jax.value_and_grad(lambda x: _ce_sum(x, y))))
    stats = vg.lower(x).compile().memory_analysis()
    assert stats.temp_size_in_bytes <= x.size * 4 * 0.05, stats
    assert stats.output_size_in_bytes <= x.size * 4 + 64, stats


def test_default_dispatch_is_the_cpu_kernel_on_a_cpu():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(64, 300)), jnp.float32)
    y = jnp.asarray(np.arange(64) % 300)

    def value_and_grad(pinned):
        vg = jax.value_and_grad(lambda x: _ce_sum(x, y, label_smoothing=0.1))
        return jax.jit(_pin(pinned, vg))(x)

    for got, want in zip(value_and_grad("default"), value_and_grad("xla_cpu"), strict=True):
        np.testing.assert_array_equal(got, want)


def test_default_dispatch_costs_no_more_than_the_cpu_kernel():
    # `platform_dependent` merges the residuals of its branches when it is linearized; compiled
    # for one platform the other branch is gone, and so must its residuals be.
    x = jnp.zeros((512, 4000), jnp.float32)
    y = jnp.zeros((512,), jnp.int32)

    def memory(pinned):
        vg = jax.value_and_grad(lambda x: _ce_sum(x, y, label_smoothing=0.1))
        m = jax.jit(_pin(pinned, vg)).lower(x).compile().memory_analysis()
        return m.temp_size_in_bytes + m.output_size_in_bytes

    assert memory("default") <= memory("xla_cpu")


def test_xla_cpu_keeps_the_barrier_on_a_recomputed_gradient():
    # Accelerators let XLA merge the recomputed gradient pass with the forward statistics (one
    # read of the logits fewer); XLA:CPU's merged kernels keep a second [B, K] float32 buffer
    # (and ran slower: docs/cpu-tuning.md), so its config keeps the optimization barrier.
    x = jax.ShapeDtypeStruct((1024, 1000), jnp.bfloat16)

    def scratch(config):
        vg = jax.value_and_grad(lambda a: jnp.sum(jaxloss.logsumexp(a)))
        f = jax.jit(_impl.pinned(vg, "xla_cpu", config))
        return f.lower(x).compile().memory_analysis().temp_size_in_bytes

    merged = scratch(dataclasses.replace(CpuConfig(), tangent_barrier=False))
    kept = scratch(CpuConfig())
    assert kept <= merged - 1000 * 1000 * 4, (kept, merged)
