"""The implementations under test and how each is prepared for one (mode, inputs) case.

Every implementation computes the same thing: integer-label softmax cross-entropy, one value per
example. `prepare` turns an implementation and a mode into a `Prepared`: a zero-argument `call`
that runs the work once and waits for it (`block_until_ready`, or a CUDA synchronise for torch),
plus what is known about it before running (lower and compile times, the compiled executable's
memory analysis).

Modes (see `bench.shapes.MODES`):
- `forward`: the per-example losses.
- `value_and_grad`: the summed loss and its gradient w.r.t. the logits.
- `model_step`: logits = h @ W inside the same jitted function, the summed loss and its gradient
  w.r.t. h and W, as in a training step.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

IMPLS: tuple[str, ...] = ("jaxloss", "optax", "autodiff", "explicit", "torch")

DESCRIPTIONS: dict[str, str] = {
    "jaxloss": "jaxloss.softmax_cross_entropy_with_integer_labels",
    "optax": "optax.softmax_cross_entropy_with_integer_labels",
    "autodiff": "-take_along_axis(jax.nn.log_softmax(x), y), gradient by jax autodiff",
    "explicit": "hand-derived: loss = lse - x[y], gradient = softmax - one_hot, no autodiff, "
    "computed in float32",
    "torch": "torch.nn.functional.cross_entropy, torch's own backward",
}


class Unavailable(Exception):
    """The implementation cannot run here (not installed, or no matching device)."""


@dataclass
class Inputs:
    """One case's arrays, as JAX arrays on the default device."""

    x: jax.Array  # logits (batch, classes)
    y: jax.Array  # int32 labels (batch,)
    h: jax.Array  # model-step activations (batch, hidden)
    w: jax.Array  # model-step weights (hidden, classes)


@dataclass
class Prepared:
    impl: str
    call: Callable[[], Any]
    lower_s: float | None = None
    compile_s: float | None = None
    memory: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)


# --- the per-example losses -----------------------------------------------------------------


def _jaxloss_fn() -> Callable:
    try:
        mod = importlib.import_module("jaxloss")
    except ImportError as e:  # the package is being written alongside this suite
        raise Unavailable(f"import jaxloss failed: {e}") from e
    fn = getattr(mod, "softmax_cross_entropy_with_integer_labels", None)
    if fn is None:
        raise Unavailable("jaxloss has no softmax_cross_entropy_with_integer_labels yet")
    return fn


def _optax_fn() -> Callable:
    try:
        import optax
    except ImportError as e:
        raise Unavailable(f"import optax failed: {e}") from e
    return optax.softmax_cross_entropy_with_integer_labels


def autodiff_loss(x: jax.Array, y: jax.Array) -> jax.Array:
    return -jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), y[:, None], axis=-1)[:, 0]


def _explicit_parts(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    # float32 inside whatever the input dtype: a bf16 exp-sum over 10^5 classes loses the answer.
    xf = x.astype(jnp.float32)
    m = jnp.max(xf, axis=-1, keepdims=True)
    # An all -inf row would make m = -inf and x - m = nan; shift by 0 there instead.
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    lse = m + jnp.log(jnp.sum(jnp.exp(xf - m), axis=-1, keepdims=True))
    x_y = jnp.take_along_axis(xf, y[:, None], axis=-1)
    return xf, lse, (lse - x_y)[:, 0]


def explicit_loss(x: jax.Array, y: jax.Array) -> jax.Array:
    return _explicit_parts(x, y)[2].astype(x.dtype)


def explicit_value_and_grad(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    xf, lse, loss = _explicit_parts(x, y)
    one_hot = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1) == y[:, None]
    grad = jnp.exp(xf - lse) - one_hot.astype(jnp.float32)
    return jnp.sum(loss), grad.astype(x.dtype)


def explicit_model_step(
    h: jax.Array, w: jax.Array, y: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    loss, g = explicit_value_and_grad(h @ w, y)
    return loss, (g @ w.T, h.T @ g)


def _jax_loss(impl: str) -> Callable:
    if impl == "jaxloss":
        return _jaxloss_fn()
    if impl == "optax":
        return _optax_fn()
    if impl == "autodiff":
        return autodiff_loss
    if impl == "explicit":
        return explicit_loss
    raise ValueError(f"not a JAX implementation: {impl!r}")


def jax_function(impl: str, mode: str) -> Callable:
    """The function to jit for `impl` in `mode`; its arguments are `mode_args(mode, inputs)`."""
    if impl == "explicit" and mode == "value_and_grad":
        return explicit_value_and_grad
    if impl == "explicit" and mode == "model_step":
        return explicit_model_step
    loss = _jax_loss(impl)
    if mode == "forward":
        return loss
    if mode == "value_and_grad":
        # Sum in float32 so that bf16 rows do not measure the rounding of a bf16 accumulator.
        return jax.value_and_grad(lambda x, y: jnp.sum(loss(x, y), dtype=jnp.float32))
    if mode == "model_step":
        return jax.value_and_grad(
            lambda h, w, y: jnp.sum(loss(h @ w, y), dtype=jnp.float32), argnums=(0, 1)
        )
    raise ValueError(f"unknown mode {mode!r}")


def mode_args(mode: str, inputs: Inputs) -> tuple[jax.Array, ...]:
    return (inputs.h, inputs.w, inputs.y) if mode == "model_step" else (inputs.x, inputs.y)


def memory_stats(compiled: Any) -> dict[str, int] | None:
    """Sizes from the compiled executable's `memory_analysis()`, in bytes.

    `peak` is argument + output + temp - alias: every buffer the executable can hold at once
    (XLA's own `peak_memory_in_bytes` is also kept where the backend fills it in).
    """
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return None
    if m is None:
        return None
    out = {
        k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
        for k in ("argument", "output", "temp", "alias", "generated_code")
    }
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    out["xla_peak"] = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
    return out


def prepare_jax(impl: str, mode: str, inputs: Inputs) -> Prepared:
    fn = jax_function(impl, mode)
    args = mode_args(mode, inputs)
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()

    def call() -> Any:
        return jax.block_until_ready(compiled(*args))

    return Prepared(impl, call, t1 - t0, t2 - t1, memory_stats(compiled))


# --- torch ----------------------------------------------------------------------------------


def _torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as e:
        raise Unavailable(f"import torch failed: {e}") from e


def cpu_count() -> int:
    """The cores this process may run on: what XLA's CPU thread pool sizes itself to."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_device() -> str:
    """The torch device matching JAX's default backend, or raise `Unavailable`."""
    torch = _torch()
    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu"
    if backend == "gpu" and torch.cuda.is_available():
        return "cuda"
    raise Unavailable(
        f"JAX runs on {backend!r} and this torch build cannot (cuda available: "
        f"{torch.cuda.is_available()})"
    )


def _to_torch(a: jax.Array, device: str) -> Any:
    torch = _torch()
    # dlpack shares the buffer: no second copy of multi-GiB logits.
    t = torch.from_dlpack(a)
    return t if str(t.device).startswith(device) else t.to(device)


def prepare_torch(mode: str, inputs: Inputs) -> Prepared:
    torch = _torch()
    device = torch_device()
    if device == "cpu":
        torch.set_num_threads(cpu_count())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    F = torch.nn.functional
    y = _to_torch(inputs.y, device).long()
    notes = [f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}"]

    if mode == "forward":
        x = _to_torch(inputs.x, device)

        def call() -> Any:
            with torch.no_grad():
                out = F.cross_entropy(x, y, reduction="none")
            sync()
            return out

    elif mode == "value_and_grad":
        x = _to_torch(inputs.x, device).detach().requires_grad_()

        def call() -> Any:
            x.grad = None  # a fresh gradient buffer each call, as a jitted function returns
            loss = F.cross_entropy(x, y, reduction="sum")
            loss.backward()
            sync()
            return loss.detach(), x.grad

    elif mode == "model_step":
        h = _to_torch(inputs.h, device).detach().requires_grad_()
        w = _to_torch(inputs.w, device).detach().requires_grad_()

        def call() -> Any:
            h.grad = None
            w.grad = None
            loss = F.cross_entropy(h @ w, y, reduction="sum")
            loss.backward()
            sync()
            return loss.detach(), (h.grad, w.grad)

    else:
        raise ValueError(f"unknown mode {mode!r}")
    return Prepared("torch", call, notes=notes)


def prepare(impl: str, mode: str, inputs: Inputs) -> Prepared:
    """Build, lower and compile `impl` for `mode`; raise `Unavailable` if it cannot run here."""
    if impl == "torch":
        return prepare_torch(mode, inputs)
    return prepare_jax(impl, mode, inputs)


# --- inputs ---------------------------------------------------------------------------------

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_inputs(batch: int, classes: int, hidden: int, dtype: str, seed: int = 0) -> Inputs:
    """Seeded unit-scale logits, uniform labels, and h, W whose product is unit-scale too."""
    dt = DTYPES[dtype]
    kx, ky, kh, kw = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, (batch, classes), jnp.float32).astype(dt)
    y = jax.random.randint(ky, (batch,), 0, classes, jnp.int32)
    h = jax.random.normal(kh, (batch, hidden), jnp.float32).astype(dt)
    w = (jax.random.normal(kw, (hidden, classes), jnp.float32) / hidden**0.5).astype(dt)
    return Inputs(*jax.block_until_ready((x, y, h, w)))
