"""Trace-time argument checks and the small shape/dtype helpers every loss shares.

Every check here runs on static information (shapes, dtypes, Python values), so it costs nothing
at run time and fires when the function is traced, with the argument's name and shapes in the
message.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import jax
import jax.core as jax_core
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("none", "sum", "mean", "sum_and_count")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def public(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """A public function, run under `jax.named_scope("jaxloss.<name>")`: profiles and the
    compiled program's op metadata name it (the program itself is unchanged)."""
    scope = f"jaxloss.{fn.__name__}"

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with jax.named_scope(scope):
            return fn(*args, **kwargs)

    return call


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_array(x: Any, name: str, fn: str) -> None:
    """Raise a TypeError naming the argument for a Python list or tuple: JAX would say only
    "Cannot determine dtype". Lists are not converted, as in `jax.nn` and Optax: a list of
    arrays would be copied into one array at every call."""
    if isinstance(x, list | tuple):
        raise TypeError(
            f"{fn}: `{name}` must be an array, got a Python {type(x).__name__}; convert it "
            f"with `jnp.asarray({name})`."
        )


def check_floating(x: Any, name: str, fn: str) -> None:
    """Raise a TypeError unless `x` is an array (or scalar) with a floating dtype."""
    check_array(x, name, fn)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn}: `{name}` must have a floating dtype, got {dtype} with shape {_shape(x)}."
        )


def check_integer_labels(
    labels: Any, fn: str, dense_alternative: str | None, logits_shape: tuple | None = None
) -> None:
    """Raise a TypeError unless `labels` has an integer dtype, with a hint for probabilities
    (`dense_alternative`, the loss that takes them; None: only `argmax`)."""
    check_array(labels, "labels", fn)
    dtype = jnp.result_type(labels)
    if not jnp.issubdtype(dtype, jnp.integer):
        hint = "pass class indices, `jnp.argmax(labels, axis=-1)`"
        if dense_alternative is not None:
            hint = f"use `jaxloss.{dense_alternative}`, or {hint}"
        if logits_shape is not None and _shape(labels) == tuple(logits_shape):
            what = ", the logits' shape: one-hot?"
        else:
            what = ". For one-hot or soft (probability) targets"
        raise TypeError(
            f"{fn}: `labels` must be integer class indices, got dtype {dtype} with shape "
            f"{_shape(labels)}{what} {hint}."
        )


def label_shape_hint(
    logits_shape: tuple, labels_shape: tuple, axes: tuple, axis: Any, dense_alternative: str | None
) -> str:
    """What a label shape that does not match the logits' batch shape probably means: one-hot
    rows (the logits' shape), or the classes on another axis (PyTorch's ``[N, C, H, W]``)."""
    logits_shape, labels_shape = tuple(logits_shape), tuple(labels_shape)
    if labels_shape == logits_shape:
        alt = f"use `jaxloss.{dense_alternative}`, or " if dense_alternative else ""
        return (
            f" `labels` have the logits' shape: one-hot? {alt}pass "
            f"`jnp.argmax(labels, axis={axis if isinstance(axis, int) else -1})`."
        )
    ndim = len(logits_shape)
    fits = [
        a
        for a in range(ndim)
        if (a,) != axes and logits_shape[:a] + logits_shape[a + 1 :] == labels_shape
    ]
    if fits:
        a = fits[0]
        layout = " (PyTorch's [N, C, ...] layout)" if a == 1 and ndim > 2 else ""
        return f" The classes look like axis {a}{layout}: pass `axis={a}`."
    return ""


def canonicalize_axes(axis: Any, ndim: int, name: str, shape: Sequence[int], fn: str) -> tuple:
    """Return `axis` as a tuple of distinct non-negative ints, or raise naming the shape."""
    if isinstance(axis, bool) or not isinstance(axis, int | tuple | list):
        raise TypeError(
            f"{fn}: `axis` must be an int or a tuple of ints, got {axis!r} "
            f"(type {type(axis).__name__})."
        )
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes:
        raise ValueError(f"{fn}: `axis` must name at least one axis, got {axis!r}.")
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int | np.integer):
            raise TypeError(f"{fn}: `axis` entries must be ints, got {axis!r}.")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{fn}: `axis`={axis!r} is out of range for `{name}` with shape "
                f"{tuple(shape)} ({ndim} dimensions)."
            )
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{fn}: `axis`={axis!r} repeats an axis.")
    return tuple(out)


def check_static_classes(shape: Sequence[Any], axes: tuple, name: str, fn: str) -> None:
    """The class axes must have concrete sizes: the kernels choose their path by the row length,
    and the labels' range check compares with it. A symbolic batch (jax.export) is fine."""
    if any(not isinstance(shape[a], int) for a in axes):
        raise ValueError(
            f"{fn}: the number of classes must be static, got `{name}` with the symbolic shape "
            f"{tuple(shape)} (jax.export shape polymorphism) and class axes {axes}. Export with "
            "a concrete class count; the batch dimensions may be symbolic."
        )


def check_same_shape(a: Any, b: Any, name_a: str, name_b: str, fn: str) -> None:
    if _shape(a) != _shape(b):
        raise ValueError(
            f"{fn}: `{name_a}` and `{name_b}` must have the same shape, got "
            f"{_shape(a)} and {_shape(b)}."
        )


def check_broadcasts_to(x: Any, shape: tuple, name: str, ref: str, fn: str) -> None:
    """Raise unless `x` has `shape` or broadcasts to it (e.g. a ``[K]`` target prior)."""
    try:
        # jnp's broadcast_shapes: symbolic dimensions (jax.export) are fine there.
        ok = tuple(jnp.broadcast_shapes(_shape(x), tuple(shape))) == tuple(shape)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: `{name}` with shape {_shape(x)} must have the shape of `{ref}` "
            f"{tuple(shape)} or broadcast to it."
        )


def check_reduction(reduction: Any, fn: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{fn}: unknown `reduction`={reduction!r}; expected one of "
            f"{', '.join(repr(r) for r in REDUCTIONS)}."
        )
    return reduction


def check_label_smoothing(eps: Any, fn: str) -> None:
    if isinstance(eps, int | float | np.floating | np.integer) and not 0.0 <= float(eps) <= 1.0:
        raise ValueError(f"{fn}: `label_smoothing` must lie in [0, 1], got {eps!r}.")


def check_where(where: Any, logits_shape: tuple[int, ...], batch_shape: tuple, fn: str) -> None:
    """`where` must broadcast to the batch shape or to the logits' shape."""
    wshape = _shape(where)
    if not jnp.issubdtype(jnp.result_type(where), jnp.bool_):
        raise TypeError(
            f"{fn}: `where` must be a boolean mask, got dtype {jnp.result_type(where)} with "
            f"shape {wshape}."
        )
    for target in (logits_shape, batch_shape):
        try:
            if np.broadcast_shapes(wshape, target) == tuple(target):
                return
        except ValueError:
            pass
    raise ValueError(
        f"{fn}: `where` with shape {wshape} broadcasts neither to the logits' shape "
        f"{tuple(logits_shape)} (a class mask) nor to the batch shape {tuple(batch_shape)} "
        "(an example mask)."
    )


def split_where(where: Any, shape: tuple, axes: tuple, fn: str) -> tuple[Any, Any]:
    """Read `where` by the library's one rule: (example mask [batch], class mask [shape]).

    A mask with the input's rank masks entries (classes); one of lower rank masks examples: it
    is shaped like the batch, as if expanded at the class axis (Optax's cross-entropies). So a
    ``[K]`` mask on ``[K, K]`` logits masks examples everywhere; ``[1, K]`` masks classes.
    """
    if where is None:
        return None, None
    batch_shape = tuple(n for a, n in enumerate(shape) if a not in axes)
    check_where(where, shape, batch_shape, fn)
    where = jnp.asarray(where)
    if where.ndim == len(shape):
        return None, jnp.broadcast_to(where, shape)
    try:
        return jnp.broadcast_to(where, batch_shape), None
    except ValueError:
        raise ValueError(
            f"{fn}: `where` with shape {where.shape} has fewer dimensions than the input "
            f"{tuple(shape)}, so it masks examples, but it does not broadcast to the batch "
            f"shape {batch_shape}. To mask classes, give it the input's rank (e.g. "
            f"`where[None, :]`)."
        ) from None


def full_mask(where: Any, shape: tuple, axes: tuple, fn: str) -> Any:
    """`where` read by `split_where`'s rule, as a mask of the full `shape` (None for none)."""
    example_mask, class_mask = split_where(where, shape, axes, fn)
    if example_mask is None:
        return class_mask
    return jnp.broadcast_to(jnp.expand_dims(example_mask, axes), shape)


def explicitly_sharded(x: Any) -> bool:
    """Whether `x` carries a sharding over Explicit mesh axes in its type."""
    spec = getattr(jax.typeof(x).sharding, "spec", ())
    return any(e is not None for e in spec)


def take(table: jax.Array, idx: jax.Array) -> jax.Array:
    """`table[idx]` for a small table, sharded like `idx` (an Explicit mesh cannot infer the
    gather's output sharding by itself). A table sharded over Explicit axes (class weights
    split like a vocabulary) is replicated first: it has K entries."""
    if explicitly_sharded(table):
        mesh = jax.typeof(table).sharding.mesh
        table = jax.sharding.reshard(table, jax.sharding.NamedSharding(mesh, jax.P()))
    return table.at[idx].get(out_sharding=jax.typeof(idx).sharding)


def classes_sharded(x: Any) -> bool:
    """Whether the last (class) axis of `x` is split over Explicit mesh axes."""
    spec: tuple[Any, ...] = tuple(getattr(jax.typeof(x).sharding, "spec", ()))
    return len(spec) == np.ndim(x) > 0 and spec[-1] is not None


def class_iota(dtype: Any, x: jax.Array) -> jax.Array:
    """The class index of every entry of `x` [..., K], sharded like `x` (on an Explicit mesh, a
    replicated iota compared with class-split logits would not match their sharding)."""
    sharding = jax.typeof(x).sharding if explicitly_sharded(x) else None
    return jax.lax.broadcasted_iota(dtype, x.shape, x.ndim - 1, out_sharding=sharding)


def take_label(x: jax.Array, y: jax.Array) -> jax.Array:
    """`take_along_axis(x, y, -1)` for `y` of shape [..., 1]. Where the classes are split over
    Explicit mesh axes, a gather cannot say its output's sharding; the label's entry is then
    picked by a masked sum over the row (each shard adds 0 or its own entry, one all-reduce)."""
    if not classes_sharded(x):
        return jnp.take_along_axis(x, y, axis=-1)
    j = class_iota(y.dtype, x)
    if x.dtype == jnp.bool_:
        return jnp.any(x & (j == y), axis=-1, keepdims=True)
    return jnp.sum(jnp.where(j == y, x, jnp.zeros_like(x)), axis=-1, keepdims=True)


def compute_dtype(dtype: Any) -> Any:
    """The dtype we compute in: at least float32, so bf16/f16 inputs are computed in f32."""
    return jnp.promote_types(dtype, jnp.float32)


def classes_last(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Move `axes` to the end (in the order given) and flatten them into one class axis."""
    batch_axes = tuple(a for a in range(x.ndim) if a not in axes)
    perm = batch_axes + axes
    if perm != tuple(range(x.ndim)):
        x = jnp.transpose(x, perm)
    batch_shape = x.shape[: len(batch_axes)]
    if len(axes) != 1:
        x = x.reshape((*batch_shape, -1))
    return x


def classes_restore(x: jax.Array, axes: tuple[int, ...], shape: tuple[int, ...]) -> jax.Array:
    """Inverse of `classes_last` for an array of the original `shape`."""
    batch_axes = tuple(a for a in range(len(shape)) if a not in axes)
    perm = batch_axes + axes
    x = x.reshape(tuple(shape[a] for a in perm))
    if perm != tuple(range(len(shape))):
        x = jnp.transpose(x, tuple(np.argsort(perm)))
    return x


def reduce_loss(
    per_example: jax.Array,
    reduction: str,
    valid: jax.Array | None = None,
    weights: jax.Array | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Apply `reduction` to per-example losses: the one definition of every loss's reductions.

    `valid` marks the kept examples (None: all), `weights` each kept example's share of the
    mean's denominator (None: 1; PyTorch's class weights of the labels). The mean is
    Σ loss / Σ count whenever an example is kept, NaN or ±inf included (a NaN weight, or weights
    summing to 0, as in PyTorch); 0 with gradient 0 only when no example is kept.
    `"sum_and_count"` returns the pair (Σ loss, Σ count).
    """
    if reduction == "none":
        return per_example
    total = jnp.sum(per_example)
    dtype = per_example.dtype
    if valid is None and weights is None:
        n = jnp.asarray(per_example.size, dtype)
        any_kept = jnp.asarray(per_example.size > 0)
    else:
        if valid is None:
            assert weights is not None
            kept = jnp.ones(weights.shape, bool)
        else:
            kept = valid
        count = kept.astype(dtype)
        if weights is not None:
            count = jnp.where(kept, weights.astype(dtype), jnp.zeros_like(count))
        n = jnp.sum(count)
        any_kept = jnp.any(kept)
    if reduction == "sum":
        return total
    if reduction == "sum_and_count":
        return total, n
    # Double where: with nothing kept the untaken branch divides by 1, so no NaN reaches grad.
    safe = jnp.where(any_kept, n, jnp.ones_like(n))
    return jnp.where(any_kept, total / safe, jnp.zeros_like(total))


def real_array(value: Any, name: str, fn: str) -> jax.Array:
    """`value` as an array of real numbers (floating, integer or bool), else a TypeError naming
    the argument."""
    value = jnp.asarray(value)
    if not (
        jnp.issubdtype(value.dtype, jnp.floating)
        or jnp.issubdtype(value.dtype, jnp.integer)
        or value.dtype == jnp.bool_
    ):
        raise TypeError(
            f"{fn}: `{name}` must be a real number array (floating, integer or bool), got dtype "
            f"{value.dtype} with shape {value.shape}."
        )
    return value


def static_number(
    value: Any,
    name: str,
    fn: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """A scalar option as a Python float, checked at trace time: no traced value, no NaN, no
    infinity (unless `allow_inf`), within [low, high] (or (low, high] with `low_open`)."""
    if isinstance(value, str | bytes | bool | np.bool_):
        # Bools too: `gamma=True` is a mistake, and `k=True` was already refused.
        raise TypeError(f"{fn}: `{name}` must be a number, got {value!r}.")
    try:
        v = float(value)
    except jax.errors.ConcretizationTypeError:
        raise TypeError(
            f"{fn}: `{name}` must be a concrete Python number (it is fixed at trace time), got "
            f"a traced value with shape {_shape(value)}."
        ) from None
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: `{name}` must be a number, got {value!r}.") from None
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf)
    bad = bad or (low is not None and (v <= low if low_open else v < low))
    bad = bad or (high is not None and v > high)
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        where = (
            f"{'(' if low_open or low is None else '['}{lo}, {hi}{']' if high is not None else ')'}"
        )
        raise ValueError(
            f"{fn}: `{name}` must be a finite number in {where}, got {value!r}."
            if not allow_inf
            else f"{fn}: `{name}` must be a number in {where}, got {value!r}."
        )
    return v


def check_label_values(labels: Any, fn: str, name: str = "labels") -> None:
    """Concrete 64-bit integer labels (a NumPy array) must fit int32 when x64 is off: JAX
    converts them to int32, and 2**31 would wrap to a valid-looking negative or small label."""
    if jax.config.read("jax_enable_x64") or not isinstance(labels, np.ndarray | np.generic):
        return
    values: np.ndarray = np.asarray(labels)
    dtype = values.dtype
    if not np.issubdtype(dtype, np.integer) or dtype.itemsize < 8 or values.size == 0:
        return
    info = np.iinfo(np.uint32 if dtype.kind == "u" else np.int32)
    lo, hi = int(info.min), int(info.max)
    bad = (values < lo) | (values > hi)
    if np.any(bad):
        value = values.reshape(-1)[np.flatnonzero(bad)[0]]
        raise ValueError(
            f"{fn}: `{name}` of dtype {dtype} holds {value}, outside the 32-bit range "
            f"[{lo}, {hi}] that JAX converts them to while x64 is off (it would wrap to another "
            "label). Enable `jax.config.update('jax_enable_x64', True)` or fix the labels."
        )


def check_index(value: int, name: str, fn: str) -> None:
    """An index compared with the labels (``ignore_index``) must be a JAX integer: int32 while
    x64 is off (JAX would raise an OverflowError naming an internal argument)."""
    info = np.iinfo(np.int64 if jax.config.read("jax_enable_x64") else np.int32)
    if not info.min <= value <= info.max:
        raise ValueError(
            f"{fn}: `{name}`={value} is outside [{info.min}, {info.max}], the range of JAX's "
            f"{info.dtype} (no label can equal it). Pass a label value in that range, e.g. -100."
        )


def traced_number(
    value: Any,
    name: str,
    fn: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_inf: bool = False,
) -> Any:
    """A scalar hyperparameter: a Python float checked by `static_number` when it is concrete
    (a number, or an array outside any trace), else a traced float scalar (a schedule's value,
    under `jit` or `grad`) with NaN in place of a value outside the range `static_number` checks:
    an out-of-range traced value gives NaN losses, never a silent finite one."""
    if not isinstance(value, jax_core.Tracer):
        return static_number(
            value, name, fn, low=low, high=high, low_open=low_open, allow_inf=allow_inf
        )
    dtype = jnp.result_type(value)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(
            f"{fn}: `{name}` must be a real number, got a traced value of dtype {dtype} with "
            f"shape {_shape(value)}."
        )
    if _shape(value) != ():
        raise ValueError(
            f"{fn}: `{name}` must be a scalar, got a traced value with shape {_shape(value)}."
        )
    v = jnp.asarray(value)
    if not jnp.issubdtype(dtype, jnp.floating):
        v = v.astype(jnp.result_type(float))
    ok = ~jnp.isnan(v) if allow_inf else jnp.isfinite(v)
    if low is not None:
        ok = ok & ((v > low) if low_open else (v >= low))
    if high is not None:
        ok = ok & (v <= high)
    return jnp.where(ok, v, jnp.full_like(v, jnp.nan))


def is_static(value: Any) -> bool:
    """Whether a hyperparameter is a Python number (fixed at trace time), not a traced array."""
    return isinstance(value, int | float)


def wide_labels(labels: jax.Array) -> jax.Array:
    """Integer labels in a dtype at least as wide as int32, so comparing them with the number of
    classes (or with -100) cannot wrap: int8 labels against K = 200 would."""
    if jnp.iinfo(labels.dtype).bits < 32:
        return labels.astype(jnp.int32)
    return labels
