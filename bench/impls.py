"""The implementations under test and how each is prepared for one (mode, inputs) case.

Each computes integer-label softmax cross-entropy. `prepare` turns an implementation and a mode
into a `Prepared`: a zero-argument `call` that runs the work once and waits for it, plus what is
known before running it (lower and compile times, the executable's memory analysis). The modes
are `bench.shapes.MODES`; `fused` and `torch_chunked` are linear cross-entropies, so they run
in the model step only.
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

from tests import reference

DESCRIPTIONS: dict[str, str] = {
    "jaxloss": "jaxloss.softmax_cross_entropy_with_integer_labels (model step: on h @ W)",
    "optax": "optax.softmax_cross_entropy_with_integer_labels",
    "autodiff": "-take_along_axis(jax.nn.log_softmax(x), y), gradient by jax autodiff",
    "explicit": "hand-derived: loss = lse - x[y], gradient = softmax - one_hot, no autodiff, "
    "computed in float32",
    "torch": "torch.nn.functional.cross_entropy, torch's own backward",
    "fused": "jaxloss.linear_cross_entropy(h, W, y): the logits never written out",
    "torch_chunked": "torch.nn.functional.linear_cross_entropy, chunked over tokens by "
    "jaxloss's token chunk, acc_policy='accurate'",
}
IMPLS: tuple[str, ...] = tuple(DESCRIPTIONS)
#: Implementations that take (h, W, y), not logits.
LINEAR_ONLY = ("fused", "torch_chunked")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Unavailable(Exception):
    """The implementation cannot run here (not installed, no matching device, too big)."""


@dataclass
class Inputs:
    """One case's arrays on the default device; `x` is None when only the model step runs."""

    x: jax.Array | None  # logits (batch, classes)
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


def make_inputs(
    batch: int, classes: int, hidden: int, dtype: str, seed: int = 0, logits: bool = True
) -> Inputs:
    """Seeded unit-scale logits, uniform labels, and h, W whose product is unit-scale too."""
    dt = DTYPES[dtype]
    kx, ky, kh, kw = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, (batch, classes), jnp.float32).astype(dt) if logits else None
    y = jax.random.randint(ky, (batch,), 0, classes, jnp.int32)
    h = jax.random.normal(kh, (batch, hidden), jnp.float32).astype(dt)
    w = (jax.random.normal(kw, (hidden, classes), jnp.float32) / hidden**0.5).astype(dt)
    return Inputs(*jax.block_until_ready((x, y, h, w)))


# --- JAX ------------------------------------------------------------------------------------


def autodiff_loss(x: jax.Array, y: jax.Array) -> jax.Array:
    """The shared plain formula (tests/reference.py), gradient by autodiff."""
    return reference.plain_cross_entropy(x, y)


def _explicit_parts(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    # float32 inside whatever the input dtype: a bf16 exp-sum over 10^5 classes loses the answer.
    xf = x.astype(jnp.float32)
    m = jnp.max(xf, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # an all -inf row: shift by 0, not -inf
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


def explicit_model_step(h: jax.Array, w: jax.Array, y: jax.Array) -> tuple[jax.Array, Any]:
    loss, g = explicit_value_and_grad(h @ w, y)
    return loss, (g @ w.T, h.T @ g)


def _loss(impl: str) -> Callable:
    try:
        if impl == "jaxloss":
            return importlib.import_module("jaxloss").softmax_cross_entropy_with_integer_labels
        if impl == "optax":
            return importlib.import_module("optax").softmax_cross_entropy_with_integer_labels
    except ImportError as e:
        raise Unavailable(f"import {impl} failed: {e}") from e
    return {"autodiff": autodiff_loss, "explicit": explicit_loss}[impl]


def jax_function(impl: str, mode: str) -> Callable:
    """The function to jit for `impl` in `mode`; its arguments are `mode_args(mode, inputs)`."""
    if impl == "explicit" and mode != "forward":
        return explicit_value_and_grad if mode == "value_and_grad" else explicit_model_step
    if impl == "fused":
        import jaxloss

        def summed(h: jax.Array, w: jax.Array, y: jax.Array) -> jax.Array:
            return jaxloss.linear_cross_entropy(h, w, y, reduction="sum")

        return jax.value_and_grad(summed, argnums=(0, 1))
    loss = _loss(impl)
    if mode == "forward":
        return loss
    # Summed in float32, so that bf16 rows do not measure the rounding of a bf16 accumulator.
    if mode == "value_and_grad":
        return jax.value_and_grad(lambda x, y: jnp.sum(loss(x, y), dtype=jnp.float32))
    return jax.value_and_grad(
        lambda h, w, y: jnp.sum(loss(h @ w, y), dtype=jnp.float32), argnums=(0, 1)
    )


def mode_args(mode: str, inputs: Inputs) -> tuple[Any, ...]:
    return (inputs.h, inputs.w, inputs.y) if mode == "model_step" else (inputs.x, inputs.y)


def memory_stats(compiled: Any) -> dict[str, int] | None:
    """`memory_analysis()` in bytes; `peak` = argument + output + temp - alias."""
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
    args = mode_args(mode, inputs)
    t0 = time.perf_counter()
    lowered = jax.jit(jax_function(impl, mode)).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    call = lambda: jax.block_until_ready(compiled(*args))  # noqa: E731
    return Prepared(impl, call, t1 - t0, t2 - t1, memory_stats(compiled))


# --- torch ----------------------------------------------------------------------------------


def cpu_count() -> int:
    """The cores this process may run on: what XLA's CPU thread pool sizes itself to."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def token_chunk(classes: int) -> int:
    """The token chunk `linear_cross_entropy` picks by default for `classes` classes."""
    t = (1 << 25) // classes
    return max(8, min(1024, t - t % 8))


def prepare_torch(impl: str, mode: str, inputs: Inputs) -> Prepared:
    try:
        torch = importlib.import_module("torch")
    except ImportError as e:
        raise Unavailable(f"import torch failed: {e}") from e
    backend = jax.default_backend()
    if backend == "cpu":
        device = "cpu"
        torch.set_num_threads(cpu_count())
    elif backend == "gpu" and torch.cuda.is_available():
        device = "cuda"
    else:
        raise Unavailable(f"JAX runs on {backend!r} and this torch build cannot")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    F = torch.nn.functional

    def tensor(a: jax.Array, grad: bool = False) -> Any:
        t = torch.from_dlpack(a)  # shares the buffer: no second copy of the logits
        t = t if str(t.device).startswith(device) else t.to(device)
        return t.detach().requires_grad_() if grad else t

    y = tensor(inputs.y).long()
    notes = [f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}"]
    if mode == "forward":
        x = tensor(inputs.x)

        def call() -> Any:
            with torch.no_grad():
                out = F.cross_entropy(x, y, reduction="none")
            sync()
            return out

        return Prepared(impl, call, notes=notes)
    leaves = [tensor(inputs.x, True)] if mode == "value_and_grad" else None
    if mode == "value_and_grad":
        loss_of = lambda: F.cross_entropy(leaves[0], y, reduction="sum")  # noqa: E731
    else:
        leaves = [tensor(inputs.h, True), tensor(inputs.w, True)]
        wt = leaves[1]
        if impl == "torch_chunked":
            # PyTorch's "auto" chunking was 4-10x slower than this on a 2-core CPU.
            options = torch.nn.LinearCrossEntropyOptions(
                chunking_method=None,
                batch_chunk_size=token_chunk(wt.shape[1]),
                acc_policy="accurate",
            )
            loss_of = lambda: F.linear_cross_entropy(  # noqa: E731
                leaves[0], wt.T, y, reduction="sum", options=options
            )
        else:
            loss_of = lambda: F.cross_entropy(leaves[0] @ wt, y, reduction="sum")  # noqa: E731

    def step() -> Any:
        for t in leaves:
            t.grad = None  # a fresh gradient buffer each call, as a jitted function returns
        loss = loss_of()
        loss.backward()
        sync()
        grads = tuple(t.grad for t in leaves)
        return loss.detach(), grads[0] if mode == "value_and_grad" else grads

    return Prepared(impl, step, notes=notes)


#: Logits-sized arrays an implementation holds at once, beyond the fused one's none: a case over
#: MEMORY_CAP bytes on a CPU is reported as unavailable, not run (the machine is shared).
LOGITS_COPIES = {"torch": 3, "fused": 0, "torch_chunked": 0}
MEMORY_CAP = 10 * 2**30


def prepare(impl: str, mode: str, inputs: Inputs) -> Prepared:
    """Build, lower and compile `impl` for `mode`; raise `Unavailable` if it cannot run here."""
    if mode == "model_step" and jax.default_backend() == "cpu":
        need = LOGITS_COPIES.get(impl, 2) * inputs.y.shape[0] * inputs.w.shape[1] * 4
        if need > MEMORY_CAP:
            raise Unavailable(f"would hold about {need / 2**30:.0f} GiB of logits-sized arrays")
    if impl.startswith("torch"):
        return prepare_torch(impl, mode, inputs)
    return prepare_jax(impl, mode, inputs)
