"""Benchmark: fused `linear_cross_entropy` against the unfused JAX formula and PyTorch.

Mode: value_and_grad of the mean loss w.r.t. hidden and weight. Every (implementation, shape)
runs in its own subprocess, so one's memory (the unfused version holds several [N, V]
arrays) never adds to another's, and so peak RSS is per implementation. Implementations:

- ``jaxloss_fused``: ``jaxloss.linear_cross_entropy(h, w, y, reduction="mean")``.
- ``jax_unfused``: ``jaxloss.cross_entropy(h @ w, y, reduction="mean")``.
- ``torch_chunked``: ``torch.nn.functional.linear_cross_entropy(..., options=
  LinearCrossEntropyOptions(chunking_method=None, batch_chunk_size=T, acc_policy="accurate"))``,
  PyTorch's fused, chunked path, with jaxloss's token chunk ``T`` (its ``"auto"`` chunking was
  4-10x slower on this CPU, and its docs recommend "accurate" there).
- ``torch_reference``: the same with ``options=None`` (logits materialised), skipped where it
  would need more than the memory cap.
- ``matmul``: a plain large matrix product in JAX and PyTorch, the rate the others are
  compared with (``frac_matmul`` = 6·N·D·V flops / time / the faster float32 rate of the
  two; the same denominator for every row, bf16 included).

Errors (``loss_rel_err``, ``grad_*_err``: max |fused − unfused| / max |unfused|) compare the
fused result with the unfused one computed in the unfused process, from the fused outputs
saved to a temporary file. Both PyTorch and JAX use 2 threads (the machine's 2 cores).

Small cases: a warm-up call, then the best of 3. Cases with N·V ≥ 2³⁰: one timed call (cold
buffers) per implementation. ``python -m bench.linear_ce [--quick] [--only NAMES]
[--impls NAMES] [--json FILE]`` prints a Markdown table; ``run(quick)``
returns the rows for ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# (name, N, D, V, dtype)
FULL = [
    ("4096x1024x32768", 4096, 1024, 32768, "float32"),
    ("4096x1024x32768-bf16", 4096, 1024, 32768, "bfloat16"),
    ("8192x1024x131072", 8192, 1024, 131072, "float32"),
]
QUICK = [
    ("1024x256x8192", 1024, 256, 8192, "float32"),
    ("1024x256x8192-bf16", 1024, 256, 8192, "bfloat16"),
]
IMPLS = ("jaxloss_fused", "jax_unfused", "torch_chunked", "torch_reference")
MEMORY_CAP = 10 * 2**30  # per process, on a machine shared with other workers
THREADS = 2


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _inputs(n: int, d: int, v: int):
    import numpy as np

    rng = np.random.default_rng(0)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((d, v), dtype=np.float32) / np.float32(np.sqrt(d))
    y = rng.integers(0, v, n).astype(np.int32)
    return h, w, y


def _token_chunk(v: int) -> int:
    """The token chunk `linear_cross_entropy` picks for `v` classes (its default)."""
    t = (1 << 25) // v
    return max(8, min(1024, t - t % 8))


def _runs(fn, reps: int) -> list[float]:
    """A warm-up call then `reps` timed ones; a single call, timed, when `reps` is 1."""
    if reps > 1:
        fn()
    return _time(fn, reps)


def _time(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# --- workers (run in a subprocess each) -------------------------------------------------------


def _jax_worker(impl: str, n: int, d: int, v: int, dtype: str, reps: int, tmp: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxloss
    from jaxloss._linear_cross_entropy import linear_cross_entropy

    h, w, y = _inputs(n, d, v)
    h, w, y = jnp.asarray(h, dtype), jnp.asarray(w, dtype), jnp.asarray(y)

    if impl == "jaxloss_fused":

        def loss(h, w):
            return linear_cross_entropy(h, w, y, reduction="mean")
    else:

        def loss(h, w):
            return jaxloss.cross_entropy(h @ w, y, reduction="mean")

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    t0 = time.perf_counter()
    lowered = fn.lower(h, w)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    rss0 = _rss_bytes()
    results = []

    def call():
        results[:] = [jax.block_until_ready(compiled(h, w))]

    times = _runs(call, reps)
    out = results[0]
    row: dict[str, Any] = {
        "time_s": min(times),
        "times_s": times,
        "compile_s": compile_s,
        "temp_MiB": mem.temp_size_in_bytes / 2**20,
        "peak_MiB": (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
        / 2**20,
        "rss_MiB": max(_peak_rss_bytes() - rss0, 0) / 2**20,
    }
    value, (gh, gw) = out
    path = Path(tmp) / "fused.npz"
    if impl == "jaxloss_fused":
        np.savez(
            path,
            value=np.float32(value),
            gh=np.asarray(gh, np.float32),
            gw=np.asarray(gw, np.float32),
        )
    elif path.exists():
        del compiled, fn
        ref = np.load(path)
        rel = lambda a, b: float(np.max(np.abs(a - b)) / np.max(np.abs(b)))  # noqa: E731
        row["fused_errors"] = {
            "loss_rel_err": abs(float(ref["value"]) - float(value)) / abs(float(value)),
            "grad_h_err": rel(ref["gh"], np.asarray(gh, np.float32)),
            "grad_w_err": rel(ref["gw"], np.asarray(gw, np.float32)),
        }
    row["loss"] = float(value)
    return row


def _torch_worker(impl: str, n: int, d: int, v: int, dtype: str, reps: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    h, w, y = _inputs(n, d, v)
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    x = torch.from_numpy(h).to(tdt).requires_grad_()
    weight = torch.from_numpy(w.T.copy()).to(tdt).requires_grad_()  # torch: [V, D]
    target = torch.from_numpy(y).long()
    options = None
    if impl == "torch_chunked":
        # PyTorch's "auto" chunking measured 4-10x slower than this on this CPU; give it the
        # chunk jaxloss picks (same memory) and the policy its docs recommend for CPU.
        options = torch.nn.LinearCrossEntropyOptions(
            chunking_method=None, batch_chunk_size=_token_chunk(v), acc_policy="accurate"
        )

    def step():
        x.grad = None
        weight.grad = None
        loss = F.linear_cross_entropy(x, weight, target, reduction="mean", options=options)
        loss.backward()
        return loss

    rss0 = _rss_bytes()
    results = []

    def call():
        results[:] = [step()]

    times = _runs(call, reps)
    loss = results[0]
    return {
        "time_s": min(times),
        "times_s": times,
        "rss_MiB": max(_peak_rss_bytes() - rss0, 0) / 2**20,
        "loss": float(loss),
    }


def _matmul_worker(reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    m = 4096
    a = np.random.default_rng(0).standard_normal((m, m), dtype=np.float32)
    out: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        x = jnp.asarray(a, dtype)
        f = jax.jit(lambda x: x @ x).lower(x).compile()
        jax.block_until_ready(f(x))
        t = min(_time(lambda f=f, x=x: jax.block_until_ready(f(x)), reps))
        out[f"jax_{dtype}_gflops"] = 2 * m**3 / t / 1e9
        tx = torch.from_numpy(a).to({"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
        tx @ tx
        t = min(_time(lambda tx=tx: tx @ tx, reps))
        out[f"torch_{dtype}_gflops"] = 2 * m**3 / t / 1e9
    return out


# --- driver -----------------------------------------------------------------------------------


def _unfused_bytes(n: int, v: int, impl: str) -> int:
    """Rough peak of the implementations that materialise logits (f32)."""
    return {"jax_unfused": 2, "torch_reference": 3}.get(impl, 0) * n * v * 4


def _subprocess(args: list[str]) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "bench.linear_ce", "--worker", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, only: str | None = None, impls: str | None = None) -> list[dict]:
    cases = QUICK if quick else FULL
    if only:
        cases = [c for c in cases if c[0] in only.split(",")]
    reps_matmul = 3
    rate = _subprocess(["matmul", "0", "0", "0", "float32", str(reps_matmul), ""])
    # The machine's matmul rate: the faster of JAX's and PyTorch's float32 4096³ products.
    machine = max(rate.get("jax_float32_gflops", 0.0), rate.get("torch_float32_gflops", 0.0))
    rows: list[dict] = []
    for name, n, d, v, dtype in cases:
        big = n * v >= 2**30
        reps = 1 if big else 3
        flops = 6 * n * d * v
        case_rows: dict[str, dict] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for impl in IMPLS if impls is None else impls.split(","):
                row: dict[str, Any] = {"case": name, "impl": impl, "dtype": dtype}
                row.update({"N": n, "D": d, "V": v})
                if _unfused_bytes(n, v, impl) > MEMORY_CAP - 2**30:
                    row["note"] = "skipped: would exceed the 10 GiB per-process cap"
                    rows.append(row)
                    continue
                args = [impl, str(n), str(d), str(v), dtype, str(reps), tmp]
                row.update(_subprocess(args))
                if "time_s" in row:
                    row["gflops"] = flops / row["time_s"] / 1e9
                    row["frac_matmul"] = row["gflops"] / machine if machine else None
                row.pop("times_s", None)
                case_rows[impl] = row
                rows.append(row)
        fused = case_rows.get("jaxloss_fused", {})
        errs = case_rows.get("jax_unfused", {}).pop("fused_errors", None)
        if errs:
            fused.update(errs)
        if "time_s" in fused:
            for other, key in (
                ("jax_unfused", "vs_unfused"),
                ("torch_chunked", "vs_torch_chunked"),
                ("torch_reference", "vs_torch_reference"),
            ):
                t = case_rows.get(other, {}).get("time_s")
                fused[key] = fused["time_s"] / t if t else None
            t = case_rows.get("jax_unfused", {}).get("temp_MiB")
            if t:
                fused["temp_vs_unfused"] = fused["temp_MiB"] / t
                fused["peak_vs_unfused"] = fused["peak_MiB"] / case_rows["jax_unfused"]["peak_MiB"]
    rows.append({"case": "matmul 4096^3", "impl": "matmul", **rate})
    return rows


COLUMNS = [
    "case",
    "impl",
    "time_s",
    "compile_s",
    "gflops",
    "frac_matmul",
    "temp_MiB",
    "peak_MiB",
    "rss_MiB",
    "vs_unfused",
    "vs_torch_chunked",
    "vs_torch_reference",
    "temp_vs_unfused",
    "peak_vs_unfused",
    "loss_rel_err",
    "grad_h_err",
    "grad_w_err",
    "note",
    "error",
]


def markdown(rows: list[dict]) -> str:
    def cell(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.3g}"
        return "" if x is None else str(x)

    bench_rows = [r for r in rows if r.get("impl") != "matmul"]
    cols = [c for c in COLUMNS if any(c in r for r in bench_rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in bench_rows]
    for r in rows:
        if r.get("impl") == "matmul":
            rates = ", ".join(f"{k} {v:.1f}" for k, v in r.items() if k.endswith("gflops"))
            lines += ["", f"Matmul rate (4096³, GFLOP/s): {rates}"]
    return "\n".join(lines)


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="run only the cases of these (comma-separated) names")
    ap.add_argument("--impls", help="run only these (comma-separated) implementations")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        impl, n, d, v, dtype, reps, tmp = args.worker
        n, d, v, reps = int(n), int(d), int(v), int(reps)
        if impl == "matmul":
            out = _matmul_worker(reps)
        elif impl.startswith("torch"):
            out = _torch_worker(impl, n, d, v, dtype, reps)
        else:
            out = _jax_worker(impl, n, d, v, dtype, reps, tmp)
        print(json.dumps(out))
        return
    rows = run(args.quick, args.only, args.impls)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    _main()
