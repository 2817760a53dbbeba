"""Tests for `linear_cross_entropy`: values against a float64 NumPy reference, gradients against
float64 autodiff of the unfused formula, padding, masking, memory, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxloss import _linear_cross_entropy as lce_module
from jaxloss._linear_cross_entropy import linear_cross_entropy
from tests import reference as ref

REDUCTIONS = ("none", "sum", "mean", "sum_and_count")


def _option_grid(reductions) -> list:
    """(case, reduction) over every option case and reduction: in the fast tier each case with
    one reduction and each reduction with several cases (a diagonal); the rest of the grid is
    marked `slow` (`make test-all`)."""
    params = []
    for i, case in enumerate(sorted(CASES)):
        for j, reduction in enumerate(reductions):
            slow = j != i % len(reductions)
            marks = pytest.mark.slow if slow else ()
            params.append(pytest.param(case, reduction, marks=marks, id=f"{case}-{reduction}"))
    return params


@pytest.fixture(autouse=True)
def _strict_ranks():
    # A (B, 1) vs (B,) slip inside the kernels would broadcast silently; make it an error.
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def small_blocks(monkeypatch):
    """Vocabulary blocks of 16 columns, so small vocabularies span several (uneven) blocks."""
    monkeypatch.setattr(lce_module, "_VOCAB_BLOCK", 16)


# ----------------------------------------------------------------------------------------------
# References


def _logits(hidden, weight, bias, xp):
    z = xp.reshape(hidden, (-1, weight.shape[0])) @ weight
    return z if bias is None else z + bias[None, :]


def ref_np(hidden, weight, labels, where=None, *, bias=None, chunk_size=None, **options):
    """The unfused loss in float64: the shared reference on `hidden @ weight + bias`."""
    del chunk_size
    h, w = np.asarray(hidden, np.float64), np.asarray(weight, np.float64)
    z = _logits(h, w, None if bias is None else np.asarray(bias, np.float64), np)
    y = np.asarray(labels).reshape(-1)
    if where is not None:
        where = np.broadcast_to(np.asarray(where), np.shape(labels)).reshape(-1)
    out = ref.cross_entropy(z, y, where=where, **options)
    return out.reshape(np.shape(labels)) if options.get("reduction", "none") == "none" else out


def unfused_jnp(hidden, weight, labels, where=None, *, bias=None, chunk_size=None, **options):
    """The unfused formula in jnp, for autodiff (in-range labels only)."""
    del chunk_size
    y = labels.reshape(-1)
    if where is not None:
        where = jnp.broadcast_to(where, labels.shape).reshape(-1)
    out = ref.plain_cross_entropy(_logits(hidden, weight, bias, jnp), y, where=where, **options)
    return out.reshape(labels.shape) if options.get("reduction", "none") == "none" else out


CASES = {
    "plain": {},
    "bias": {"bias": True},
    "ignore_index": {"ignore_index": -100},
    "where": {"where": True},
    "smoothing": {"label_smoothing": 0.1},
    "class_weights": {"class_weights": True},
    "smoothing_class_weights": {"label_smoothing": 0.3, "class_weights": True},
    "z_loss": {"z_loss": 0.05},
    "softcap": {"logit_softcap": 1.5},
    "everything": {
        "bias": True,
        "ignore_index": 3,
        "where": True,
        "label_smoothing": 0.2,
        "class_weights": True,
        "z_loss": 0.01,
        "logit_softcap": 2.0,
    },
}


def make(case, seed=0, batch=(3, 5), d=8, v=37, dtype=np.float32, scale=1.0):
    """Inputs with unit-scale logits (where a padding or masking error would show)."""
    rng = np.random.default_rng(seed)
    opts = dict(CASES[case])
    hidden = rng.standard_normal((*batch, d))
    weight = rng.standard_normal((d, v)) * scale / np.sqrt(d)
    labels = rng.integers(0, v, batch)
    kw = {}
    if opts.pop("bias", False):
        kw["bias"] = rng.standard_normal(v).astype(dtype)
    if "ignore_index" in opts:
        ii = opts.pop("ignore_index")
        flat = labels.reshape(-1)
        flat[::4] = ii
        kw["ignore_index"] = ii
    if opts.pop("where", False):
        kw["where"] = jnp.asarray(rng.random(batch) > 0.3)
    if opts.pop("class_weights", False):
        kw["class_weights"] = rng.uniform(0.2, 2.0, v).astype(dtype)
    kw.update(opts)
    args = (hidden.astype(dtype), weight.astype(dtype), labels.astype(np.int32))
    return args, kw


def _as_jnp(kw):
    return {k: jnp.asarray(x) if isinstance(x, np.ndarray) else x for k, x in kw.items()}


def _close(a, b, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol, atol)


# ----------------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize(("v", "block"), [(33, 32), (37, 16), (5, 4), (4096 + 3, 4096)])
def test_uneven_vocabulary_padding_never_enters_lse(monkeypatch, v, block):
    """Unit-scale logits: a padded zero column in the log-sum-exp would add ~log(1+1/V)·V_pad,
    a column counted twice (the shifted last block) would add ~1/V per column."""
    monkeypatch.setattr(lce_module, "_VOCAB_BLOCK", block)
    rng = np.random.default_rng(7)
    h = rng.standard_normal((6, 4)).astype(np.float32)
    w = (rng.standard_normal((4, v)) / 2).astype(np.float32)
    y = rng.integers(0, v, 6)
    got = linear_cross_entropy(h, w, y)
    want = ref_np(h, w, y)
    _close(got, want, 1e-6, 1e-6)
    got_sum, _ = jax.value_and_grad(
        lambda w: linear_cross_entropy(h, w, y, reduction="sum", chunk_size=4)
    )(w)
    _close(got_sum, want.sum(), 1e-6)


@pytest.mark.slow  # a fresh program per drawn shape
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 20),
    v=st.integers(1, 50),
    chunk=st.integers(1, 25),
    block=st.integers(1, 60),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_chunking_gives_the_same_loss(n, v, chunk, block, seed):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, 5)).astype(np.float32)
    w = rng.standard_normal((5, v)).astype(np.float32)
    y = rng.integers(0, v, n)
    old = lce_module._VOCAB_BLOCK
    lce_module._VOCAB_BLOCK = block
    try:
        with jax.numpy_rank_promotion("raise"):
            got = linear_cross_entropy(h, w, y, chunk_size=chunk)
            total, grads = jax.value_and_grad(
                lambda h: linear_cross_entropy(h, w, y, reduction="sum", chunk_size=chunk)
            )(h)
    finally:
        lce_module._VOCAB_BLOCK = old
    want = ref_np(h, w, y)
    _close(got, want, 1e-5, 1e-5)
    _close(total, want.sum(), 1e-5)
    _, ref_grad = jax.value_and_grad(lambda h: unfused_jnp(h, w, y, reduction="sum"))(h)
    _close(grads, ref_grad, 1e-4, 1e-5)


def test_out_of_range_labels_give_nan_not_a_number():
    args, _ = make("plain")
    h, w, y = args
    y = y.copy()
    y[0, 0], y[1, 2] = 37, -1
    loss = linear_cross_entropy(h, w, y)
    assert np.isnan(loss[0, 0]) and np.isnan(loss[1, 2])
    assert np.isfinite(np.delete(np.asarray(loss).reshape(-1), [0, 7])).all()
    for reduction in ("sum", "mean"):
        assert np.isnan(linear_cross_entropy(h, w, y, reduction=reduction))
    g = jax.grad(lambda w: linear_cross_entropy(h, w, y, reduction="sum"))(w)
    assert np.isnan(g).any()
    # The same labels are fine when ignored or masked.
    ok = linear_cross_entropy(h, w, y, ignore_index=-1, where=jnp.asarray(y != 37))
    assert np.isfinite(ok).all() and ok[0, 0] == 0 and ok[1, 2] == 0


def test_all_masked_mean_is_zero_with_zero_gradients():
    args, _ = make("plain")
    h, w, y = args
    where = jnp.zeros(y.shape, bool)
    loss, (gh, gw) = jax.value_and_grad(
        lambda h, w: linear_cross_entropy(h, w, y, where, reduction="mean"), argnums=(0, 1)
    )(h, w)
    assert loss == 0
    assert not np.asarray(gh).any() and not np.asarray(gw).any()
    total, count = linear_cross_entropy(h, w, y, where, reduction="sum_and_count")
    assert total == 0 and count == 0


def test_masked_examples_have_zero_gradient():
    args, kw = make("where")
    h, w, y = args
    where = np.asarray(kw["where"])
    gh = jax.grad(lambda h: linear_cross_entropy(h, w, y, where, reduction="mean"))(h)
    assert not np.asarray(gh)[~where].any()
    assert np.abs(np.asarray(gh)[where]).min() > 0


def test_empty_batch():
    h = np.zeros((0, 8), np.float32)
    w = np.ones((8, 5), np.float32)
    y = np.zeros((0,), np.int32)
    assert linear_cross_entropy(h, w, y).shape == (0,)
    assert linear_cross_entropy(h, w, y, reduction="mean") == 0
    gw = jax.grad(lambda w: linear_cross_entropy(h, w, y, reduction="sum"))(w)
    assert gw.shape == w.shape and not np.asarray(gw).any()


def test_jit_and_vmap():
    (h, w, y), kw = make("everything")
    kw = _as_jnp(kw)
    where = kw.pop("where")

    def f(h, y, where):
        return linear_cross_entropy(h, w, y, where, **kw)

    per_row = jnp.stack([f(h[i], y[i], where[i]) for i in range(h.shape[0])])
    _close(jax.jit(jax.vmap(f))(h, y, where), per_row, 1e-6, 1e-7)
    _close(per_row, ref_np(h, w, y, where, **kw), 1e-5, 1e-6)


# ----------------------------------------------------------------------------------------------
# Gradients


def _grad_args(kw):
    names = ["hidden", "weight"] + [k for k in ("bias", "class_weights") if k in kw]
    return names


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(("case", "reduction"), _option_grid(["sum", "mean", "none"]))
def test_gradients_match_float64_autodiff(case, reduction):
    """float64 end to end: the hand-written rules against autodiff of the unfused formula."""
    with jax.enable_x64(True):
        args, kw = make(case, seed=3, dtype=np.float64)
        kw = _as_jnp(kw)
        h, w, y = (jnp.asarray(a) for a in args)
        names = _grad_args(kw)
        ct = jax.random.normal(jax.random.key(5), y.shape, jnp.float64)

        def wrap(fn):
            def loss(params):
                out = fn(
                    params["hidden"],
                    params["weight"],
                    y,
                    **{**kw, **{k: params[k] for k in names[2:]}},
                    reduction=reduction,
                    chunk_size=4,
                )
                return jnp.sum(out * ct) if reduction == "none" else out

            return loss

        params = {"hidden": h, "weight": w, **{k: kw[k] for k in names[2:]}}
        v_got, g_got = jax.value_and_grad(wrap(linear_cross_entropy))(params)
        v_want, g_want = jax.value_and_grad(wrap(unfused_jnp))(params)
        _close(v_got, v_want, 1e-12)
        for k in names:
            assert g_got[k].dtype == jnp.float64
            _close(g_got[k], g_want[k], 1e-10, 1e-12)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_float32_gradients_within_1e4_of_float64(reduction):
    (h, w, y), kw = make("everything", seed=4, batch=(64,), d=32, v=300, scale=3.0)
    ct = np.random.default_rng(0).standard_normal(y.shape)

    def loss(fn, h, w, kw):
        out = fn(h, w, y, reduction=reduction, **kw)
        return jnp.sum(out * ct) if reduction == "none" else out

    gh, gw = jax.grad(lambda h, w: loss(linear_cross_entropy, h, w, kw), argnums=(0, 1))(h, w)
    with jax.enable_x64(True):
        kw64 = {k: np.asarray(x, np.float64) if k == "class_weights" else x for k, x in kw.items()}
        rh, rw = jax.grad(lambda h, w: loss(unfused_jnp, h, w, _as_jnp(kw64)), argnums=(0, 1))(
            jnp.asarray(h, jnp.float64), jnp.asarray(w, jnp.float64)
        )
    for got, want in ((gh, rh), (gw, rw)):
        err = np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want)))
        assert err <= 1e-4 * np.max(np.abs(np.asarray(want))), err


def test_bfloat16_inputs_f32_loss_bf16_gradients():
    (h, w, y), kw = make("bias", seed=5, batch=(32,), d=64, v=200)
    hb, wb = jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    bias = jnp.asarray(kw["bias"], jnp.bfloat16)
    loss, (gh, gw, gb) = jax.value_and_grad(
        lambda h, w, b: linear_cross_entropy(h, w, y, bias=b, reduction="mean"), argnums=(0, 1, 2)
    )(hb, wb, bias)
    assert loss.dtype == jnp.float32
    assert gh.dtype == gw.dtype == gb.dtype == jnp.bfloat16
    # Reference on the bf16-rounded inputs: only the f32 accumulation differs.
    h64, w64, b64 = (np.asarray(x, np.float64) for x in (hb, wb, bias))
    _close(loss, ref_np(h64, w64, y, bias=b64, reduction="mean"), 1e-5)
    with jax.enable_x64(True):
        rh, rw = jax.grad(
            lambda h, w: unfused_jnp(h, w, y, bias=jnp.asarray(b64), reduction="mean"),
            argnums=(0, 1),
        )(jnp.asarray(h64), jnp.asarray(w64))
    for got, want in ((gh, rh), (gw, rw)):
        err = np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want)))
        assert err <= 2e-2 * np.max(np.abs(np.asarray(want))), err


def test_forward_mode_raises_a_clear_error():
    (h, w, y), _ = make("plain")
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda h: linear_cross_entropy(h, w, y, reduction="sum"), (h,), (h,))


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_forward_over_reverse_hessian_matches_float64(reduction):
    """jacfwd(jacrev(...)) differentiates the rules themselves (plain JAX code): it must be
    right, not silently zero."""
    with jax.enable_x64(True):
        (h, w, y), kw = make("everything", seed=8, batch=(5,), d=3, v=7, dtype=np.float64)
        kw = _as_jnp(kw)

        def f(fn):
            return lambda h: jnp.sum(
                fn(h, jnp.asarray(w), jnp.asarray(y), **kw, reduction=reduction)
            )

        got = jax.hessian(f(linear_cross_entropy))(jnp.asarray(h))
        want = jax.hessian(f(unfused_jnp))(jnp.asarray(h))
        assert np.abs(np.asarray(want)).max() > 1e-3
        _close(got, want, 1e-9, 1e-12)


# ----------------------------------------------------------------------------------------------
# Memory


def _compiled_memory(fn, *args):
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return m.temp_size_in_bytes


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_memory_is_a_tenth_of_unfused(reduction):
    n, d, v = 2048, 64, 8192
    h = jax.ShapeDtypeStruct((n, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    y = jax.ShapeDtypeStruct((n,), jnp.int32)

    def with_loss(fn, **extra):
        def f(h, w, y):
            out = fn(h, w, y, reduction=reduction, **extra)
            return jnp.sum(out)

        return jax.value_and_grad(f, argnums=(0, 1))

    fused = _compiled_memory(with_loss(linear_cross_entropy, chunk_size=64), h, w, y)
    unfused = _compiled_memory(with_loss(unfused_jnp), h, w, y)
    nv_bytes = n * v * 4
    assert unfused >= nv_bytes  # the unfused version does hold [N, V]
    assert fused <= unfused / 10, (fused, unfused)
    assert fused <= nv_bytes / 8, (fused, nv_bytes)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_residuals_are_inputs_gradients_and_per_token_statistics(reduction):
    """What the backward pass keeps: never an [N, V] array."""
    n, d, v = 64, 16, 300
    (h, w, y), _ = make("bias", batch=(n,), d=d, v=v)
    _, vjp_fn = jax.vjp(lambda h, w: linear_cross_entropy(h, w, y, reduction=reduction), h, w)
    shapes = [tuple(x.shape) for x in jax.tree_util.tree_leaves(vjp_fn)]
    assert (n, v) not in shapes
    assert all(np.prod(s) <= d * v for s in shapes), shapes
    if reduction == "none":
        # hidden, weight, and per-token vectors only: the statistics (shift, label offset,
        # mass off the label, smoothing sum), labels, mask, label weights
        assert sorted(s for s in shapes if len(s) == 2) == [(d, v), (n, d)], shapes
        assert 2 <= sum(s == (n,) for s in shapes) <= 7, shapes
    else:
        # the gradients formed in the forward pass, and hidden, weight (only for their dtypes)
        assert sorted(s for s in shapes if len(s) == 2) == [(d, v)] * 2 + [(n, d)] * 2, shapes


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("h_shape", "w_shape", "y_shape", "match"),
    [
        ((4, 8), (7, 10), (4,), r"`hidden` \(shape \(4, 8\)\).*`weight` \(shape \(7, 10\)\)"),
        ((4, 8), (8, 10, 1), (4,), r"`weight` must have shape \[D, V\], got shape \(8, 10, 1\)"),
        ((4, 8), (8, 10), (5,), r"`labels`.*\(4,\), got \(5,\)"),
    ],
)
def test_shape_errors_name_arguments_and_shapes(h_shape, w_shape, y_shape, match):
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(jnp.ones(h_shape), jnp.ones(w_shape), jnp.zeros(y_shape, int))


def test_other_argument_errors():
    h, w, y = jnp.ones((4, 8)), jnp.ones((8, 10)), jnp.zeros((4,), int)
    with pytest.raises(TypeError, match="`labels` must be integer"):
        linear_cross_entropy(h, w, jnp.zeros((4,)))
    with pytest.raises(TypeError, match="`hidden` must have a floating dtype"):
        linear_cross_entropy(jnp.ones((4, 8), int), w, y)
    with pytest.raises(ValueError, match=r"`bias` must have shape \[V\] = \(10,\).*\(9,\)"):
        linear_cross_entropy(h, w, y, bias=jnp.ones(9))
    with pytest.raises(ValueError, match=r"`class_weights` must have shape \(10,\).*got \(4, 10\)"):
        linear_cross_entropy(h, w, y, class_weights=jnp.ones((4, 10)))
    with pytest.raises(ValueError, match=r"`where` with shape \(4, 10\)"):
        linear_cross_entropy(h, w, y, jnp.ones((4, 10), bool))
    with pytest.raises(ValueError, match="unknown `reduction`"):
        linear_cross_entropy(h, w, y, reduction="avg")
    with pytest.raises(ValueError, match="`label_smoothing` must be a finite number in"):
        linear_cross_entropy(h, w, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"`logit_softcap` must be a number in \(0, inf\)"):
        linear_cross_entropy(h, w, y, logit_softcap=0.0)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int"):
        linear_cross_entropy(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="`z_loss` must be a scalar, got a traced value with"):
        jax.jit(lambda zl: linear_cross_entropy(h, w, y, z_loss=zl))(jnp.ones(2))


# ----------------------------------------------------------------------------------------------
# Every option: the float64 reference and the unfused library function


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(("case", "reduction"), _option_grid(REDUCTIONS))
def test_matches_float64_reference_and_unfused_cross_entropy(case, reduction):
    """The forward kernel and `value_and_grad` (whose forward forms the gradients during the
    sweep), each compiled once: values against the float64 reference, and values and gradients
    against `cross_entropy(hidden @ weight + bias, labels, ...)`. V=37 in blocks of 16 (the last
    block shifted back, overlapping) and 15 tokens in chunks of 4."""
    from jaxloss._cross_entropy import cross_entropy

    (h, w, y), kw = make(case, seed=11)
    want = ref_np(h, w, y, reduction=reduction, **kw)
    kw = _as_jnp(kw)
    bias = kw.pop("bias", None)
    arrays = {k: x for k, x in kw.items() if isinstance(x, jax.Array)}
    static = {k: x for k, x in kw.items() if k not in arrays}
    ct = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)

    def fused(h, w, b, arrays):
        return linear_cross_entropy(
            h, w, y, bias=b, reduction=reduction, chunk_size=4, **arrays, **static
        )

    def unfused(h, w, b, arrays):
        logits = h @ w if b is None else h @ w + b[None, None, :]
        # `cross_entropy` broadcasts [V] class weights against [..., V] logits by rank promotion.
        with jax.numpy_rank_promotion("allow"):
            return cross_entropy(logits, y, reduction=reduction, **arrays, **static)

    def scalar(fn):
        def loss(*a):
            out = fn(*a)
            out = out[0] if reduction == "sum_and_count" else out
            return jnp.sum(out * ct) if reduction == "none" else out

        return loss

    argnums = (0, 1) if bias is None else (0, 1, 2)
    got = jax.jit(fused)(h, w, bias, arrays)
    got_v, got_g = jax.jit(jax.value_and_grad(scalar(fused), argnums))(h, w, bias, arrays)
    unf = jax.jit(unfused)(h, w, bias, arrays)
    unf_v, unf_g = jax.value_and_grad(scalar(unfused), argnums)(h, w, bias, arrays)
    if reduction == "sum_and_count":
        _close(got[0], want[0], 1e-5)
        _close(got[1], want[1], 1e-6)
        _close(got[1], unf[1], 1e-6)
        _close(got_v, want[0], 1e-5)
    else:
        _close(got, want, 1e-5, 1e-6)
        assert np.shape(got) == np.shape(want)
        assert got.dtype == jnp.float32
        _close(got_v, np.sum(want * ct) if reduction == "none" else want, 1e-5, 1e-6)
    _close(got_v, unf_v, 1e-5, 1e-6)
    for g, r in zip(got_g, unf_g, strict=True):
        scale = np.max(np.abs(np.asarray(r)))
        assert np.max(np.abs(np.asarray(g) - np.asarray(r))) <= 1e-4 * scale


@pytest.mark.parametrize("reduction", ["none", "mean", "sum_and_count"])
def test_token_weights_match_unfused_cross_entropy(reduction):
    """`weights=`: the same values and gradients (hidden, weight, weights) as `cross_entropy`'s
    on the unfused logits, with class weights in the count."""
    from jaxloss._cross_entropy import cross_entropy

    (h, w, y), kw = make("class_weights", seed=7)
    cw = jnp.asarray(kw["class_weights"])
    s = np.random.default_rng(8).uniform(0.0, 2.0, y.shape).astype(np.float32)

    def loss(fn):
        def scalar(h, w, s):
            with jax.numpy_rank_promotion("allow"):
                out = fn(h, w, s)
            out = out[0] + out[1] if reduction == "sum_and_count" else out
            return jnp.sum(out * out)

        return jax.jit(jax.value_and_grad(scalar, argnums=(0, 1, 2)))

    fused = loss(
        lambda h, w, s: linear_cross_entropy(
            h, w, y, class_weights=cw, weights=s, reduction=reduction, ignore_index=3
        )
    )
    unfused = loss(
        lambda h, w, s: cross_entropy(
            h @ w, y, class_weights=cw, weights=s, reduction=reduction, ignore_index=3
        )
    )
    (gv, gg), (wv, wg) = fused(h, w, s), unfused(h, w, s)
    _close(gv, wv, 1e-5)
    for g, r in zip(gg, wg, strict=True):
        _close(g, r, 1e-4, 1e-6)


# ----------------------------------------------------------------------------------------------
# Traced options (a schedule's value under jit)

TRACED = {"label_smoothing": 0.3, "z_loss": 0.05, "logit_softcap": 1.5}


def _traced_grid() -> list:
    """(option, reduction): each option once in the fast tier (both reductions covered), the
    rest of the grid `slow`."""
    params = []
    for i, option in enumerate(sorted(TRACED)):
        for j, reduction in enumerate(("none", "mean")):
            marks = pytest.mark.slow if j != i % 2 else ()
            params.append(pytest.param(option, reduction, marks=marks, id=f"{option}-{reduction}"))
    return params


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(("option", "reduction"), _traced_grid())
def test_traced_option_matches_python_number_and_float64_autodiff(option, reduction):
    """A traced option (the others Python numbers, every other feature on): the value and
    gradients of the same Python number, and the option's own gradient that of float64
    autodiff of the unfused formula."""
    with jax.enable_x64(True):
        args, kw = make("everything", seed=11, dtype=np.float64)
        kw = _as_jnp(kw)
        h, w, y = (jnp.asarray(a) for a in args)
        ct = jax.random.normal(jax.random.key(2), y.shape, jnp.float64)
        names = _grad_args(kw)
        params = {"hidden": h, "weight": w, **{k: kw[k] for k in names[2:]}}

        def wrap(fn):
            def loss(params, value):
                out = fn(
                    params["hidden"], params["weight"], y,
                    **{**kw, **{k: params[k] for k in names[2:]}, option: value},
                    reduction=reduction, chunk_size=4,
                )  # fmt: skip
                return jnp.sum(out * ct) if reduction == "none" else out

            return loss

        fused = wrap(linear_cross_entropy)
        value = TRACED[option]
        v_got, (g_got, g_opt) = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(params, value)
        v_num, g_num = jax.jit(jax.value_and_grad(lambda p: fused(p, value)))(params)
        v_want, (g_want, g_opt_want) = jax.value_and_grad(wrap(unfused_jnp), argnums=(0, 1))(
            params, jnp.float64(value)
        )
        _close(v_got, v_num, 1e-14, 1e-14)
        _close(v_got, v_want, 1e-12)
        for k in names:
            _close(g_got[k], g_num[k], 1e-12, 1e-14)
            _close(g_got[k], g_want[k], 1e-10, 1e-12)
        assert g_opt.dtype == jnp.float64
        _close(g_opt, g_opt_want, 1e-10, 1e-12)
        assert float(g_opt) != 0.0


def test_one_program_serves_every_option_value():
    """A schedule: one trace for several values of all three options at once (float32,
    `"none"`), each giving the Python number's loss and gradients."""
    (h, w, y), _ = make("plain", seed=4)
    traces = []

    def loss(h, w, eps, zl, cap):
        traces.append(1)
        return jnp.sum(
            linear_cross_entropy(h, w, y, label_smoothing=eps, z_loss=zl, logit_softcap=cap)
        )

    fused = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))
    for eps, zl, cap in [(0.1, 1e-3, 3.0), (0.5, 0.2, 0.5)]:
        v, g = fused(h, w, jnp.float32(eps), jnp.float32(zl), jnp.float32(cap))
        v_num, g_num = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=(2, 3, 4))(
            h, w, eps, zl, cap
        )
        _close(v, v_num, 1e-6)
        _close(g[0], g_num[0], 1e-5, 1e-7)
        _close(g[1], g_num[1], 1e-5, 1e-7)
        assert all(np.isfinite(float(x)) for x in g[2:])
    assert len(traces) == 1 + 2  # the traced program once, each Python number's once


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_out_of_range_traced_option_gives_nan(reduction):
    """A traced value outside the range a Python number is checked against: NaN losses, never
    a silent finite one (a Python number raises, as before)."""
    (h, w, y), _ = make("plain", seed=1)
    nan, inf = float("nan"), float("inf")
    fused = jax.jit(
        lambda eps, zl, cap: linear_cross_entropy(
            h, w, y, label_smoothing=eps, z_loss=zl, logit_softcap=cap, reduction=reduction
        )
    )
    bad = {
        "label_smoothing": [1.5, -0.1, nan],
        "z_loss": [-1.0, inf, nan],
        "logit_softcap": [0.0, -2.0, nan],
    }
    assert np.all(np.isfinite(np.asarray(fused(0.1, 0.01, 2.0))))
    for option, values in bad.items():
        for value in values:
            opts = {"eps": 0.1, "zl": 0.01, "cap": 2.0}
            opts[{"label_smoothing": "eps", "z_loss": "zl", "logit_softcap": "cap"}[option]] = value
            out = fused(**{k: jnp.float32(x) for k, x in opts.items()})
            assert np.all(np.isnan(np.asarray(out))), (option, value)
            with pytest.raises((ValueError, TypeError), match=f"`{option}`"):
                linear_cross_entropy(h, w, y, **{option: value})


def test_traced_infinite_softcap_means_no_cap():
    """`logit_softcap=inf` traced: the uncapped loss and gradients, and gradient 0 for the cap."""
    (h, w, y), kw = make("bias", seed=6)

    def loss(h, w, cap):
        return linear_cross_entropy(h, w, y, **kw, logit_softcap=cap, reduction="mean")

    v, g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(h, w, jnp.float32(np.inf))
    v_ref, g_ref = jax.jit(jax.value_and_grad(lambda h, w: loss(h, w, None), argnums=(0, 1)))(h, w)
    _close(v, v_ref, 1e-6)
    _close(g[0], g_ref[0], 1e-6, 1e-7)
    _close(g[1], g_ref[1], 1e-6, 1e-7)
    assert float(g[2]) == 0.0


@pytest.mark.slow  # two programs over 8 simulated devices
def test_traced_options_sharded_match_single_device():
    """`mesh=`: the traced options enter shard_map replicated; values and gradients (the
    options' included) those of the single-device call. 37 classes over 4 shards (padding)."""
    from jax.sharding import AxisType, Mesh

    (h, w, y), kw = make("class_weights", seed=9, batch=(20,))
    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    ct = np.random.default_rng(3).standard_normal(20).astype(np.float32)

    def loss(h, w, eps, zl, cap, mesh=None):
        out = linear_cross_entropy(
            h, w, y, **kw, label_smoothing=eps, z_loss=zl, logit_softcap=cap, mesh=mesh,
            chunk_size=4,
        )  # fmt: skip
        return jnp.sum(out * ct)

    args = (h, w, jnp.float32(0.2), jnp.float32(0.01), jnp.float32(2.0))
    grad = functools.partial(jax.value_and_grad, argnums=(0, 1, 2, 3, 4))
    v0, g0 = jax.jit(grad(loss))(*args)
    v1, g1 = jax.jit(grad(lambda *a: loss(*a, mesh=mesh)))(*args)
    _close(v1, v0, 1e-5)
    for a, b in zip(g1, g0, strict=True):
        _close(a, b, 1e-5, 1e-6)
