r"""Fused linear + cross-entropy: the loss of ``hidden @ weight + bias`` without its logits.

Layout of this module:

* ``_stats_local``: forward sweep over (token chunk, vocabulary block) tiles with an online
  log-sum-exp; memory ``O(T·B)``. Used whenever no gradient is needed and for the forward
  pass of the per-example (``reduction="none"``) rule.
* ``_grads_local``: per token chunk, one ``[T, V]`` block of logits, its exact log-sum-exp,
  then a sweep over vocabulary blocks that forms ``dloss/dlogits`` block by block and
  accumulates the gradients of hidden, weight, bias (and the class weights). It is the
  backward pass of the per-example rule (logits recomputed, ~8·N·D·V flops in all) and the
  *forward* pass of the summed rule (gradients formed while the logits are computed once,
  ~6·N·D·V flops, the same as autodiff of the unfused formula).
* Both run on one device or, under ``mesh``, inside ``shard_map`` on a token shard × vocabulary
  shard: each shard reduces its own max / sum / label logit and the shards combine them with
  ``pmax`` / ``psum``; the gradients are combined with ``psum`` (of ``[N/dp, D]`` over the
  vocabulary axis, of ``[D, V/mp]`` over the token axis). The weight is never gathered.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxloss._checks import (
    check_floating,
    check_integer_labels,
    check_label_smoothing,
    check_reduction,
    compute_dtype,
    reduce_loss,
)

_FN = "linear_cross_entropy"

# Automatic chunking. The gradient kernel holds one [T, V_local] block of f32 logits: T is
# chosen so that block is about _TARGET_LOGITS elements (128 MiB in f32), between 8 and 1024
# tokens. The forward-only sweep holds [T, B] tiles with B = _VOCAB_BLOCK.
_TARGET_LOGITS = 1 << 25
_MAX_TOKEN_CHUNK = 1024
_VOCAB_BLOCK = 4096

AxisName = str | tuple[str, ...] | None


class _Static(NamedTuple):
    """Everything the kernels need that is known at trace time (hashable, for custom_vjp)."""

    num_classes: int  # V, the true (unpadded) number of classes
    label_smoothing: float
    z_loss: float
    softcap: float | None
    token_chunk: int | None  # None: automatic
    has_bias: bool
    has_class_weights: bool
    vocab_padded: bool  # some weight columns are padding (sharded, V % shards != 0)
    mesh: Mesh | None
    data_axis: AxisName
    model_axis: AxisName


# ----------------------------------------------------------------------------------------------
# Blocks


def _block(i: jax.Array, size: int, total: int) -> tuple[jax.Array, jax.Array]:
    """Start of block `i` of `size` in `[0, total)` and which of its entries are new.

    The last block is shifted back to end at `total` (no padding copy of the weight or the
    hidden states); the entries it shares with the previous block are marked as not new, so
    they are masked out of every sum.
    """
    start = jnp.minimum(i * size, total - size)
    fresh = start + jnp.arange(size) >= i * size
    return start, fresh


def _vocab_offset(s: _Static, v_local: int) -> jax.Array | int:
    if s.mesh is None or s.model_axis is None:
        return 0
    return lax.axis_index(s.model_axis) * v_local


def _psum(x: Any, axis: AxisName) -> Any:
    return x if axis is None else lax.psum(x, axis)


def _logits(h_t: jax.Array, w_blk: jax.Array, b_blk: jax.Array | None, s: _Static) -> jax.Array:
    """One block of logits, accumulated in (at least) f32; the same code in every pass."""
    cdt = compute_dtype(h_t.dtype)
    z = lax.dot_general(h_t, w_blk, (((1,), (0,)), ((), ())), preferred_element_type=cdt)
    if b_blk is not None:
        z = z + b_blk.astype(cdt)
    if s.softcap is not None:
        z = s.softcap * jnp.tanh(z / s.softcap)
    return z


def _chunks(s: _Static, n: int, v_local: int, *, forward_only: bool) -> int:
    if s.token_chunk is not None:
        t = s.token_chunk
    elif forward_only:
        t = 512
    else:
        t = _TARGET_LOGITS // v_local
        t = max(8, min(_MAX_TOKEN_CHUNK, t - t % 8))
    return max(1, min(t, n))


def _combine_lse(m: jax.Array, ssum: jax.Array, s: _Static) -> jax.Array:
    """Log-sum-exp from per-shard (max, sum of exp(z - max)) pairs."""
    if s.mesh is not None and s.model_axis is not None:
        big = lax.pmax(m, s.model_axis)
        safe = jnp.where(jnp.isfinite(big), big, 0.0)
        ssum = lax.psum(ssum * jnp.exp(m - safe), s.model_axis)
        m = safe
    return m + jnp.log(ssum)


# ----------------------------------------------------------------------------------------------
# Forward sweep: online log-sum-exp over vocabulary blocks


def _stats_local(
    s: _Static,
    h: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    cw: jax.Array | None,
    labels: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per token: log-sum-exp, the label's logit, and sum_j w_j z_j (only with smoothing)."""
    n, d = h.shape
    v = w.shape[1]
    cdt = compute_dtype(h.dtype)
    t_size = _chunks(s, n, v, forward_only=True)
    b_size = min(_VOCAB_BLOCK, v)
    off = _vocab_offset(s, v)
    y_local = labels - off
    smooth = s.label_smoothing > 0
    zero = jnp.zeros((n,), cdt)

    def token_step(carry, i):
        m_all, s_all, zy_all, wz_all = carry
        t0, _ = _block(i, t_size, n)  # rows seen twice get the same value twice: no mask
        h_t = lax.dynamic_slice_in_dim(h, t0, t_size, 0)
        y_t = lax.dynamic_slice_in_dim(y_local, t0, t_size, 0)

        def vocab_step(c, j):
            m, ssum, zy, wz = c
            v0, ok = _block(j, b_size, v)
            if s.vocab_padded:
                ok = ok & (off + v0 + jnp.arange(b_size) < s.num_classes)
            w_blk = lax.dynamic_slice_in_dim(w, v0, b_size, 1)
            b_blk = None if b is None else lax.dynamic_slice_in_dim(b, v0, b_size, 0)
            z = _logits(h_t, w_blk, b_blk, s)
            # Padding and columns already counted never enter the log-sum-exp.
            zm = jnp.where(ok, z, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(zm, axis=1))
            safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # a row with no column yet
            ssum = ssum * jnp.exp(m - safe) + jnp.sum(jnp.exp(zm - safe[:, None]), axis=1)
            cols = v0 + jnp.arange(b_size)
            hit = ok & (cols[None, :] == y_t[:, None])
            zy = zy + jnp.sum(jnp.where(hit, z, 0.0), axis=1)
            if smooth:
                zw = z if cw is None else z * lax.dynamic_slice_in_dim(cw, v0, b_size, 0)
                wz = wz + jnp.sum(jnp.where(ok, zw.astype(cdt), 0.0), axis=1)
            return (safe, ssum, zy, wz), None

        tz = jnp.zeros((t_size,), cdt)
        init = (jnp.full((t_size,), -jnp.inf, cdt), tz, tz, tz)
        (m, ssum, zy, wz), _ = lax.scan(vocab_step, init, jnp.arange(-(-v // b_size)))
        upd = lax.dynamic_update_slice_in_dim
        carry = (
            upd(m_all, m, t0, 0),
            upd(s_all, ssum, t0, 0),
            upd(zy_all, zy, t0, 0),
            upd(wz_all, wz, t0, 0),
        )
        return carry, None

    init = (jnp.full((n,), -jnp.inf, cdt), zero, zero, zero)
    (m, ssum, zy, wz), _ = lax.scan(token_step, init, jnp.arange(-(-n // t_size)))
    lse = _combine_lse(m, ssum, s)
    if s.mesh is not None and s.model_axis is not None:
        zy, wz = lax.psum((zy, wz), s.model_axis)
    return lse, zy, wz


# ----------------------------------------------------------------------------------------------
# Gradient sweep


def _grads_local(
    s: _Static,
    h: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    cw: jax.Array | None,
    labels: jax.Array,
    cy: jax.Array,
    cs: jax.Array,
    cz: jax.Array,
    lse_in: jax.Array | None,
) -> tuple[jax.Array, ...]:
    """Gradients of sum_i loss_i weighted by per-token coefficients.

    With q_i the token's cotangent times its validity, dloss_i/dz_ij is
    ``a_i p_ij - cy_i [j = y_i] - cs_i w_j`` where ``cy = q (1-ε) w_y``, ``cs = q ε/V``,
    ``cz = 2 q λ_z`` and ``a = cy + cs Σ_j w_j + cz lse``; times ``1 - (z/c)²`` under a
    softcap. Returns (lse, zy, wz, grad_h, grad_w, grad_b, zcol) where zcol_j = Σ_i cs_i z_ij
    (for the class-weight gradient) and grad_b / zcol are None when not needed.
    """
    n, d = h.shape
    v = w.shape[1]
    cdt = compute_dtype(h.dtype)
    t_size = _chunks(s, n, v, forward_only=False)
    b_size = min(_VOCAB_BLOCK, v)
    off = _vocab_offset(s, v)
    y_local = labels - off
    smooth = s.label_smoothing > 0
    cw_sum = None
    if smooth:
        cw_sum = float(s.num_classes) if cw is None else _psum(jnp.sum(cw.astype(cdt)), s.model_axis if s.mesh else None)
    need_zcol = smooth and cw is not None
    cols_all = jnp.arange(v)
    real_col = (off + cols_all < s.num_classes) if s.vocab_padded else None

    def token_step(carry, i):
        lse_all, zy_all, wz_all, gh_all, gw, gb, zcol = carry
        t0, rows_new = _block(i, t_size, n)
        h_t = lax.dynamic_slice_in_dim(h, t0, t_size, 0)
        y_t = lax.dynamic_slice_in_dim(y_local, t0, t_size, 0)
        cy_t, cs_t, cz_t = (lax.dynamic_slice_in_dim(c, t0, t_size, 0) for c in (cy, cs, cz))
        z = _logits(h_t, w, b, s)  # [T, V_local]
        zm = z if real_col is None else jnp.where(real_col, z, -jnp.inf)
        in_shard = (y_t >= 0) & (y_t < v)
        zy = jnp.take_along_axis(z, jnp.clip(y_t, 0, v - 1)[:, None], axis=1)[:, 0]
        zy = jnp.where(in_shard, zy, 0.0)
        if smooth:
            zw = z if cw is None else z * cw.astype(cdt)
            wz = jnp.sum(zw if real_col is None else jnp.where(real_col, zw, 0.0), axis=1)
        else:
            wz = jnp.zeros((t_size,), cdt)
        if lse_in is None:
            m = jnp.max(zm, axis=1)
            m = jnp.where(jnp.isfinite(m), m, 0.0)
            lse = _combine_lse(m, jnp.sum(jnp.exp(zm - m[:, None]), axis=1), s)
            if s.mesh is not None and s.model_axis is not None:
                zy, wz = lax.psum((zy, wz), s.model_axis)
        else:
            lse = lax.dynamic_slice_in_dim(lse_in, t0, t_size, 0)
        a = cy_t + cz_t * lse
        if smooth:
            a = a + cs_t * cw_sum
        # Rows counted by an earlier (overlapping) chunk add nothing to the weight-side sums;
        # their grad_h rows are recomputed identically and simply written again.
        h_new = jnp.where(rows_new[:, None], h_t, jnp.zeros_like(h_t))
        in_dtype = h.dtype

        def vocab_step(c, j):
            gh_t, gw, gb, zcol = c
            v0, ok = _block(j, b_size, v)
            if real_col is not None:
                ok = ok & lax.dynamic_slice_in_dim(real_col, v0, b_size, 0)
            z_b = lax.dynamic_slice_in_dim(z, v0, b_size, 1)
            p = jnp.exp(z_b - lse[:, None])
            g = a[:, None] * p
            cols = v0 + jnp.arange(b_size)
            g = g - jnp.where(cols[None, :] == y_t[:, None], cy_t[:, None], 0.0)
            if smooth:
                cw_b = 1.0 if cw is None else lax.dynamic_slice_in_dim(cw, v0, b_size, 0).astype(cdt)
                g = g - cs_t[:, None] * cw_b
            if s.softcap is not None:
                g = g * (1.0 - jnp.square(z_b / s.softcap))
            g = jnp.where(ok[None, :], g, 0.0)
            w_blk = lax.dynamic_slice_in_dim(w, v0, b_size, 1)
            g_in = g.astype(in_dtype)
            gh_t = gh_t + lax.dot_general(
                g_in, w_blk, (((1,), (1,)), ((), ())), preferred_element_type=cdt
            )
            gw_blk = lax.dot_general(
                h_new, g_in, (((0,), (0,)), ((), ())), preferred_element_type=cdt
            )
            gw = lax.dynamic_update_slice_in_dim(
                gw, lax.dynamic_slice_in_dim(gw, v0, b_size, 1) + gw_blk, v0, 1
            )
            if gb is not None:
                col = jnp.sum(jnp.where(rows_new[:, None], g, 0.0), axis=0)
                gb = lax.dynamic_update_slice_in_dim(
                    gb, lax.dynamic_slice_in_dim(gb, v0, b_size, 0) + col, v0, 0
                )
            if zcol is not None:
                zc = jnp.sum(jnp.where(rows_new[:, None] & ok[None, :], cs_t[:, None] * z_b, 0.0), axis=0)
                zcol = lax.dynamic_update_slice_in_dim(
                    zcol, lax.dynamic_slice_in_dim(zcol, v0, b_size, 0) + zc, v0, 0
                )
            return (gh_t, gw, gb, zcol), None

        init = (jnp.zeros((t_size, d), cdt), gw, gb, zcol)
        (gh_t, gw, gb, zcol), _ = lax.scan(vocab_step, init, jnp.arange(-(-v // b_size)))
        upd = lax.dynamic_update_slice_in_dim
        carry = (
            upd(lse_all, lse, t0, 0),
            upd(zy_all, zy, t0, 0),
            upd(wz_all, wz, t0, 0),
            upd(gh_all, gh_t.astype(gh_all.dtype), t0, 0),
            gw,
            gb,
            zcol,
        )
        return carry, None

    zero = jnp.zeros((n,), cdt)
    init = (
        zero,
        zero,
        zero,
        jnp.zeros((n, d), cdt),
        jnp.zeros((d, v), cdt),
        jnp.zeros((v,), cdt) if b is not None else None,
        jnp.zeros((v,), cdt) if need_zcol else None,
    )
    (lse, zy, wz, gh, gw, gb, zcol), _ = lax.scan(token_step, init, jnp.arange(-(-n // t_size)))
    if s.mesh is not None:
        if s.model_axis is not None:
            gh = lax.psum(gh, s.model_axis)
        if s.data_axis is not None:
            gw, gb, zcol = lax.psum((gw, gb, zcol), s.data_axis)
    return lse, zy, wz, gh, gw, gb, zcol
