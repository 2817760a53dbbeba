"""Reference rates, measured with JAX on the device the benchmarks run on, in the same run.

- `copy_gbps`: bytes read + written per second by an in-place `a + 1` (input donated).
- `fresh_copy_gbps`: the same into a new output, as a jitted function that returns a new array
  does; the gap is what allocating (under glibc malloc, page-faulting) a fresh buffer costs.
- `read_gbps`: a plain sum, bytes read per second.
- `exp_per_s`: elements per second of a fused `sum(exp(x), axis=-1)` per dtype (bf16 upcast).
- `matmul_flops`: FLOP/s of a square matmul per dtype, the limit for the model step.

Each is the best of several runs: what the machine can do, not its average while shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bench.impls import DTYPES

#: glibc's largest mmap threshold on 64-bit: blocks this big are always fresh, page-faulted.
FRESH_OUTPUT_MIN_BYTES = 32 * 2**20


def _best(fn: Callable[[], Any], reps: int) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def measure(quick: bool = False, small: bool = False) -> dict[str, Any]:
    """Measure the rates; `small` (tests only) uses cache-sized arrays: not the machine's."""
    on_cpu = jax.default_backend() == "cpu"
    # Large enough to spill every cache level (128 MiB at least); a GPU needs more.
    rows, cols, mm = (2048 if quick else 4096, 16384, 2048) if on_cpu else (16384, 16384, 8192)
    if small:
        rows, cols, mm = 256, 1024, 256
    reps = 3 if quick else 8
    out: dict[str, Any] = {"array_shape": [rows, cols], "matmul_n": mm, "reps": reps}
    a = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32)
    nbytes = a.size * a.dtype.itemsize
    inplace = jax.jit(lambda v: v + 1.0, donate_argnums=0)
    state = [jnp.copy(a)]

    def step() -> jax.Array:
        state[0] = inplace(state[0])
        return state[0]

    out["copy_gbps"] = 2 * nbytes / _best(step, reps) / 1e9
    state.clear()
    fresh = jax.jit(lambda v: v + 1.0)
    out["fresh_copy_gbps"] = 2 * nbytes / _best(lambda: fresh(a), reps) / 1e9
    total = jax.jit(jnp.sum)
    out["read_gbps"] = nbytes / _best(lambda: total(a), reps) / 1e9
    out["exp_per_s"], out["matmul_flops"] = {}, {}
    expsum = jax.jit(lambda v: jnp.sum(jnp.exp(v.astype(jnp.float32)), axis=-1))
    matmul = jax.jit(lambda p, q: p @ q)
    for name, dt in DTYPES.items():
        v = a.astype(dt)
        out["exp_per_s"][name] = a.size / _best(lambda v=v: expsum(v), reps)
        p = jax.random.normal(jax.random.key(1), (mm, mm), jnp.float32).astype(dt)
        out["matmul_flops"][name] = 2 * mm**3 / _best(lambda p=p: matmul(p, p), reps)
    return out


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of several measurements (taken at the start and the end of a run)."""
    best = dict(runs[0])
    for r in runs[1:]:
        for k in ("copy_gbps", "fresh_copy_gbps", "read_gbps"):
            best[k] = max(best[k], r[k])
        for k in ("exp_per_s", "matmul_flops"):
            best[k] = {d: max(best[k][d], r[k][d]) for d in best[k]}
    return {**best, "runs": runs}


def bound(row: dict[str, Any], lim: dict) -> dict[str, Any]:
    """The fewest bytes, exps and FLOPs the row's operation needs, and the time at the limits.

    forward reads the logits once; value_and_grad also writes the gradient once, into a new
    array, so from FRESH_OUTPUT_MIN_BYTES up its memory limit is the fresh-output copy (glibc
    recycles smaller blocks). The model step needs 6·B·d·V FLOPs and to read h, W and write
    their gradients; every mode one exp per logit.
    """
    batch, classes, mode, dtype = row["batch"], row["classes"], row["mode"], row["dtype"]
    n, itemsize = batch * classes, 2 if dtype == "bfloat16" else 4
    flops = 6 * n * row["hidden"] if mode == "model_step" else 0
    nbytes = {"forward": n * itemsize, "value_and_grad": 2 * n * itemsize}.get(
        mode, 2 * (batch + classes) * row["hidden"] * itemsize
    )
    fresh = mode == "value_and_grad" and n * itemsize >= FRESH_OUTPUT_MIN_BYTES
    times = {
        "memory": nbytes / (lim["copy_gbps"] * 1e9),
        "fresh-output memory": nbytes / (lim["fresh_copy_gbps"] * 1e9) if fresh else 0.0,
        "exp": n / lim["exp_per_s"][dtype],
        "matmul": flops / lim["matmul_flops"][dtype],
    }
    kind = max(times, key=lambda k: times[k])
    return {"bytes_min": nbytes, "flops": flops, "limit_s": times[kind], "limit_kind": kind}


def apply(rows: list[dict[str, Any]], lim: dict) -> None:
    """Set each timed row's bound, throughput and `frac_limit` from the limits `lim`."""
    for r in rows:
        if "median_s" in r:
            r.update(bound(r, lim))
            r["frac_limit"] = r["limit_s"] / r["median_s"]
            step = r["mode"] == "model_step"
            r["gbps"] = None if step else r["bytes_min"] / r["median_s"] / 1e9
            r["gflops"] = r["flops"] / r["median_s"] / 1e9 if step else None
