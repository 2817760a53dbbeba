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

Both rules are ``custom_vjp``s: autodiff never differentiates this module's code, so its
``maximum``, ``minimum`` and ``clip`` (shifts, block offsets, label indices) have no derivative
to get wrong at a tie.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxloss import _checks, _options
from jaxloss._checks import check_floating, check_integer_labels, compute_dtype

_FN = "linear_cross_entropy"

# Automatic chunking. The gradient kernel holds one [T, V_local] block of f32 logits: T is
# chosen so that block is about _TARGET_LOGITS elements (128 MiB in f32), between 8 and 1024
# tokens. The forward-only sweep holds [T, B] tiles with B = _VOCAB_BLOCK and T = 512; a
# vocabulary of one block takes the gradient's T (a smaller T kept more scratch on H100 at
# 1024x1000, D=2048: 11.8 MiB in two chunks of 512, 7.8 MiB in one, as the unfused formula).
_TARGET_LOGITS = 1 << 25
_MAX_TOKEN_CHUNK = 1024
_VOCAB_BLOCK = 4096

AxisName = str | tuple[str, ...] | None


class _Static(NamedTuple):
    """Everything the kernels need that is known at trace time (hashable, for custom_vjp)."""

    num_classes: int  # V, the true (unpadded) number of classes
    # The options: a Python float, or None in the static tuple where the option is traced
    # (its value travels as `hyper` and `_join` puts it back inside the rules and kernels).
    label_smoothing: Any
    z_loss: Any
    softcap: Any  # also None for no cap
    token_chunk: int | None  # None: automatic
    vocab_block: int
    vocab_padded: bool  # some weight columns are padding (sharded, V % shards != 0)
    mesh: Mesh | None
    data_axis: AxisName
    model_axis: AxisName


Hyper = tuple[Any, Any, Any]  # traced (ε, λ_z, c), None each where the option is static


def _split(opts: _options.Options) -> tuple[_options.Options, Hyper]:
    """(static options, traced ones): a traced option reads None in the static part."""
    traced = tuple(None if _checks.is_static(x) or x is None else x for x in opts)
    static = tuple(None if t is not None else x for x, t in zip(opts, traced, strict=True))
    return _options.Options(*static), cast(Hyper, traced)


def _join(s: _Static, hyper: Hyper) -> _Static:
    """`s` with the traced options back in their places (not hashable then: used only inside
    the rules and kernels)."""
    eps, zl, cap = hyper
    return s._replace(
        label_smoothing=s.label_smoothing if eps is None else eps,
        z_loss=s.z_loss if zl is None else zl,
        softcap=s.softcap if cap is None else cap,
    )


def _smoothing(s: _Static) -> bool:
    """Whether the smoothing sums are needed: a traced ε, or a static one above 0."""
    return not _checks.is_static(s.label_smoothing) or s.label_smoothing > 0


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


def _logits(h_t: jax.Array, w_blk: jax.Array, b_blk: jax.Array | None, s: _Static) -> jax.Array:
    """One block of logits, accumulated in (at least) f32; the same code in every pass."""
    cdt = compute_dtype(h_t.dtype)
    z = lax.dot_general(h_t, w_blk, (((1,), (0,)), ((), ())), preferred_element_type=cdt)
    if b_blk is not None:
        z = z + b_blk.astype(cdt)[None, :]
    if s.softcap is not None:
        if _checks.is_static(s.softcap):
            z = s.softcap * jnp.tanh(z / s.softcap)
        else:
            z = _options.softcap(z, s.softcap)  # a traced c = inf: no cap
    return z


def _auto_chunk(v_local: int, *, forward_only: bool) -> int:
    if forward_only and v_local > _VOCAB_BLOCK:
        return 512
    t = _TARGET_LOGITS // v_local
    return max(8, min(_MAX_TOKEN_CHUNK, t - t % 8))


def _chunks(s: _Static, n: Any, v_local: int, *, forward_only: bool) -> int:
    t = s.token_chunk or _auto_chunk(v_local, forward_only=forward_only)
    if not isinstance(n, int):
        # A symbolic token count (jax.export): `linear_cross_entropy` fixed `token_chunk` and
        # padded the tokens to a multiple of it.
        return t
    return max(1, min(t, n))


def _finite(m: jax.Array) -> jax.Array:
    """A shift that is always finite: 0 for a row with nothing in it yet."""
    return jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))


class _Stats(NamedTuple):
    """Per-token statistics, relative to the shift `m` (the row's max, the label's included):
    ``d_y = z_y − m``, ``r = Σ_{j≠y} exp(z_j − m)`` and ``wd = Σ_j w_j (z_j − m)`` (0 without
    smoothing): what `_options.label_rows` turns into the loss and the gradient coefficients."""

    m: Any  # jax.Array (or a PartitionSpec, as shard_map's specs)
    d_y: Any
    r: Any
    wd: Any


def _finish_stats(s: _Static, m_o, s_o, zy, wd, w_seen) -> _Stats:
    """Combine a shard's label-out statistics with the other shards' and shift them to `m`.

    `m_o`: a shift, the max over the shard's columns (the label's may be among them);
    `s_o`: Σ_{j≠y} exp(z_j − m_o), the label left out; `zy`: the label's logit (0 on shards that
    do not hold it); `wd`: Σ_j w_j (z_j − finite(m_o)) over all columns seen, whose weights sum
    to `w_seen`.
    """
    if s.mesh is not None and s.model_axis is not None:
        big = lax.pmax(m_o, s.model_axis)
        shift = _finite(m_o) - _finite(big)
        s_o, zy, wd = lax.psum(
            (s_o * jnp.exp(m_o - _finite(big)), zy, wd + w_seen * shift), s.model_axis
        )
        m_o = big
    m = _finite(jnp.maximum(m_o, zy))
    r = jnp.where(s_o == 0, jnp.zeros_like(s_o), s_o * jnp.exp(m_o - m))
    return _Stats(m, zy - m, r, wd + _total(s, w_seen) * (_finite(m_o) - m))


def _total(s: _Static, w_seen):
    """Σ_j w_j over every shard's columns (the shift of `wd` is applied after combining)."""
    if s.mesh is not None and s.model_axis is not None:
        return lax.psum(w_seen, s.model_axis)
    return w_seen


def _opts(s: _Static) -> _options.Options:
    return _options.Options(s.label_smoothing, s.z_loss, s.softcap)


def _rows(s: _Static, st: _Stats, wy, valid, labels, w_tot):
    """Loss and gradient coefficients per token (`_options.label_rows`, as `cross_entropy`)."""
    smooth = None
    if _smoothing(s):
        smooth = (w_tot, st.wd, float(s.num_classes))
    bad = valid & (labels < 0)  # out-of-range labels were set to -1 (padding is not valid)
    return _options.label_rows(_opts(s), st.m, st.d_y, st.r, wy, valid, bad, smooth)


def _weights_of(s: _Static, cw, v0, size, cdt):
    """The class weights of columns [v0, v0 + size) (ones without class weights)."""
    if cw is None:
        return jnp.ones((size,), cdt)
    return lax.dynamic_slice_in_dim(cw, v0, size, 0).astype(cdt)


# ----------------------------------------------------------------------------------------------
# Forward sweep: online statistics over vocabulary blocks


def _stats_local(
    s: _Static,
    h: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    cw: jax.Array | None,
    labels: jax.Array,
) -> _Stats:
    """Per-token `_Stats`, the label kept out of the running sum, in [T, B] tiles."""
    n = h.shape[0]
    v = w.shape[1]
    cdt = compute_dtype(h.dtype)
    t_size = _chunks(s, n, v, forward_only=True)
    b_size = min(s.vocab_block, v)
    off = _vocab_offset(s, v)
    y_local = labels - off
    smooth = _smoothing(s)
    zero = jnp.zeros((n,), cdt)

    def token_step(carry, i):
        t0, _ = _block(i, t_size, n)  # rows seen twice get the same value twice: no mask
        h_t = lax.dynamic_slice_in_dim(h, t0, t_size, 0)
        y_t = lax.dynamic_slice_in_dim(y_local, t0, t_size, 0)

        def vocab_step(c, j):
            m, ssum, zy, wd, w_seen = c
            v0, ok = _block(j, b_size, v)
            if s.vocab_padded:
                ok = ok & (off + v0 + jnp.arange(b_size) < s.num_classes)
            w_blk = lax.dynamic_slice_in_dim(w, v0, b_size, 1)
            b_blk = None if b is None else lax.dynamic_slice_in_dim(b, v0, b_size, 0)
            z = _logits(h_t, w_blk, b_blk, s)
            cols = v0 + jnp.arange(b_size)
            hit = ok[None, :] & (cols[None, :] == y_t[:, None])
            zy = zy + jnp.sum(jnp.where(hit, z, 0.0), axis=1)
            # Padding and columns already counted never enter the max or the sum; the label
            # enters the max (a shift) but not the sum.
            m_new = jnp.maximum(m, jnp.max(jnp.where(ok[None, :], z, -jnp.inf), axis=1))
            shift = _finite(m) - _finite(m_new)
            e = jnp.exp(z - _finite(m_new)[:, None])
            ssum = ssum * jnp.exp(m - _finite(m_new)) + jnp.sum(
                jnp.where(ok[None, :] & ~hit, e, 0.0), axis=1
            )
            if smooth:
                # Σ_j w_j (z_j − m), kept relative to the running max: exact at any offset.
                wb = jnp.where(ok, _weights_of(s, cw, v0, b_size, cdt), 0.0)
                term = jnp.where(wb[None, :] != 0, wb[None, :] * (z - _finite(m_new)[:, None]), 0)
                wd = wd + w_seen * shift + jnp.sum(term, axis=1)
                w_seen = w_seen + jnp.sum(wb)
            return (m_new, ssum, zy, wd, w_seen), None

        tz = jnp.zeros((t_size,), cdt)
        init = (jnp.full((t_size,), -jnp.inf, cdt), tz, tz, tz, jnp.zeros((), cdt))
        (m, ssum, zy, wd, w_seen), _ = lax.scan(vocab_step, init, jnp.arange(-(-v // b_size)))
        upd = lax.dynamic_update_slice_in_dim
        carry = tuple(upd(a, x, t0, 0) for a, x in zip(carry, (m, ssum, zy, wd), strict=True))
        return carry, w_seen

    init = (jnp.full((n,), -jnp.inf, cdt), zero, zero, zero)
    (m, ssum, zy, wd), w_seen = lax.scan(token_step, init, jnp.arange(-(-n // t_size)))
    return _finish_stats(s, m, ssum, zy, wd, w_seen[0])


# ----------------------------------------------------------------------------------------------
# Gradient sweep


def _grads_local(
    s: _Static,
    h: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    cw: jax.Array | None,
    labels: jax.Array,
    wy: jax.Array,
    valid: jax.Array,
    q: jax.Array,
    w_tot: jax.Array,
    stats_in: _Stats | None,
) -> tuple[Any, ...]:
    """Gradients of Σ_i q_i·loss_i for per-token weights `q` (the cotangent).

    dloss_i/dz_ij is ``coef_i·exp(z_ij − m_i) − (ε/V)·w_j`` off the label and ``g_y,i`` at it
    (`_options.label_rows`: the label's entry without cancellation); times ``1 − (z/c)²``
    under a softcap. Returns (stats, grad_h, grad_w, grad_b, zcol, grad_c) where
    zcol_j = Σ_i q_i (ε/V)(lse_i − z_ij) (the smoothing part of the class-weight gradient),
    grad_c the gradient of a traced soft-cap c, and grad_b / zcol / grad_c are None when not
    needed.
    """
    n, d = h.shape
    v = w.shape[1]
    cdt = compute_dtype(h.dtype)
    t_size = _chunks(s, n, v, forward_only=False)
    b_size = min(s.vocab_block, v)
    off = _vocab_offset(s, v)
    y_local = labels - off
    eps = s.label_smoothing
    smooth = _smoothing(s)
    need_zcol = smooth and cw is not None
    cols_all = jnp.arange(v)
    real_col = (off + cols_all < s.num_classes) if s.vocab_padded else jnp.ones((v,), bool)
    w_all = jnp.where(real_col, _weights_of(s, cw, 0, v, cdt), 0.0)

    def token_step(carry, i):
        st_all, gh_all, gw, gb, zcol, gcap = carry
        t0, rows_new = _block(i, t_size, n)

        def cut(a):
            return lax.dynamic_slice_in_dim(a, t0, t_size, 0)

        h_t, y_t = cut(h), cut(y_local)
        z = _logits(h_t, w, b, s)  # [T, V_local]
        if stats_in is None:
            # The max over every column is the shift; the label is left out of the sum only,
            # block by block as in the gradient sweep below. (One select over the whole
            # [T, V] block would be written out by XLA:CPU's reduction kernels: 259 against
            # 167 MiB of temporaries at V = 131072 in f32; TPU v5e: 392 against 384 MiB.)
            zm = z if not s.vocab_padded else jnp.where(real_col[None, :], z, -jnp.inf)
            m_o = jnp.max(zm, axis=1)

            def sums(acc, j):
                # Σ_{j≠y} exp(z_j − m) and, for smoothing, Σ_j w_j (z_j − m) over one block.
                s_acc, wd_acc = acc
                v0, ok = _block(j, b_size, v)
                keep = ok[None, :] & ((v0 + jnp.arange(b_size))[None, :] != y_t[:, None])
                d = lax.dynamic_slice_in_dim(zm, v0, b_size, 1) - _finite(m_o)[:, None]
                s_acc = s_acc + jnp.sum(jnp.where(keep, jnp.exp(d), 0.0), axis=1)
                if smooth:
                    w_b = jnp.where(ok, lax.dynamic_slice_in_dim(w_all, v0, b_size, 0), 0.0)
                    term = jnp.where(w_b[None, :] != 0, w_b[None, :] * d, 0.0)
                    wd_acc = wd_acc + jnp.sum(term, axis=1)
                return (s_acc, wd_acc), None

            tz = jnp.zeros((t_size,), cdt)
            (s_o, wd), _ = lax.scan(sums, (tz, tz), jnp.arange(-(-v // b_size)))
            in_shard = (y_t >= 0) & (y_t < v)
            zy = jnp.take_along_axis(z, jnp.clip(y_t, 0, v - 1)[:, None], axis=1)[:, 0]
            zy = jnp.where(in_shard, zy, 0.0)
            st = _finish_stats(s, m_o, s_o, zy, wd, jnp.sum(w_all))
        else:
            # The backward pass of the per-token rule: the forward pass's statistics.
            st = _Stats(*(cut(a) for a in stats_in))
        _, rows, _, log_s = _rows(s, st, cut(wy), cut(valid), cut(labels), w_tot)
        q_t = cut(q)
        coef, g_y = q_t * rows.coef, q_t * rows.g_y
        cs = jnp.where(rows.use, q_t * (eps / s.num_classes), 0.0)
        # Rows counted by an earlier (overlapping) chunk add nothing to the weight-side sums;
        # their grad_h rows are recomputed identically and simply written again.
        h_new = jnp.where(rows_new[:, None], h_t, jnp.zeros_like(h_t))
        in_dtype = h.dtype

        def vocab_step(c, j):
            gh_t, gw, gb, zcol, gcap = c
            v0, ok = _block(j, b_size, v)
            ok = ok & lax.dynamic_slice_in_dim(real_col, v0, b_size, 0)
            z_b = lax.dynamic_slice_in_dim(z, v0, b_size, 1)
            d = z_b - st.m[:, None]
            cols = v0 + jnp.arange(b_size)
            g = jnp.where(cols[None, :] == y_t[:, None], g_y[:, None], coef[:, None] * jnp.exp(d))
            if smooth:
                g = g - cs[:, None] * lax.dynamic_slice_in_dim(w_all, v0, b_size, 0)[None, :]
            if gcap is not None:
                # A traced c: z = c·tanh(u/c), so ∂z/∂c = t − atanh(t)·(1 − t²) with t = z/c
                # (the second term underflows to 0 where t rounds to ±1), and ∂z/∂u = 1 − t².
                t = z_b / s.softcap
                slope = 1.0 - jnp.square(t)
                inner = jnp.abs(t) < 1
                dz_dc = t - jnp.where(inner, jnp.arctanh(jnp.where(inner, t, 0.0)) * slope, 0.0)
                keep = rows_new[:, None] & ok[None, :]
                gcap = gcap + jnp.sum(jnp.where(keep, g * dz_dc, 0.0))
                g = g * slope
            elif s.softcap is not None:
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
                # lse − z = log_s − (z − m): per element, so exact at any offset.
                keep = rows_new[:, None] & ok[None, :] & (cs[:, None] != 0)
                zc = jnp.sum(jnp.where(keep, cs[:, None] * (log_s[:, None] - d), 0.0), axis=0)
                zcol = lax.dynamic_update_slice_in_dim(
                    zcol, lax.dynamic_slice_in_dim(zcol, v0, b_size, 0) + zc, v0, 0
                )
            return (gh_t, gw, gb, zcol, gcap), None

        init = (jnp.zeros((t_size, d), cdt), gw, gb, zcol, gcap)
        (gh_t, gw, gb, zcol, gcap), _ = lax.scan(vocab_step, init, jnp.arange(-(-v // b_size)))
        upd = lax.dynamic_update_slice_in_dim
        st_all = _Stats(*(upd(a, x, t0, 0) for a, x in zip(st_all, st, strict=True)))
        carry = (st_all, upd(gh_all, gh_t.astype(gh_all.dtype), t0, 0), gw, gb, zcol, gcap)
        return carry, None

    zero = jnp.zeros((n,), cdt)
    init = (
        _Stats(zero, zero, zero, zero),
        jnp.zeros((n, d), cdt),
        jnp.zeros((d, v), cdt),
        jnp.zeros((v,), cdt) if b is not None else None,
        jnp.zeros((v,), cdt) if need_zcol else None,
        None if _checks.is_static(s.softcap) or s.softcap is None else jnp.zeros((), cdt),
    )
    (st, gh, gw, gb, zcol, gcap), _ = lax.scan(token_step, init, jnp.arange(-(-n // t_size)))
    if s.mesh is not None:
        if s.model_axis is not None:
            gh = lax.psum(gh, s.model_axis)
            gcap = None if gcap is None else lax.psum(gcap, s.model_axis)
        if s.data_axis is not None:
            gw, gb, zcol, gcap = lax.psum((gw, gb, zcol, gcap), s.data_axis)
    return st, gh, gw, gb, zcol, gcap


# ----------------------------------------------------------------------------------------------
# Single device or shard_map


def _specs(s: _Static) -> tuple[P, P, P, P]:
    return P(s.data_axis), P(s.data_axis, None), P(None, s.model_axis), P(s.model_axis)


def _explicit_only(mesh: Mesh, spec: P) -> P:
    """`spec` with the mesh axes that are not Explicit replaced by None."""
    explicit = {
        a for a, t in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if t == jax.sharding.AxisType.Explicit
    }  # fmt: skip

    def keep(entry: Any) -> Any:
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        kept = tuple(a for a in names if a in explicit)
        return kept[0] if len(kept) == 1 else (kept or None)

    return P(*(keep(e) for e in spec))


def _place(mesh: Mesh, pairs: tuple[tuple[Any, P], ...]) -> list[Any]:
    """Each array resharded to its `shard_map` in-spec over the mesh's Explicit axes.

    On an Explicit axis `shard_map` requires the inputs to carry exactly its in-specs (it does
    not reshard them), and the inputs arrive in any layout: replicated, sharded by the caller,
    or padded here. Auto axes are left to `shard_map`, which constrains its inputs itself.
    """
    out = []
    for x, spec in pairs:
        if x is not None:
            want = _explicit_only(mesh, spec)
            if any(e is not None for e in want) or _checks.explicitly_sharded(x):
                x = jax.sharding.reshard(x, jax.sharding.NamedSharding(mesh, want))
        out.append(x)
    return out


def _with_hyper(kernel, s: _Static, hyper: Hyper):
    """`kernel` with the options joined in, taking the traced ones as its first argument (a
    tuple of scalars, replicated under shard_map: spec P() each)."""
    where = tuple(i for i, x in enumerate(hyper) if x is not None)

    def fn(traced, *args):
        full = [None, None, None]
        for i, x in zip(where, traced, strict=True):
            full[i] = x
        return kernel(_join(s, cast(Hyper, tuple(full))), *args)

    return fn, tuple(hyper[i] for i in where)


def _stats(s: _Static, hyper: Hyper, h, w, b, cw, labels) -> _Stats:
    fn, traced = _with_hyper(_stats_local, s, hyper)
    if s.mesh is None:
        return fn(traced, h, w, b, cw, labels)
    tok, tokd, wsp, vsp = _specs(s)
    in_specs = (tokd, wsp, vsp, vsp, tok)
    args = _place(s.mesh, tuple(zip((h, w, b, cw, labels), in_specs, strict=True)))
    # check_vma=False: the kernels place their collectives by hand, and nothing differentiates
    # through this shard_map (the custom_vjp rules below wrap it).
    return jax.shard_map(
        fn,
        mesh=s.mesh,
        in_specs=(tuple(P() for _ in traced), *in_specs),
        out_specs=_Stats(tok, tok, tok, tok),
        check_vma=False,
    )(traced, *args)


def _grads(s: _Static, hyper: Hyper, h, w, b, cw, labels, wy, valid, q, w_tot, stats_in):
    fn, traced = _with_hyper(_grads_local, s, hyper)
    args = (h, w, b, cw, labels, wy, valid, q, w_tot, stats_in)
    if s.mesh is None:
        return fn(traced, *args)
    tok, tokd, wsp, vsp = _specs(s)
    st = None if stats_in is None else _Stats(tok, tok, tok, tok)
    in_specs = (tokd, wsp, vsp, vsp, tok, tok, tok, tok, P())
    placed = _place(s.mesh, tuple(zip(args[:-1], in_specs, strict=True)))
    if stats_in is not None:
        stats_in = _Stats(*_place(s.mesh, tuple((a, tok) for a in stats_in)))
    sharded = jax.shard_map(
        fn,
        mesh=s.mesh,
        in_specs=(tuple(P() for _ in traced), *in_specs, st),
        out_specs=(_Stats(tok, tok, tok, tok), tokd, wsp, vsp, vsp, P()),
        check_vma=False,
    )
    return cast(Any, sharded)(traced, *placed, stats_in)


# ----------------------------------------------------------------------------------------------
# Loss from per-token statistics, and the two differentiation rules


def _class_weight_sum(s: _Static, cw: jax.Array | None, cdt: Any) -> jax.Array:
    """Σ_j w_j over the real classes (V without class weights)."""
    if cw is None:
        return jnp.asarray(float(s.num_classes), cdt)
    return jnp.sum(cw.astype(cdt))  # a sharded vocabulary's padding columns have weight 0


def _loss_and_label_grad(s: _Static, st: _Stats, wy, valid, labels, cw):
    """Per-token losses, ∂loss/∂w_y (the label's class weight) and Σ_j w_j, from the
    statistics; and (∂loss/∂ε, ∂loss/∂λ_z) per token where those options are traced (None
    each where static)."""
    w_tot = _class_weight_sum(s, cw, st.m.dtype)
    loss, rows, nll, log_s = _rows(s, st, wy, valid, labels, w_tot)
    gwy = jnp.where(rows.use, (1.0 - s.label_smoothing) * nll, 0.0)
    slopes = (None, None)
    if not (_checks.is_static(s.label_smoothing) and _checks.is_static(s.z_loss)):
        smooth = (w_tot, st.wd, float(s.num_classes)) if _smoothing(s) else None
        bad = valid & (labels < 0)
        d_eps, d_zl = _options.option_slopes(st.m, nll, log_s, wy, valid, bad, smooth)
        slopes = (
            None if _checks.is_static(s.label_smoothing) else d_eps,
            None if _checks.is_static(s.z_loss) else d_zl,
        )
    return loss, gwy, w_tot, slopes


def _hyper_grads(hyper: Hyper, slopes, gcap, q) -> Hyper:
    """The traced options' cotangents: Σ_i q_i·∂loss_i/∂(ε, λ_z), and the soft-cap's."""
    d_eps, d_zl = slopes
    out = (
        None if d_eps is None else jnp.sum(q * d_eps),
        None if d_zl is None else jnp.sum(q * d_zl),
        gcap,
    )
    return cast(Hyper, tuple(_cast_like(g, x) for x, g in zip(hyper, out, strict=True)))


def _cast_like(g, x):
    """`g` in the dtype and, on an Explicit mesh, the sharding of the primal `x` (custom_vjp
    checks both; a gradient formed outside shard_map, like zeros, is not sharded)."""
    if x is None:
        return None
    g = g.astype(x.dtype)
    want = jax.typeof(x).sharding
    if not want.mesh.empty and jax.typeof(g).sharding.spec != want.spec:
        g = jax.sharding.reshard(g, want)
    return g


def _per_token_primal(s: _Static, h, w, b, cw, wy, labels, valid, hyper):
    st = _stats(s, hyper, h, w, b, cw, labels)
    return _loss_and_label_grad(_join(s, hyper), st, wy, valid, labels, cw)[0]


def _per_token_fwd(s: _Static, h, w, b, cw, wy, labels, valid, hyper):
    st = _stats(s, hyper, h, w, b, cw, labels)
    loss = _loss_and_label_grad(_join(s, hyper), st, wy, valid, labels, cw)[0]
    # Residuals: the inputs, and four numbers per token. No [N, V] block survives the pass.
    return loss, (h, w, b, cw, wy, labels, valid, st, hyper)


def _per_token_bwd(s: _Static, res, ct):
    h, w, b, cw, wy, labels, valid, st, hyper = res
    _, gwy, w_tot, slopes = _loss_and_label_grad(_join(s, hyper), st, wy, valid, labels, cw)
    _, gh, gw, gb, zcol, gcap = _grads(s, hyper, h, w, b, cw, labels, wy, valid, ct, w_tot, st)
    return (
        gh.astype(h.dtype),
        gw.astype(w.dtype),
        _cast_like(gb, b),
        _weights_grad(s, cw, zcol),
        _cast_like(ct * gwy, wy),
        None,
        None,
        _hyper_grads(hyper, slopes, gcap, ct),
    )


def _weights_grad(s: _Static, cw, zcol):
    """The smoothing part of the class weights' gradient (the label part flows through w_y)."""
    if cw is None:
        return None
    return _cast_like(jnp.zeros(cw.shape, cw.dtype) if zcol is None else zcol, cw)


_per_token = jax.custom_vjp(_per_token_primal, nondiff_argnums=(0,))
_per_token.defvjp(_per_token_fwd, _per_token_bwd)


def _summed_primal(s: _Static, h, w, b, cw, wy, labels, valid, hyper):
    return jnp.sum(_per_token(s, h, w, b, cw, wy, labels, valid, hyper))


def _summed_fwd(s: _Static, h, w, b, cw, wy, labels, valid, hyper):
    # The cotangent of a sum is one scalar, so the gradients can be formed while the logits
    # are computed (6·N·D·V flops instead of 8) and scaled in the backward pass.
    cdt = compute_dtype(h.dtype)
    w_tot = _class_weight_sum(s, cw, cdt)
    q = jnp.ones(labels.shape, cdt)
    st, gh, gw, gb, zcol, gcap = _grads(s, hyper, h, w, b, cw, labels, wy, valid, q, w_tot, None)
    loss, gwy, _, slopes = _loss_and_label_grad(_join(s, hyper), st, wy, valid, labels, cw)
    total = jnp.sum(loss)
    # h, w, b, cw are kept only for their dtypes (they are live inputs anyway).
    res = (gh, gw, gb, _weights_grad(s, cw, zcol), gwy, (h, w, b, cw))
    return total, (*res, _hyper_grads(hyper, slopes, gcap, q))


def _summed_bwd(s: _Static, res, ct):
    gh, gw, gb, gcw, gwy, (h, w, b, cw), g_hyper = res

    def scale(g, like):
        return None if like is None else _cast_like(ct * g, like)

    grads = (scale(gh, h), scale(gw, w), scale(gb, b), scale(gcw, cw), scale(gwy, gwy))
    return (*grads, None, None, tuple(None if g is None else ct * g for g in g_hyper))


_summed = jax.custom_vjp(_summed_primal, nondiff_argnums=(0,))
_summed.defvjp(_summed_fwd, _summed_bwd)


# ----------------------------------------------------------------------------------------------
# Public function


def _axis_size(mesh: Mesh, axis: AxisName) -> int:
    if axis is None:
        return 1
    names = (axis,) if isinstance(axis, str) else tuple(axis)
    for a in names:
        if a not in mesh.shape:
            raise ValueError(
                f"{_FN}: `mesh_axes` names {a!r}, which is not an axis of `mesh` "
                f"(axes {tuple(mesh.axis_names)})."
            )
    return math.prod(mesh.shape[a] for a in names)


@_checks.public
def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    where: ArrayLike | None = None,
    *,
    bias: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    class_weights: ArrayLike | None = None,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "none",
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    mesh_axes: tuple[AxisName, AxisName] = ("data", "model"),
    check_labels: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Cross-entropy of the logits ``hidden @ weight + bias``, computed without forming them.

    The result (and every option) is that of ``cross_entropy(hidden @ weight + bias, labels,
    ...)``, but the ``[N, V]`` logits are never stored: they are computed in chunks, reduced to
    a few numbers per token, and recomputed or consumed on the spot for the gradients. With
    :math:`z = \operatorname{cap}(h W + b)`, :math:`\operatorname{cap}(z) = c\tanh(z/c)` (only
    with ``logit_softcap``), class weights :math:`w`, smoothing :math:`\varepsilon` and
    :math:`L = \log\sum_j e^{z_j}`, the loss of a valid example with label :math:`y` is

    In plain text: the cross-entropy of the logits z = hidden @ weight + bias, with lse L = log
    Σ_j exp(z_j): ℓ = (1−ε)·w_y·(L − z_y) + (ε/V)·Σ_j w_j·(L − z_j) + λ_z·L².

    .. math::

        \ell = (1 - \varepsilon)\, w_y\, (L - z_y)
               + \frac{\varepsilon}{V} \sum_{j=1}^{V} w_j\, (L - z_j)
               + \lambda_z L^2 .

    Args:
        hidden: ``[..., D]`` floating hidden states (e.g. the last layer's output).
        weight: ``[D, V]`` floating projection to the ``V`` classes (the vocabulary).
        labels: ``[...]`` integer class indices, the shape of ``hidden`` without its last axis.
        where: optional boolean example mask broadcastable to ``labels.shape``; ``False``
            examples get loss 0 and gradient 0 and are left out of the mean's count.
        bias: optional ``[V]`` bias added to the logits.
        ignore_index: label value marking an example to ignore, like ``where=False``.
            Any other label outside ``[0, V)`` gives a NaN loss (and NaN gradients).
        label_smoothing: :math:`\varepsilon \in [0, 1]`.
        class_weights: optional ``[V]`` weights :math:`w` (PyTorch's ``weight``); all ones when
            ``None``. Differentiable.
        z_loss: :math:`\lambda_z \ge 0`, weight of PaLM's :math:`L^2` penalty (not
            class-weighted).
        logit_softcap: :math:`c > 0`, caps the logits at :math:`\pm c` through ``tanh``;
            ``inf`` means no cap.

            ``label_smoothing``, ``z_loss`` and ``logit_softcap`` may be traced (a schedule's
            value under ``jit``: one compiled program serves every value), and are then
            differentiable; a Python number is checked when the function is traced (and 0 or
            ``None`` compiles no term), a traced value outside its range gives NaN losses.
        reduction: ``"none"`` (shape ``labels.shape``), ``"sum"``, ``"mean"`` (sum over the sum
            of the valid examples' :math:`w_y`; 0 only when no example is valid) or
            ``"sum_and_count"`` (the pair ``(sum, count)``, for gradient accumulation).
        chunk_size: tokens per chunk (per device). ``None`` picks it automatically (see
            Memory). Larger chunks mean fewer, larger matrix products and fewer passes over
            the weight gradient; smaller chunks mean less memory. With a symbolic number of
            tokens (``jax.export``) both passes use the gradient's chunk and the tokens are
            padded to a multiple of it (a copy of ``hidden``).
        mesh: a :class:`jax.sharding.Mesh` to run sharded with ``shard_map``: the tokens split
            over the mesh axis ``mesh_axes[0]``, the classes (columns of ``weight``) over
            ``mesh_axes[1]``. Shards combine their max / sum / label logit with ``pmax`` and
            ``psum``; the weight is never gathered. Sizes need not divide the mesh (padding
            costs a copy then).
        weights: optional per-token float weights ``s`` of ``labels``' shape (or broadcasting
            to it), differentiable: each loss becomes ``s·ℓ``, ``"mean"`` is
            ``Σ s·w_y·ℓ / Σ s·w_y`` over the kept tokens and ``"sum_and_count"`` counts
            ``Σ s·w_y``. With weights the reductions run on the per-token losses (the
            backward pass recomputes the logits, as with ``"none"``).
        mesh_axes: ``(token_axis, class_axis)``, names of ``mesh`` axes (or tuples of names, or
            ``None`` for not split). Ignored without ``mesh``.
        check_labels: if True, raise naming the first label outside ``[0, V)`` and its
            position, as ``cross_entropy`` does (a host callback; not exportable).

    Returns:
        float32 (float64 for float64 inputs) loss of shape ``labels.shape`` for
        ``reduction="none"``, a scalar for ``"sum"`` and ``"mean"``, or a pair of scalars for
        ``"sum_and_count"``.

    Memory:
        Besides the inputs and the gradients: without differentiation, ``[T, 4096]`` tiles of
        f32 logits (``T = chunk_size``, 512 by default; a vocabulary of at most 4096 classes
        is one ``[T, V]`` tile with ``T`` chosen as below). With differentiation, one ``[T, V]``
        f32 block (``V`` per device when sharded), by default ``T`` ≈ 2²⁵ / ``V`` tokens
        (128 MiB of logits), between 8 and 1024, plus f32 gradient accumulators. The forward
        and backward passes share only per-token numbers (log-sum-exp, label logit). With
        ``"sum"``, ``"mean"`` or ``"sum_and_count"`` the gradients are formed *during* the
        forward pass, with the logits computed once (6·N·D·V flops, as autodiff of the unfused
        formula), and scaled by the incoming cotangent in the backward pass. With ``"none"``
        the backward pass recomputes the logits (8·N·D·V flops in all): sum with
        ``reduction="sum"`` rather than ``jnp.sum`` afterwards.

    Numerics:
        Logits are accumulated in float32 (``preferred_element_type``) from bf16/f16 inputs,
        identically in the forward and backward passes, and everything after the matrix
        product is float32. The log-sum-exp is max-shifted and combined across vocabulary
        blocks and shards by online rescaling; a vocabulary that is not a multiple of the
        block never brings padding into it. ``dloss/dlogits`` blocks are rounded to the input
        dtype before the gradient matrix products (as autodiff of the unfused formula does),
        which accumulate in float32. Gradients come back in the inputs' dtypes.
        Reverse mode only: the rules are ``jax.custom_vjp``, so ``jax.jvp`` / ``jax.jacfwd``
        raise a ``TypeError``; use reverse mode, or the unfused ``cross_entropy``.

    References:
        Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training", 2024,
        arXiv:2410.10989. Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
        2024, arXiv:2411.09009. For the options: Szegedy et al. 2016 (label smoothing),
        Chowdhery et al. 2022 (z-loss), Gemma Team 2024 (soft-capping); see ``cross_entropy``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import jaxloss
        >>> kh, kw = jax.random.split(jax.random.key(0))
        >>> hidden = jax.random.normal(kh, (4, 8))
        >>> weight = jax.random.normal(kw, (8, 10)) / 3
        >>> labels = jnp.array([1, 0, 9, 3])
        >>> loss = jaxloss.linear_cross_entropy(hidden, weight, labels)
        >>> print(loss.shape, loss.dtype)
        (4,) float32
        >>> ref = -jnp.take_along_axis(
        ...     jax.nn.log_softmax(hidden @ weight), labels[:, None], axis=-1)[:, 0]
        >>> print(bool(jnp.allclose(loss, ref, atol=1e-5)))
        True
        >>> mean = jaxloss.linear_cross_entropy(hidden, weight, labels, reduction="mean")
        >>> print(f"{mean:.4f} {jnp.mean(ref):.4f}")
        2.5167 2.5167
    """
    check_floating(hidden, "hidden", _FN)
    check_floating(weight, "weight", _FN)
    check_integer_labels(labels, _FN, "softmax_cross_entropy")
    opts, reduction = _options.parse(
        _FN,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        logit_softcap=logit_softcap,
        reduction=reduction,
        traced_ok=True,
    )
    ignore_index = _options.check_ignore_index(ignore_index, _FN)
    if ignore_index is not None:
        _checks.check_index(ignore_index, "ignore_index", _FN)
    _checks.check_label_values(labels, _FN)
    h_shape, w_shape, y_shape = np.shape(hidden), np.shape(weight), tuple(np.shape(labels))
    if len(w_shape) != 2:
        raise ValueError(f"{_FN}: `weight` must have shape [D, V], got shape {w_shape}.")
    if len(h_shape) < 1 or h_shape[-1] != w_shape[0]:
        transposed = len(h_shape) >= 1 and h_shape[-1] == w_shape[1]
        raise ValueError(
            f"{_FN}: the last dimension of `hidden` (shape {h_shape}) must equal the first "
            f"dimension of `weight` (shape {w_shape})."
            + (
                " `weight` looks like [V, D] (PyTorch's `nn.Linear.weight`, a tied embedding "
                "table): pass `weight.T`."
                if transposed
                else ""
            )
        )
    if tuple(h_shape[:-1]) != y_shape:
        raise ValueError(
            f"{_FN}: `labels` must have the shape of `hidden` without its last axis: `hidden` "
            f"has shape {h_shape}, so `labels` should be {tuple(h_shape[:-1])}, got {y_shape}."
        )
    d, v = w_shape
    if v == 0:
        raise ValueError(f"{_FN}: `weight` has no classes (shape {w_shape}).")
    if bias is not None:
        check_floating(bias, "bias", _FN)
        if np.shape(bias) != (v,):
            raise ValueError(
                f"{_FN}: `bias` must have shape [V] = ({v},) for `weight` of shape "
                f"{w_shape}, got {np.shape(bias)}."
            )
    cw = _options.class_weight_table(class_weights, v, "weight", w_shape, _FN)
    if where is not None:
        if not jnp.issubdtype(jnp.result_type(where), jnp.bool_):
            raise TypeError(
                f"{_FN}: `where` must be a boolean mask, got dtype {jnp.result_type(where)} "
                f"with shape {np.shape(where)}."
            )
        try:
            ok = np.broadcast_shapes(np.shape(where), y_shape) == y_shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{_FN}: `where` with shape {np.shape(where)} must broadcast to the example "
                f"shape {y_shape} (`labels`' shape); class masks are not supported."
            )
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"{_FN}: `chunk_size` must be a positive int, got {chunk_size!r}.")

    dtype = jnp.result_type(hidden, weight)
    cdt = compute_dtype(dtype)
    h = jnp.asarray(hidden, dtype).reshape(-1, d)
    w = jnp.asarray(weight, dtype)
    n = h.shape[0]
    valid = jnp.ones(y_shape, bool)
    if where is not None:
        valid = valid & jnp.broadcast_to(where, y_shape)
    y, in_range, valid = _options.labels_and_valid(
        _FN, jnp.asarray(labels), v, valid, ignore_index, check_labels
    )
    # Out-of-range labels become -1: no column matches them, and their rows' loss is NaN.
    y = jnp.where(in_range, y, -1).astype(jnp.int32).reshape(-1)
    valid = valid.reshape(-1)
    b = None if bias is None else jnp.asarray(bias)
    wy = jnp.ones((n,), cdt) if cw is None else _checks.take(cw.astype(cdt), jnp.maximum(y, 0))

    # With per-token weights the reductions run on the per-token losses.
    token_weights = _options.example_weights(weights, y_shape, _FN, "the shape of `labels`")
    valid_tokens, wy_tokens = valid.reshape(y_shape), wy.reshape(y_shape)

    if n == 0:
        per_example = jnp.zeros(y_shape, cdt)
        if reduction == "none" and token_weights is None:
            return per_example
        return _options.reduce(per_example, reduction, valid_tokens, wy_tokens, token_weights)

    if mesh is None:
        placed = [a for a in (h, w, b, cw) if a is not None and _checks.explicitly_sharded(a)]
        if placed:
            # The chunked loops update slices of their outputs in place, which an Explicit
            # sharding forbids; shard_map (given the mesh) runs them on each device's shard.
            spec = jax.typeof(placed[0]).sharding.spec
            raise ValueError(
                f"{_FN}: inputs sharded over Explicit mesh axes (e.g. {spec}) need `mesh=` "
                "(and `mesh_axes=(token_axis, class_axis)`), so that each device runs the "
                "fused loss on its own shard; or pass them replicated."
            )
    data_axis, model_axis = (None, None) if mesh is None else tuple(mesh_axes)
    vocab_padded = False
    dp = 1 if mesh is None else _axis_size(mesh, data_axis)
    mp = 1 if mesh is None else _axis_size(mesh, model_axis)
    v_pad = -v % mp
    token_chunk = chunk_size
    n_to = dp  # the token count is padded to a multiple of this
    if not isinstance(n, int):
        if mesh is not None:
            # The export lowers, but calling it crashed XLA:CPU (JAX 0.10.2, 8 host devices).
            raise ValueError(
                f"{_FN}: `mesh` needs a concrete number of tokens, got the symbolic shape "
                f"{h_shape} for `hidden` (jax.export shape polymorphism): export with concrete "
                "shapes, or without `mesh`."
            )
        # A symbolic token count (jax.export): no chunk can be fitted to it, so both passes
        # use one chunk chosen from the static sizes, and the tokens are padded to a multiple
        # of it (per shard); padded tokens are invalid, like the mesh's padding.
        token_chunk = chunk_size or _auto_chunk((v + v_pad) // mp, forward_only=False)
        n_to = dp * token_chunk
    # Written as a product so that a symbolic count is provably a multiple of `n_to`.
    n_pad = n_to * (-(-n // n_to)) - n
    if not isinstance(n_pad, int) or n_pad:
        h = jnp.pad(h, ((0, n_pad), (0, 0)))
        y = jnp.pad(y, (0, n_pad), constant_values=-1)
        valid = jnp.pad(valid, (0, n_pad))
        wy = jnp.pad(wy, (0, n_pad), constant_values=1.0)
    if mesh is not None:
        if v_pad:
            vocab_padded = True
            w = jnp.pad(w, ((0, 0), (0, v_pad)))
            b = None if b is None else jnp.pad(b, (0, v_pad))
            cw = None if cw is None else jnp.pad(cw, (0, v_pad))
    static, hyper = _split(opts)
    # Traced options in the compute dtype (differentiable: the rules give their cotangents).
    hyper = cast(Hyper, tuple(None if x is None else x.astype(cdt) for x in hyper))
    s = _Static(
        num_classes=v,
        label_smoothing=static.eps,
        z_loss=static.zl,
        softcap=static.cap,
        token_chunk=token_chunk,
        vocab_block=_VOCAB_BLOCK,
        vocab_padded=vocab_padded,
        mesh=mesh,
        data_axis=data_axis,
        model_axis=model_axis,
    )
    args = (h, w, b, cw, wy, y, valid)
    if mesh is not None:
        # The custom_vjp rules' inputs already in their shard_map layout, so that the gradients
        # (which come out of shard_map in that layout) match them; autodiff of the reshard
        # brings them back to the caller's layout.
        tok, tokd, wsp, vsp = _specs(s)
        args = _place(mesh, tuple(zip(args, (tokd, wsp, vsp, vsp, tok, tok, tok), strict=True)))
    if reduction == "none" or token_weights is not None:
        out = cast(jax.Array, _per_token(s, *args, hyper))
        if mesh is not None and out.shape[0] != n:
            # An Explicit axis cannot slice padding off a sharded dimension: replicate the
            # per-token losses (N numbers) first.
            (out,) = _place(mesh, ((out, P(None)),))
        out = out[:n].reshape(y_shape)
        if token_weights is None:
            return out
        return _options.reduce(out, reduction, valid_tokens, wy_tokens, token_weights)
    total = cast(jax.Array, _summed(s, *args, hyper))
    return _checks.reduce_loss(total[None], reduction, valid, wy)
