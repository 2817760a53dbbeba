"""Machine limits, measured with JAX on the device the benchmarks run on, in the same run.

- `copy_gbps`: memory bandwidth of a large in-place update (`a + 1` with the input donated, so
  the output reuses its buffer): bytes read + bytes written per second. This is the bandwidth
  limit used for the "fraction of the limit" figures.
- `fresh_copy_gbps`: the same update into a freshly allocated output, as every jitted function
  that returns a new array does. The gap to `copy_gbps` is what allocating (and, under glibc
  malloc, page-faulting) a fresh buffer costs; an allocator that recycles memory closes it.
- `read_gbps`: a plain sum over the array, bytes read per second.
- `exp_per_s`: elements per second of a fused `sum(exp(x), axis=-1)` reduction per dtype (bf16 is
  upcast to float32 first, as a loss does). On a CPU, `exp` can cost more than the memory traffic.
- `matmul_flops`: FLOP/s of a square matmul per dtype, the limit for the model step.

Each figure is the best of several runs: a limit is what the machine can do, not what it did on
average while other work shared it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bench.impls import DTYPES


def _best(fn: Callable[[], Any], reps: int) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def measure(quick: bool = False, small: bool = False) -> dict[str, Any]:
    """Measure the limits; `small` (tests only) uses cache-sized arrays, so its figures are not
    the machine's."""
    on_cpu = jax.default_backend() == "cpu"
    # Large enough to spill every cache level; a GPU needs more to reach its bandwidth.
    rows, cols = (4096, 16384) if on_cpu else (16384, 16384)
    mm = 2048 if on_cpu else 8192
    if quick and on_cpu:
        rows = 2048  # 128 MiB still spills the last-level cache
    if small:
        rows, cols, mm = 256, 1024, 256
    reps = 3 if quick else 8
    out: dict[str, Any] = {
        "array_shape": [rows, cols],
        "matmul_n": mm,
        "reps": reps,
        "small": small,
    }

    a = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32)
    nbytes = a.size * a.dtype.itemsize

    inplace = jax.jit(lambda v: v + 1.0, donate_argnums=0)
    state = {"a": jnp.copy(a)}

    def step() -> jax.Array:
        state["a"] = inplace(state["a"])
        return state["a"]

    out["copy_gbps"] = 2 * nbytes / _best(step, reps) / 1e9
    state.clear()

    fresh = jax.jit(lambda v: v + 1.0)
    out["fresh_copy_gbps"] = 2 * nbytes / _best(lambda: fresh(a), reps) / 1e9
    total = jax.jit(jnp.sum)
    out["read_gbps"] = nbytes / _best(lambda: total(a), reps) / 1e9

    out["exp_per_s"] = {}
    out["matmul_flops"] = {}
    expsum = jax.jit(lambda v: jnp.sum(jnp.exp(v.astype(jnp.float32)), axis=-1))
    matmul = jax.jit(lambda p, q: p @ q)
    for name, dt in DTYPES.items():
        v = a.astype(dt)
        out["exp_per_s"][name] = a.size / _best(lambda v=v: expsum(v), reps)
        del v
        p = jax.random.normal(jax.random.key(1), (mm, mm), jnp.float32).astype(dt)
        out["matmul_flops"][name] = 2 * mm**3 / _best(lambda p=p: matmul(p, p), reps)
    return out


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of several measurements of the limits (taken at the start and end of a run)."""
    best = dict(runs[0])
    for r in runs[1:]:
        for k in ("copy_gbps", "fresh_copy_gbps", "read_gbps"):
            best[k] = max(best[k], r[k])
        for k in ("exp_per_s", "matmul_flops"):
            best[k] = {d: max(best[k][d], r[k][d]) for d in best[k]}
    best["runs"] = runs
    return best


#: glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks at least this
#: big are always fresh, page-faulted memory.
FRESH_OUTPUT_MIN_BYTES = 32 * 2**20


def bound(
    mode: str, batch: int, classes: int, hidden: int, itemsize: int, dtype: str, lim: dict
) -> dict[str, Any]:
    """The fewest bytes, exps and FLOPs the operation needs, and the time they take at the limits.

    forward reads the logits once; value_and_grad reads them once and writes the gradient once;
    both need one exp per logit. The model step needs its three matmuls (6 * B * d * V FLOPs),
    one exp per logit, and to read h, W and write their gradients.

    value_and_grad returns its gradient in a new array (nothing is donated), so its memory limit
    is the copy into a fresh output (`fresh_copy_gbps`, which includes what the allocator costs
    to hand out that buffer), not the in-place copy: no implementation can write the gradient
    faster than that on this machine and allocator. Only for gradients of at least
    `FRESH_OUTPUT_MIN_BYTES`: glibc malloc recycles smaller blocks from its heap, so a small
    fresh output costs no more than an in-place one. The in-place figure is kept in
    `limit_times["memory"]` for comparison.
    """
    n = batch * classes
    if mode == "forward":
        nbytes, flops = n * itemsize, 0
    elif mode == "value_and_grad":
        nbytes, flops = 2 * n * itemsize, 0
    else:
        nbytes, flops = 2 * (batch + classes) * hidden * itemsize, 6 * batch * hidden * classes
    times = {
        "memory": nbytes / (lim["copy_gbps"] * 1e9),
        "fresh-output memory": (
            nbytes / (lim["fresh_copy_gbps"] * 1e9)
            if mode == "value_and_grad" and n * itemsize >= FRESH_OUTPUT_MIN_BYTES
            else 0.0
        ),
        "exp": n / lim["exp_per_s"][dtype],
        "matmul": flops / lim["matmul_flops"][dtype],
    }
    kind = max(times, key=lambda k: times[k])
    return {
        "bytes_min": nbytes,
        "exps": n,
        "flops": flops,
        "limit_s": times[kind],
        "limit_kind": kind,
        "limit_times": times,
    }


def apply(rows: list[dict[str, Any]], lim: dict) -> None:
    """Set each timed row's bound and `frac_limit` from the limits `lim`, in place."""
    for r in rows:
        if "median_s" in r:
            itemsize = 2 if r["dtype"] == "bfloat16" else 4
            b = bound(r["mode"], r["batch"], r["classes"], r["hidden"], itemsize, r["dtype"], lim)
            r.update({k: v for k, v in b.items() if k != "limit_times"})
            r["frac_limit"] = b["limit_s"] / r["median_s"]
