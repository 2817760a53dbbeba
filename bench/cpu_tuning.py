"""Re-measure each number of `jaxloss._xla_cpu.CpuConfig`, and the CPU kernels against the portable.

    python -m bench.cpu_tuning [--rounds 7] [--only NAME ...]

Each row times two variants of one jitted call side by side, interleaved (A B A B ...), and prints
the medians and their ratio: the config value against the value that switches its path off, or
the XLA:CPU kernel against the portable one. The figures quoted in docs/cpu-tuning.md come from
this script. It runs on whatever backend JAX picks, but the knobs only matter on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxloss
from jaxloss import _impl
from jaxloss._xla_cpu import CONFIG, CpuConfig


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    what: str
    shape: tuple[int, int]
    dtype: str
    mode: str  # "forward" or "value_and_grad"
    fn: str  # the public function
    a: tuple[str, CpuConfig | None]  # (implementation, config) of variant A
    b: tuple[str, CpuConfig | None]


ROWS = (
    Row("max_row", "long rows cut into 32K pieces vs not", (2048, 131072), "float32",
        "value_and_grad", "cross_entropy", ("xla_cpu", CONFIG),
        ("xla_cpu", dataclasses.replace(CONFIG, max_row=2**30))),
    Row("label_shift_min_size", "no label-shift cond at 128x10 vs the cond", (128, 10), "float32",
        "forward", "cross_entropy", ("xla_cpu", CONFIG),
        ("xla_cpu", dataclasses.replace(CONFIG, label_shift_min_size=0))),
    Row("label_shift", "label shift (one pass) vs max shift at 4096x32000", (4096, 32000),
        "float32", "forward", "cross_entropy", ("xla_cpu", CONFIG),
        ("xla_cpu", dataclasses.replace(CONFIG, label_shift_min_size=2**40))),
    *(
        Row(f"narrow_keep_exp_max@{b}x1000", f"bf16 keeps f32 exp vs recomputes, {b}x1000",
            (b, 1000), "bfloat16", "value_and_grad", "cross_entropy",
            ("xla_cpu", dataclasses.replace(CONFIG, narrow_keep_exp_max=2**40)),
            ("xla_cpu", dataclasses.replace(CONFIG, narrow_keep_exp_max=0)))
        for b in (1024, 4096, 8192)
    ),
    *(
        Row(f"small_max@{b}x{k}", f"0/1 label weight vs scatters, {b}x{k}", (b, k), "float32",
            "value_and_grad", "cross_entropy",
            ("xla_cpu", dataclasses.replace(CONFIG, small_max=2**40)),
            ("xla_cpu", dataclasses.replace(CONFIG, small_max=0)))
        for b, k in ((128, 10), (256, 64), (128, 1000))
    ),
    *(
        Row(f"label_piece@{b}x{k}:{dt}",
            f"off-label sum in pieces vs weighting every element, {b}x{k}", (b, k), dt,
            "forward", "cross_entropy", ("xla_cpu", CONFIG),
            ("xla_cpu", dataclasses.replace(CONFIG, label_piece_min=2**40)))
        for b, k, dt in ((4096, 32000, "float32"), (4096, 32000, "bfloat16"),
                         (1024, 1000, "float32"))
    ),
    *(
        Row(f"tangent_barrier@{fn}:{b}x{k}:{dt}",
            f"barrier before the recomputed gradient vs none, {fn} {b}x{k}", (b, k), dt,
            "value_and_grad", fn, ("xla_cpu", CONFIG),
            ("xla_cpu", dataclasses.replace(CONFIG, tangent_barrier=False)))
        for fn in ("logsumexp", "softmax_kl_divergence")
        for b, k, dt in ((1024, 1000, "float32"), (4096, 32000, "float32"),
                         (4096, 32000, "bfloat16"))
    ),
    *(
        Row(f"kernel:{fn}:{mode}", f"XLA:CPU kernel vs portable, {fn} {mode}", (4096, 32000),
            "float32", mode, fn, ("xla_cpu", CONFIG), ("portable", None))
        for fn in ("cross_entropy", "logsumexp")
        for mode in ("forward", "value_and_grad")
    ),
)  # fmt: skip


def _call(row: Row, pinned: tuple[str, CpuConfig | None]) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    b, k = row.shape
    x = jnp.asarray(rng.normal(size=(b, k)) * 3, row.dtype)
    y = jnp.asarray(rng.integers(0, k, size=b), jnp.int32)
    fn = getattr(jaxloss, row.fn)
    args = {"cross_entropy": (x, y), "softmax_kl_divergence": (x, x[::-1])}.get(row.fn, (x,))

    def loss(*a):
        return jnp.sum(fn(*a))

    f = jax.jit(_impl.pinned(loss if row.mode == "forward" else jax.value_and_grad(loss), *pinned))
    jax.block_until_ready(f(*args))
    return lambda: jax.block_until_ready(f(*args))


def measure(row: Row, rounds: int) -> tuple[float, float]:
    calls = (_call(row, row.a), _call(row, row.b))
    n = max(1, int(4e7 // (row.shape[0] * row.shape[1])))  # ~40M logits per sample
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for call, out in zip(calls, samples, strict=True):
            t = time.perf_counter()
            for _ in range(n):
                call()
            out.append((time.perf_counter() - t) / n)
    return float(np.median(samples[0])), float(np.median(samples[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved samples per variant")
    parser.add_argument("--only", nargs="*", help="row names (prefixes) to run")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.devices()[0]}")
    print("| row | compares | A ms | B ms | A/B |\n|---|---|---|---|---|")
    for row in ROWS:
        if args.only and not any(row.name.startswith(o) for o in args.only):
            continue
        a, b = measure(row, args.rounds)
        print(f"| {row.name} | {row.what} ({row.mode}, {row.dtype}) | {a * 1e3:.3f} | "
              f"{b * 1e3:.3f} | {a / b:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
