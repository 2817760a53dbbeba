"""softmax_kl_divergence: float64 references of every mode and gradient, Optax and PyTorch
parity, zero-mass classes, masks, temperatures, and argument errors.

The dtype/transform matrix (f32/bf16/f16, jit, vmap, grad, jvp, hessian, jacobians, every
kernel) runs three cases of it from tests/cases.py; here are the rest.
"""

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
from tests import reference as ref

kd = jaxloss.softmax_kl_divergence
B, K = 5, 9
MODES = [0.0, 0.1, 0.5, 0.9, 1.0]


def _pair(seed=0, shape=(B, K), scale=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) * scale, rng.normal(size=shape) * scale * 1.5


def _plain(s, t, temperature, beta):
    """The formula by autodiff-able float64 JAX, for gradients of both arguments."""
    lq = jax.nn.log_softmax(s / temperature, -1)
    lp = jax.nn.log_softmax(t / temperature, -1)
    kl = lambda la, lb: jnp.sum(jnp.exp(la) * (la - lb), -1)  # noqa: E731
    if beta == 0.0:
        return kl(lp, lq)
    if beta == 1.0:
        return kl(lq, lp)
    lm = jnp.logaddexp(lp + jnp.log(beta), lq + jnp.log1p(-beta))
    return beta * kl(lp, lm) + (1 - beta) * kl(lq, lm)


def _grads64(f, s, t, ct):
    with jax.enable_x64(True):
        g = jax.grad(lambda a, b: jnp.sum(f(a, b) * ct), argnums=(0, 1))(
            jnp.asarray(s, jnp.float64), jnp.asarray(t, jnp.float64)
        )
        return tuple(np.asarray(x) for x in g)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
@pytest.mark.parametrize("beta", MODES)
def test_values_and_both_gradients_against_float64(beta, temperature):
    s, t = _pair(1)
    ct = np.random.default_rng(2).normal(size=B)
    got = kd(jnp.float32(s), jnp.float32(t), temperature=temperature, beta=beta)
    want = ref.softmax_kl_divergence(
        np.float32(s), np.float32(t), temperature=temperature, beta=beta
    )
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    gs, gt = jax.grad(
        lambda a, b: jnp.sum(kd(a, b, temperature=temperature, beta=beta) * ct), argnums=(0, 1)
    )(jnp.float32(s), jnp.float32(t))
    ws, wt = _grads64(lambda a, b: _plain(a, b, temperature, beta), s, t, ct)
    np.testing.assert_allclose(gs, ws, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gt, wt, rtol=1e-4, atol=1e-6)
    # Under x64 the function itself is float64 and agrees to float64 rounding.
    with jax.enable_x64(True):
        s64, t64 = jnp.asarray(s), jnp.asarray(t)
        v64 = kd(s64, t64, temperature=temperature, beta=beta)
        assert v64.dtype == jnp.float64
        np.testing.assert_allclose(
            v64, ref.softmax_kl_divergence(s, t, temperature=temperature, beta=beta), rtol=1e-12
        )
        g64 = jax.grad(lambda a: jnp.sum(kd(a, t64, temperature=temperature, beta=beta) * ct))(s64)
        np.testing.assert_allclose(g64, ws, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_forward_kl_student_gradient_is_q_minus_p_over_t(temperature):
    s, t = _pair(3)
    g = jax.grad(lambda a: jnp.sum(kd(a, jnp.float32(t), temperature=temperature)))(jnp.float32(s))
    q = ref.softmax(s / temperature)
    p = ref.softmax(t / temperature)
    np.testing.assert_allclose(g, (q - p) / temperature, atol=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_forward_kl_matches_optax_and_torch_batchmean(temperature):
    s, t = _pair(4, shape=(6, 11))
    s32, t32 = jnp.float32(s), jnp.float32(t)
    got = kd(s32, t32, temperature=temperature)
    want_optax = optax.losses.kl_divergence(
        jax.nn.log_softmax(s32 / temperature), jax.nn.softmax(t32 / temperature)
    )
    np.testing.assert_allclose(got, want_optax, rtol=1e-5, atol=1e-6)
    mean = kd(s32, t32, temperature=temperature, reduction="mean")
    ts, tt = torch.tensor(s), torch.tensor(t)
    want_torch = torch.nn.functional.kl_div(
        torch.log_softmax(ts / temperature, -1),
        torch.log_softmax(tt / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )
    np.testing.assert_allclose(mean, want_torch.item(), rtol=1e-5)
    # And the gradient w.r.t. the student, from torch's autograd (float64).
    ts.requires_grad_(True)
    torch.nn.functional.kl_div(
        torch.log_softmax(ts / temperature, -1),
        torch.log_softmax(tt / temperature, -1),
        log_target=True,
        reduction="batchmean",
    ).backward()
    g = jax.grad(lambda a: kd(a, t32, temperature=temperature, reduction="mean"))(s32)
    assert ts.grad is not None
    np.testing.assert_allclose(g, ts.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_reverse_kl_matches_torch_with_roles_swapped():
    s, t = _pair(5)
    got = kd(jnp.float32(s), jnp.float32(t), beta=1.0, temperature=2.0)
    want = torch.nn.functional.kl_div(
        torch.log_softmax(torch.tensor(t) / 2.0, -1),
        torch.log_softmax(torch.tensor(s) / 2.0, -1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_jsd_beta_convention():
    s, t = _pair(6)
    s32, t32 = jnp.float32(s), jnp.float32(t)
    # Swapping student and teacher swaps β for 1 − β (the mixture weights go with the roles).
    for beta in MODES:
        np.testing.assert_allclose(
            kd(s32, t32, beta=beta), kd(t32, s32, beta=1 - beta), rtol=1e-5, atol=1e-6
        )
    # β = 1/2 is the symmetric Jensen-Shannon divergence, bounded by log 2.
    p, q = ref.softmax(t), ref.softmax(s)
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log(p / m), -1) + 0.5 * np.sum(q * np.log(q / m), -1)
    np.testing.assert_allclose(kd(s32, t32, beta=0.5), js, rtol=1e-5)
    assert np.all(np.asarray(kd(s32 * 50, t32 * 50, beta=0.5)) <= np.log(2) + 1e-6)
    # Small β: β·KL(p‖q) to first order (the endpoints are conventions, not limits), and
    # (1 − β)·KL(q‖p) near β = 1; in float64, where the O(β²) terms are below rounding.
    with jax.enable_x64(True):
        s64, t64 = jnp.asarray(s), jnp.asarray(t)
        for eps in (1e-7, 1e-9):
            np.testing.assert_allclose(kd(s64, t64, beta=eps) / eps, kd(s64, t64), rtol=1e-4)
            np.testing.assert_allclose(
                kd(s64, t64, beta=1 - eps) / eps, kd(s64, t64, beta=1.0), rtol=1e-4
            )


def test_teacher_zero_mass_class_is_finite_with_zero_gradient():
    s, t = _pair(7)
    t = t.copy()
    t[:, 2] = -np.inf
    t[0, 5] = -np.inf
    s32, t32 = jnp.float32(s), jnp.float32(t)
    for beta in (0.0, 0.3):
        got = kd(s32, t32, beta=beta)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(
            got, ref.softmax_kl_divergence(np.float32(s), np.float32(t), beta=beta), rtol=1e-5
        )
        gs, gt = jax.grad(lambda a, b, beta=beta: jnp.sum(kd(a, b, beta=beta)), argnums=(0, 1))(
            s32, t32
        )
        assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt))
        assert np.all(np.asarray(gt)[:, 2] == 0) and gt[0, 5] == 0
    # Forward KL: the student's gradient is still q − p, with p = 0 on that class.
    gs = jax.grad(lambda a: jnp.sum(kd(a, t32)))(s32)
    np.testing.assert_allclose(gs, ref.softmax(s) - ref.softmax(t), atol=1e-6)
    # Both −inf on a class: it is outside both supports, for every mode (reverse KL included).
    s2 = s.copy()
    s2[:, 2] = -np.inf
    for beta in MODES:
        assert np.all(np.isfinite(kd(jnp.float32(s2), t32.at[0, 5].set(1.0), beta=beta)))


def test_student_zero_where_teacher_has_mass_is_inf_with_finite_student_gradient():
    s, t = _pair(8)
    s = s.copy()
    s[1, 3] = -np.inf
    s32, t32 = jnp.float32(s), jnp.float32(t)
    loss = kd(s32, t32)
    assert loss[1] == np.inf and np.all(np.isfinite(np.delete(np.asarray(loss), 1)))
    gs = jax.grad(lambda a: jnp.sum(kd(a, t32)))(s32)
    np.testing.assert_allclose(gs, ref.softmax(s) - ref.softmax(t), atol=1e-6)
    gt = jax.grad(lambda b: jnp.sum(kd(s32, b)))(t32)
    assert np.all(np.isnan(gt[1])) and np.all(np.isfinite(np.delete(np.asarray(gt), 1, 0)))
    # Reverse KL is finite there (q = 0 is outside its sum); JSD is finite everywhere.
    assert np.all(np.isfinite(kd(s32, t32, beta=1.0)))
    assert np.all(np.isfinite(jax.grad(lambda a: jnp.sum(kd(a, t32, beta=0.5)))(s32)))
    # Reverse KL with the teacher's zero under the student's mass: +inf, NaN student gradient.
    loss = kd(t32, s32, beta=1.0)
    assert loss[1] == np.inf
    g = jax.grad(lambda a: jnp.sum(kd(a, s32, beta=1.0)))(t32)
    assert np.all(np.isnan(g[1])) and np.all(np.isfinite(np.delete(np.asarray(g), 1, 0)))


@pytest.mark.parametrize("beta", MODES)
def test_large_logits_stay_exact(beta):
    s, t = _pair(9, scale=1.0)
    s, t = s * 300 + 1e4, t * 300 - 2e4  # huge, far apart offsets: only differences matter
    got = kd(jnp.float32(s), jnp.float32(t), beta=beta, temperature=2.0)
    want = ref.softmax_kl_divergence(np.float32(s), np.float32(t), beta=beta, temperature=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    g = jax.grad(lambda a: jnp.sum(kd(a, jnp.float32(t), beta=beta)))(jnp.float32(s))
    assert np.all(np.isfinite(g))


def test_identical_distributions_give_zero_and_zero_gradient():
    s, _ = _pair(10)
    for beta in MODES:
        v, g = jax.value_and_grad(lambda a, beta=beta: jnp.sum(kd(a, jnp.float32(s), beta=beta)))(
            jnp.float32(s)
        )
        assert abs(float(v)) < 1e-5
        np.testing.assert_allclose(g, 0.0, atol=1e-6)


def test_nan_in_nan_out_and_plus_inf_gives_nan():
    s, t = _pair(11)
    for beta in (0.0, 0.5, 1.0):
        for which in ("s", "t"):
            a, b = s.copy(), t.copy()
            (a if which == "s" else b)[2, 4] = np.nan
            out = np.asarray(kd(jnp.float32(a), jnp.float32(b), beta=beta))
            assert np.isnan(out[2]) and np.all(np.isfinite(np.delete(out, 2)))
        a = s.copy()
        a[2, 4] = np.inf
        assert np.isnan(kd(jnp.float32(a), jnp.float32(t), beta=beta)[2])


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_example_mask_drops_padding_whatever_its_logits(beta):
    s, t = _pair(12)
    labels = np.array([3, -100, 1, -100, 0])
    s, t = s.copy(), t.copy()
    s[1] = np.nan
    t[3] = -np.inf
    s[3, 0] = np.inf
    keep = jnp.asarray(labels != -100)
    s32, t32 = jnp.float32(s), jnp.float32(t)
    loss = kd(s32, t32, where=keep, beta=beta)
    full = ref.softmax_kl_divergence(np.float32(s), np.float32(t), beta=beta)
    np.testing.assert_allclose(loss, np.where(labels != -100, full, 0.0), rtol=1e-5)
    mean = kd(s32, t32, where=keep, beta=beta, reduction="mean")
    np.testing.assert_allclose(mean, full[labels != -100].mean(), rtol=1e-5)
    total, count = kd(s32, t32, where=keep, beta=beta, reduction="sum_and_count")
    assert float(count) == 3.0
    np.testing.assert_allclose(total / count, mean, rtol=1e-6)
    gs, gt = jax.grad(
        lambda a, b: kd(a, b, where=keep, beta=beta, reduction="mean"), argnums=(0, 1)
    )(s32, t32)
    assert np.all(np.asarray(gs)[[1, 3]] == 0) and np.all(np.asarray(gt)[[1, 3]] == 0)
    assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt))
    # Nothing kept: 0 with gradient 0.
    none = jnp.zeros(B, bool)
    v, g = jax.value_and_grad(lambda a: kd(a, t32, where=none, reduction="mean"))(s32)
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0)


def test_class_mask_renormalises_both_and_empty_rows_are_not_counted():
    s, t = _pair(13)
    rng = np.random.default_rng(14)
    keep = rng.random((B, K)) < 0.6
    keep[:, 0] = True
    keep[4] = False  # a row with nothing left
    s32, t32 = jnp.float32(s), jnp.float32(t)
    s_nan = s32.at[4].set(jnp.nan).at[0].set(jnp.where(jnp.asarray(keep[0]), s32[0], jnp.nan))
    for beta in (0.0, 0.5, 1.0):
        got = kd(s_nan, t32, where=jnp.asarray(keep), beta=beta)
        want = ref.softmax_kl_divergence(np.float32(s), np.float32(t), beta=beta, where=keep)
        np.testing.assert_allclose(got[:4], want[:4], rtol=1e-5, atol=1e-7)
        assert got[4] == 0
        mean = kd(s_nan, t32, where=jnp.asarray(keep), beta=beta, reduction="mean")
        np.testing.assert_allclose(mean, want[:4].mean(), rtol=1e-5)
        g = jax.grad(lambda a, beta=beta: jnp.sum(kd(a, t32, where=jnp.asarray(keep), beta=beta)))(
            s_nan
        )
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~keep] == 0)


def test_bf16_inputs_are_computed_in_float32():
    s, t = _pair(15)
    sb, tb = jnp.bfloat16(s), jnp.bfloat16(t)
    for beta in (0.0, 0.5, 1.0):
        out = kd(sb, tb, beta=beta, temperature=2.0)
        assert out.dtype == jnp.float32
        want = ref.softmax_kl_divergence(
            np.asarray(sb, np.float64), np.asarray(tb, np.float64), beta=beta, temperature=2.0
        )
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
        g = jax.grad(lambda a, beta=beta: jnp.sum(kd(a, tb, beta=beta)))(sb)
        assert g.dtype == jnp.bfloat16
    # Mixed bf16 student and f32 teacher: computed in f32.
    assert kd(sb, jnp.float32(t)).dtype == jnp.float32


@pytest.mark.slow  # Hessians
def test_jit_vmap_jvp_hessian_and_other_axes():
    s, t = _pair(16, shape=(3, 4, K))
    s32, t32 = jnp.float32(s), jnp.float32(t)
    f = lambda a, b: kd(a, b, beta=0.3, temperature=1.5)  # noqa: E731
    eager = f(s32, t32)
    np.testing.assert_allclose(jax.jit(f)(s32, t32), eager, rtol=2e-6)
    np.testing.assert_allclose(jax.vmap(f)(s32, t32), eager, rtol=2e-6)
    # Classes on axis 1, and on two axes at once.
    moved = kd(jnp.moveaxis(s32, -1, 1), jnp.moveaxis(t32, -1, 1), axis=1, beta=0.3,
               temperature=1.5)  # fmt: skip
    np.testing.assert_allclose(moved, eager, rtol=2e-6)
    two = kd(s32, t32, axis=(1, 2))
    want = ref.softmax_kl_divergence(np.float32(s).reshape(3, -1), np.float32(t).reshape(3, -1))
    np.testing.assert_allclose(two, want, rtol=1e-5)
    # jvp in both arguments against float64 autodiff.
    rng = np.random.default_rng(17)
    ds, dt = rng.normal(size=s.shape), rng.normal(size=t.shape)
    _, got = jax.jvp(f, (s32, t32), (jnp.float32(ds), jnp.float32(dt)))
    with jax.enable_x64(True):
        _, want = jax.jvp(lambda a, b: _plain(a, b, 1.5, 0.3), (s, t), (ds, dt))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # Hessian w.r.t. the teacher (the matrix tests the student's).
    h = jax.hessian(lambda b: jnp.sum(f(s32[0, :2], b)))(t32[0, :2])
    with jax.enable_x64(True):
        wh = jax.hessian(lambda b: jnp.sum(_plain(s[0, :2], b, 1.5, 0.3)))(t[0, :2])
    np.testing.assert_allclose(h, wh, rtol=1e-4, atol=1e-6)


def test_frozen_teacher_and_saved_residuals_are_only_the_inputs():
    s, t = _pair(18, shape=(64, 128))
    s32, t32 = jnp.float32(s), jnp.bfloat16(t)
    f = lambda a: jnp.sum(kd(a, jax.lax.stop_gradient(t32), beta=0.5, temperature=2.0))  # noqa: E731
    res = saved_residuals(f, s32)
    shapes = [(tuple(aval.shape), str(aval.dtype)) for aval, _ in res]
    big = [sh for sh in shapes if np.prod(sh[0]) > 64]
    # Only the logits themselves (in their own dtypes), no float32 [B, K] intermediate; the rest
    # are per-row numbers (each softmax's shift and log-sum).
    assert sorted(big) == sorted([((64, 128), "float32"), ((64, 128), "bfloat16")]), shapes
    assert all(sh[0] in ((64, 1), (64,), ()) for sh in shapes if sh not in big), shapes


def test_temperature_scales_the_gradient_as_one_over_t_squared_for_large_t():
    # Hinton et al.'s reason for T²: for zero-mean logits and large T the forward-KL gradient is
    # (s − t)/(K·T²), so T² times it is the same whatever T (we leave that factor to the caller).
    s, t = _pair(19)
    s, t = s - s.mean(-1, keepdims=True), t - t.mean(-1, keepdims=True)
    for temperature in (300.0, 1000.0):
        g = jax.grad(lambda a, T=temperature: jnp.sum(kd(a, jnp.float32(t), temperature=T)))(
            jnp.float32(s)
        )
        np.testing.assert_allclose(temperature**2 * np.asarray(g), (s - t) / K, rtol=0.05,
                                   atol=20 / temperature)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"temperature": 0.0}, ValueError, r"softmax_kl_divergence: `temperature` must be"),
        ({"temperature": -1.0}, ValueError, r"`temperature` must be a finite number in \(0"),
        ({"temperature": float("nan")}, ValueError, "`temperature`"),
        ({"temperature": float("inf")}, ValueError, "`temperature`"),
        ({"temperature": [2.0]}, TypeError, "`temperature` must be a number"),
        ({"beta": -0.1}, ValueError, r"softmax_kl_divergence: `beta` must be .*\[0, 1\]"),
        ({"beta": 1.5}, ValueError, r"`beta` must be a finite number in \[0, 1\]"),
        ({"beta": None}, TypeError, "`beta` must be a number"),
        ({"reduction": "batchmean"}, ValueError, "unknown `reduction`='batchmean'"),
        ({"axis": 2}, ValueError, r"`axis`=2 is out of range for `student_logits`"),
        ({"where": jnp.ones((3,), bool)}, ValueError, r"`where` with shape \(3,\)"),
        ({"where": jnp.ones((4,))}, TypeError, "`where` must be a boolean mask"),
    ],
)
def test_bad_arguments_name_function_and_argument(kwargs, exc, pattern):
    s = jnp.zeros((4, 5))
    with pytest.raises(exc, match=pattern):
        kd(s, s, **kwargs)


def test_bad_inputs_name_function_argument_and_shapes():
    with pytest.raises(
        ValueError,
        match=r"softmax_kl_divergence: `student_logits` and "
        r"`teacher_logits` must have the same shape, got \(4, 5\) and \(4, 6\)",
    ):
        kd(jnp.zeros((4, 5)), jnp.zeros((4, 6)))  # fmt: skip
    with pytest.raises(TypeError, match=r"`teacher_logits` must have a floating dtype, got int32"):
        kd(jnp.zeros((4, 5)), jnp.zeros((4, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"`temperature` must be a scalar, got a traced value"):
        jax.jit(lambda s, T: kd(s, s, temperature=T))(jnp.zeros((4, 5)), jnp.ones(4))
