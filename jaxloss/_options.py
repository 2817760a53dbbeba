"""The options of the integer-label losses, in one place.

`cross_entropy`, `nll_loss` and `linear_cross_entropy` (and the losses built on them) share:

* `parse`: the scalar options (label smoothing, z-loss, soft-cap, reduction), checked at trace
  time with the called function's name;
* `class_weight_table`: `class_weights` as a differentiable ``[K]`` array (lists and integer
  arrays accepted);
* `labels_and_valid`: labels widened so comparisons cannot wrap, the in-range mask, the
  validity mask (example mask and ``ignore_index``), and the ``check_labels`` report
  (`_checks.reduce_loss` then reduces every loss with that mask and the labels' weights);
* `label_rows`: from a kernel's per-row statistics (the shift ``m``, ``d_y = x_y − m``, the mass
  off the label ``r = Σ_{j≠y} exp(x_j − m)`` and, with smoothing, ``Σ_j w_j`` and
  ``Σ_j w_j (x_j − m)``), the loss and every per-row gradient coefficient;
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxloss import _checks
from jaxloss._softmax import finite_log_sum


class Options(NamedTuple):
    """Scalar options. A Python float is static (hashable, so kernels may take it as a nondiff
    argument, and 0 compiles no term); a traced scalar array (a schedule's value) is split off
    by `split` and passed to the kernel as a differentiable argument."""

    eps: Any  # label smoothing ε
    zl: Any  # z-loss weight λ_z
    cap: Any  # soft-cap c, None for none


def parse(
    fn: str,
    *,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    logit_softcap: Any = None,
    reduction: Any = "none",
    traced_ok: bool = False,
) -> tuple[Options, str]:
    """Check the scalar options once, for every loss; `logit_softcap=inf` means no cap.

    With `traced_ok`, a traced option is kept as a float scalar array, NaN where it is out of
    range (`_checks.traced_number`); without, it is refused naming the option."""
    _checks.check_reduction(reduction, fn)
    number = _checks.traced_number if traced_ok else _checks.static_number
    eps = number(label_smoothing, "label_smoothing", fn, low=0.0, high=1.0)
    zl = number(z_loss, "z_loss", fn, low=0.0)
    cap = None
    if logit_softcap is not None:
        cap = number(logit_softcap, "logit_softcap", fn, low=0.0, low_open=True, allow_inf=True)
        cap = None if _checks.is_static(cap) and cap == float("inf") else cap
    return Options(eps, zl, cap), reduction


def is_zero(value: Any) -> bool:
    """A static option equal to 0 (its term is left out of the program); never a traced one."""
    return _checks.is_static(value) and value == 0


def split(opts: Options) -> tuple[Options, tuple[Any, Any]]:
    """(static options, (traced ε or None, traced λ_z or None)): the static part is hashable
    (a traced field reads None there, and the soft-cap, applied before the kernel, is dropped)."""
    eps = None if _checks.is_static(opts.eps) else opts.eps
    zl = None if _checks.is_static(opts.zl) else opts.zl
    static = Options(
        None if eps is not None else opts.eps, None if zl is not None else opts.zl, None
    )
    return static, (eps, zl)


def join(static: Options, traced: tuple[Any, Any]) -> Options:
    """The options a kernel computes with: `split`'s traced values back in their places."""
    eps, zl = traced
    return static._replace(
        eps=static.eps if eps is None else eps, zl=static.zl if zl is None else zl
    )


def softcap(x: Array, cap: Any) -> Array:
    """``c·tanh(x/c)`` in the compute dtype (the identity without a cap or with a traced
    ``c = inf``)."""
    if cap is None:
        return x
    xf = x.astype(_checks.compute_dtype(x.dtype))
    if _checks.is_static(cap):
        return cap * jnp.tanh(xf / cap)
    c = cap.astype(xf.dtype)
    no_cap = jnp.isinf(c)
    # Double where: the untaken c·tanh(x/c) at c = inf would be inf·0 (NaN in its derivative).
    safe = jnp.where(no_cap, jnp.ones_like(c), c)
    return jnp.where(no_cap, xf, safe * jnp.tanh(xf / safe))


def class_weight_table(
    class_weights: Any,
    k: int,
    name: str,
    shape: tuple,
    fn: str,
    option: str = "class_weights",
    scalar_ok: bool = False,
) -> Any:
    """Per-class weights (`class_weights`, a focal loss's `alpha`) as a ``[K]`` (or, with
    `scalar_ok`, ``[]``) float array, differentiable; lists and integers accepted. None: None."""
    if class_weights is None:
        return None
    cw = jnp.asarray(class_weights)
    if jnp.issubdtype(cw.dtype, jnp.integer) or cw.dtype == jnp.bool_:
        cw = cw.astype(jnp.float32)
    if not jnp.issubdtype(cw.dtype, jnp.floating):
        raise TypeError(
            f"{fn}: `{option}` must be real numbers, got dtype {cw.dtype} with shape {cw.shape}."
        )
    if cw.shape != (k,) and not (scalar_ok and cw.shape == ()):
        scalar = "be a scalar or " if scalar_ok else ""
        raise ValueError(
            f"{fn}: `{option}` must {scalar}have shape ({k},) for {k} classes (`{name}` of "
            f"shape {tuple(shape)}), got {cw.shape}."
        )
    return cw


# ---------------------------------------------------------------------------------------------
# Labels: the validity mask and `check_labels`.


class LabelError(ValueError):
    """An integer label outside ``[0, K)`` found by ``check_labels=True``."""


class _QuietLabelErrors(logging.Filter):
    """JAX logs every failing callback with its traceback before re-raising it; our report is the
    message itself, so its log record (a wall of traceback above it) is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, LabelError)


logging.getLogger("jax._src.callback").addFilter(_QuietLabelErrors())


def _label_message(fn, labels, ok, k, ignore_index) -> str | None:
    labels, ok = np.asarray(labels), np.asarray(ok)
    bad = np.flatnonzero(~ok.reshape(-1))
    if not bad.size:
        return None
    pos = tuple(int(i) for i in np.unravel_index(bad[0], ok.shape))
    value = int(np.broadcast_to(labels, ok.shape)[pos])
    msg = (
        f"{fn}: label {value} at position {pos} is outside [0, {k}) "
        f"({bad.size} bad label(s) in all)."
    )
    if value == -100 and ignore_index is None:
        msg += " If -100 marks padding, pass ignore_index=-100 to leave those examples out."
    return msg


def _report_labels(fn: str, labels: Array, ok: Array, k: int, ignore_index: Any) -> Array:
    """Raise a `LabelError` naming the first bad label and its position.

    Concrete labels are checked here, at call time. Traced ones (under `jit`, `vmap`, `scan`) go
    through a host callback: under `vmap` it sees the whole batch (``vmap_method="expand_dims"``),
    so the position is the one in the batch the user passed. The callback's result (all True)
    feeds the validity mask, so XLA cannot drop it.
    """
    try:
        concrete = np.asarray(labels), np.asarray(ok)
    except jax.errors.TracerArrayConversionError:
        concrete = None
    if concrete is not None:
        msg = _label_message(fn, *concrete, k, ignore_index)
        if msg:
            raise LabelError(msg)
        return jnp.ones(ok.shape, bool)

    def report(labels, ok):
        msg = _label_message(fn, labels, ok, k, ignore_index)
        if msg:
            print(f"jaxloss: {msg}", file=sys.stderr, flush=True)
            raise LabelError(msg)
        return np.ones(np.shape(ok), bool)

    out = jax.ShapeDtypeStruct(ok.shape, jnp.bool_)
    return jax.pure_callback(report, out, labels, ok, vmap_method="expand_dims")


def labels_and_valid(
    fn: str,
    labels: Array,
    k: int,
    valid: Array,
    ignore_index: Any,
    check_labels: bool,
) -> tuple[Array, Array, Array]:
    """(y, in_range, valid): labels clipped into range (0 for bad ones), which are in range,
    and which examples count (`valid` without ``ignore_index``'s)."""
    wide = _checks.wide_labels(labels)
    if ignore_index is not None:
        valid = valid & (wide != ignore_index)
    in_range = (wide >= 0) & (wide < k)
    if check_labels:
        valid = valid & _report_labels(fn, labels, ~valid | in_range, k, ignore_index)
    y = jnp.where(in_range, wide, 0).astype(jnp.int32 if k < 2**31 else wide.dtype)
    return y, in_range, valid


def check_ignore_index(ignore_index: Any, fn: str) -> Any:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer):
        raise TypeError(f"{fn}: `ignore_index` must be an int or None, got {ignore_index!r}.")
    return int(ignore_index)


# ---------------------------------------------------------------------------------------------
# Per-row numbers: loss and gradient coefficients.


class Rows(NamedTuple):
    """What a kernel's gradient pass needs per row; ``[..., 1]`` each (broadcast over classes).

    The gradient of the row's loss is ``coef·exp(x_j − m) − smooth_j`` off the label and `g_y`
    at the label; `use` marks the rows whose gradient is not 0.
    """

    m: Array
    coef: Array
    g_y: Array
    use: Array


def label_rows(
    opts: Options,
    m: Array,
    d_y: Array,
    r: Array,
    w_y: Array | None,
    live: Array,
    bad: Array,
    smooth: tuple[Any, Any, Any] | None,
) -> tuple[Array, Rows, Array, Array]:
    """The loss of each row and its gradient coefficients, from per-row statistics.

    `m`, `d_y`, `r` as in the module docstring; `w_y` the label's class weight (None: 1);
    `live` the rows that count, `bad` those with an out-of-range label (NaN); `smooth` is
    (Σ_j w_j, Σ_j w_j (x_j − m), K') over the classes left in, or None without smoothing.
    Returns (loss, Rows, nll, log_s) with ``nll = log Σ exp(x) − x_y`` and
    ``log_s = log Σ exp(x − m)`` (for the class-weight gradient).

    The loss keeps the label out of the row's sum: ``nll = log1p(expm1(d_y) + r) − d_y`` is
    exact to rounding for a confident row, where ``lse − x_y`` would lose every digit; the
    smoothing term ``W·log_s − Σ_j w_j (x_j − m)`` is shift-free, so exact at any offset.
    """
    eps, zl = opts.eps, opts.zl
    log_s = jnp.log1p(jnp.expm1(d_y) + r)  # −inf only for a row that is entirely −inf
    nll = log_s - d_y
    c_lab = (1.0 - eps) * (jnp.ones_like(d_y) if w_y is None else w_y)
    # A label term with weight 0 is 0 even where its class has probability 0 (ε = 1).
    loss = jnp.where(c_lab == 0, jnp.zeros_like(nll), c_lab * nll)
    a = c_lab
    if smooth is not None:
        w_tot, wd, n_cls = smooth
        term = (eps / n_cls) * (w_tot * log_s - wd)
        if not _checks.is_static(eps):
            # A traced ε = 0 adds nothing, also where the term is infinite (a −inf logit).
            term = jnp.where(eps == 0, jnp.zeros_like(term), term)
        loss = loss + term
        a = a + eps * w_tot / n_cls
    if not is_zero(zl):
        lse = m + log_s
        term, slope = zl * lse**2, 2 * zl * lse
        if not _checks.is_static(zl):
            term = jnp.where(zl == 0, jnp.zeros_like(term), term)
            slope = jnp.where(zl == 0, jnp.zeros_like(slope), slope)
        loss = loss + term
        a = a + slope
    # A row holding +inf off the label: p_y = 0 and the loss is +inf (its statistics, shifted
    # by the +inf maximum, are NaN).
    loss = jnp.where((m == jnp.inf) & (d_y == -jnp.inf) & (c_lab != 0), jnp.inf, loss)
    nan = jnp.full_like(loss, jnp.nan)
    loss = jnp.where(bad, nan, jnp.where(live, loss, 0))
    a = jnp.where(bad, nan, jnp.where(live, a, 0))
    c_lab = jnp.where(live, c_lab, 0)
    # The row's sum Σ_j exp(x_j − m), label included, for p_j = exp(x_j − m)/s: one division,
    # where exp(−log_s) would add log_s's rounding to every p_j. A fully masked row has s = 0 and
    # A = 0; 1 keeps its gradient 0, not 0/0.
    s_row = jnp.exp(d_y) + r
    s_row = jnp.where(s_row > 0, s_row, jnp.ones_like(s_row))
    # p_y − 1: by expm1 where p_y is near 1 (no cancellation), by one subtraction elsewhere.
    p_y = jnp.exp(d_y) / s_row
    # Two formulas of one function: the select's boundary has no jump in value or derivative.
    g_y = a * jnp.where(p_y > 0.5, jnp.expm1(d_y - finite_log_sum(log_s)), p_y - 1.0)
    use = live | bad
    g_y = jnp.where(use, g_y + (a - c_lab), 0)
    coef = jnp.where(use, a / s_row, 0)
    return loss, Rows(m, coef, g_y, use), nll, log_s


def option_slopes(
    m: Array,
    nll: Array,
    log_s: Array,
    w_y: Array | None,
    live: Array,
    bad: Array,
    smooth: tuple[Any, Any, Any] | None,
) -> tuple[Array, Array]:
    """(∂ℓ/∂ε, ∂ℓ/∂λ_z) per row, for traced options (the loss is affine in both):
    ``−w_y·nll + (Σ_j w_j·log_s − Σ_j w_j (x_j − m))/K′`` and ``lse²``; 0 on rows that do not
    count, NaN on rows with an out-of-range label. `smooth` as in `label_rows`."""
    label = nll if w_y is None else jnp.where(w_y == 0, jnp.zeros_like(nll), w_y * nll)
    d_eps = -label
    if smooth is not None:
        w_tot, wd, n_cls = smooth
        d_eps = d_eps + (w_tot * log_s - wd) / n_cls
    d_zl = (m + log_s) ** 2
    nan = jnp.full_like(d_eps, jnp.nan)

    def kept(d: Array) -> Array:
        return jnp.where(bad, nan, jnp.where(live, d, jnp.zeros_like(d)))

    return kept(d_eps), kept(d_zl)


# ---------------------------------------------------------------------------------------------
# Per-example weights and the reduction: every loss reduces here.


def example_weights(weights: Any, shape: tuple, fn: str, what: str) -> Array | None:
    """`weights` checked against the per-example loss `shape` (real numbers, a shape that
    broadcasts to it without enlarging it), as a float array of that shape; None: None.
    `what` says where `shape` comes from, for the message."""
    if weights is None:
        return None
    w = _checks.real_array(weights, "weights", fn)
    try:
        ok = tuple(jnp.broadcast_shapes(w.shape, tuple(shape))) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: `weights` with shape {w.shape} must have the per-example loss's shape "
            f"{tuple(shape)} ({what}) or broadcast to it; one weight per example."
        )
    if not jnp.issubdtype(w.dtype, jnp.floating):
        w = w.astype(jnp.float32)
    return jnp.broadcast_to(w, shape)


def reduce(
    loss: Array,
    reduction: str,
    valid: Array | None = None,
    count: Array | None = None,
    weights: Array | None = None,
) -> Array | tuple[Array, Array]:
    """`_checks.reduce_loss` with per-example weights s (checked by `example_weights`): each
    loss becomes s·ℓ (0 where s = 0, even for an infinite or NaN ℓ), and each example counts
    s times (times its `count` weight, e.g. its label's class weight), so ``"mean"`` is
    Σ s·ℓ / Σ s over the kept examples and ``"sum_and_count"`` returns (Σ s·ℓ, Σ s)."""
    if weights is not None:
        s = weights.astype(loss.dtype)
        loss = jnp.where(s == 0, jnp.zeros_like(loss), s * loss)
        count = s if count is None else s * count.astype(loss.dtype)
    return _checks.reduce_loss(loss, reduction, valid, count)
