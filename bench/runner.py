"""`python -m bench`: time every case, write results.json, table.md and plots into `--out`.

The timing core, shared with the pytest-benchmark cases (`bench/test_bench.py`): within a case
(one shape, dtype and mode) the implementations are compiled, run once untimed (the error
checks read that round's outputs), then timed in one process, interleaved (A B C, B C A,
C A B, ...), so that a slow minute of a shared machine lands on all of them and none always runs
right after the same other one. Each call is waited for. `--linear-ce` is the fused linear
cross-entropy mode: the model step at the `bench/shapes.py` LINEAR shapes (hidden sizes of
real models), fused against unfused and PyTorch.

The host allocator is whatever the process has: `LD_PRELOAD=libtcmalloc_minimal.so.4 python -m
bench ...` runs under tcmalloc; the table's header names the allocator it found.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import shapes as shape_table


def calls_per_sample(call: Callable[[], Any], first_s: float, sample_s: float = 0.02) -> int:
    """How many back-to-back calls last `sample_s` (1 to 1000), so that microsecond cases are
    not timer noise; counted by calling again, as the first call after compiling is slowest."""
    if first_s >= sample_s:
        return 1
    calls, t0 = 0, time.perf_counter()
    while calls < 1000 and time.perf_counter() - t0 < sample_s:
        call()
        calls += 1
    return max(1, calls)


def interleave(
    prepared: list,
    min_rounds: int,
    max_rounds: int,
    budget_s: float,
    sample_s: float = 0.02,
    on_warmup: Callable[[Any, Any], None] | None = None,
) -> dict:
    """Time each prepared call in turn, round after round: seconds per call of each `impl`.

    An untimed warm-up round first, whose outputs go to `on_warmup(prepared, output)`; then at
    least `min_rounds` rounds, more while they fit in `budget_s`, at most `max_rounds`. An
    implementation that raises is dropped with its error recorded.
    """
    times: dict[str, list[float]] = {p.impl: [] for p in prepared}
    number: dict[str, int] = {}
    errors: dict[str, str] = {}
    live = list(prepared)

    def run_round(record: bool, first: int = 0) -> None:
        k = first % max(len(live), 1)
        for p in live[k:] + live[:k]:
            n = number.get(p.impl, 1) if record else 1
            try:
                t0 = time.perf_counter()
                for _ in range(n):
                    out = p.call()
                dt = time.perf_counter() - t0
                if not record and on_warmup is not None:
                    on_warmup(p, out)
                del out
            except Exception as e:
                errors[p.impl] = f"{type(e).__name__}: {e}"
                live.remove(p)
                continue
            if record:
                times[p.impl].append(dt / n)
            else:
                number[p.impl] = calls_per_sample(p.call, dt, sample_s)

    run_round(record=False)
    start, rounds = time.perf_counter(), 0
    while live and rounds < max_rounds:
        run_round(record=True, first=rounds)
        rounds += 1
        elapsed = time.perf_counter() - start
        if rounds >= min_rounds and elapsed * (rounds + 1) / rounds > budget_s:
            break
    return {"times": times, "errors": errors, "number": number}


def median(v: list[float]) -> float:
    s, n = sorted(v), len(v)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def run_shape(shape: shape_table.Shape, dtype: str, args: argparse.Namespace) -> list:
    """Every mode of one (shape, dtype): one row per implementation and mode."""
    import jax

    from bench import impls, reference

    modes = sorted(args.modes, key=shape_table.MODES.index)
    if (
        "model_step" in modes
        and not args.model_step_all
        and jax.default_backend() == "cpu"
        and shape.elements > shape_table.MODEL_STEP_CPU_MAX_ELEMENTS
    ):
        modes.remove("model_step")
        print(f"  {shape.label}: model_step skipped on CPU (--model-step-all runs it)", flush=True)
    logits = any(m != "model_step" for m in modes)
    inputs = impls.make_inputs(shape.batch, shape.classes, shape.hidden, dtype, logits=logits)
    check = not args.no_errors
    ref = reference.Reference.of(inputs.x, inputs.y) if check and logits else None
    rows: list[dict[str, Any]] = []
    for mode in modes:
        if mode == "model_step":
            # It makes its own logits: drop the input ones (2 GiB at 128k classes in float32).
            inputs.x = ref = None
            gc.collect()
            if check:
                ref = reference.ModelReference.of(inputs.h, inputs.w, inputs.y)
        case = {"shape": shape.name, "batch": shape.batch, "classes": shape.classes}
        case.update(hidden=shape.hidden, dtype=dtype, mode=mode)
        prepared, unavailable, errs = [], {}, {}
        for impl in args.impls:
            if impl in impls.LINEAR_ONLY and mode != "model_step":
                continue
            try:
                prepared.append(impls.prepare(impl, mode, inputs))
            except impls.Unavailable as e:
                unavailable[impl] = str(e)
            except Exception as e:  # a failure to build is a result, not a crash of the suite
                unavailable[impl] = f"failed to build: {type(e).__name__}: {e}"
                traceback.print_exc()

        def on_warmup(p: Any, out: Any, errs=errs, ref=ref, mode=mode) -> None:
            if ref is not None:
                try:
                    errs[p.impl] = ref.errors(mode, out)
                except Exception as e:
                    errs[p.impl] = {"error": f"error check failed: {type(e).__name__}: {e}"}

        rounds = (args.min_rounds, args.max_rounds, args.budget)
        timed = interleave(prepared, *rounds, on_warmup=on_warmup)
        for p in prepared:
            ts = timed["times"][p.impl]
            row = {**case, "impl": p.impl, "times_s": ts, "lower_s": p.lower_s}
            row.update(compile_s=p.compile_s, memory=p.memory, notes=p.notes)
            if p.impl in timed["errors"] or not ts:
                row["error"] = timed["errors"].get(p.impl, "no timed run")
            else:
                row.update(median_s=median(ts), min_s=min(ts), max_s=max(ts), rounds=len(ts))
                row["calls_per_sample"] = timed["number"].get(p.impl, 1)
                row.update(errs.get(p.impl, {}))
            rows.append(row)
        rows += [{**case, "impl": i, "unavailable": why} for i, why in unavailable.items()]
        p = on_warmup = prepared = None  # type: ignore[assignment]  # drop the arrays they hold
        gc.collect()
        print(
            f"  {shape.label:>12} {dtype:<8} {mode:<14} "
            + "  ".join(
                f"{r['impl']} " + (f"{r['median_s'] * 1e3:.1f}ms" if "median_s" in r else "-")
                for r in rows
                if r["mode"] == mode
            ),
            flush=True,
        )
    del inputs, ref
    gc.collect()
    jax.clear_caches()
    return rows


# --- environment ------------------------------------------------------------------------------


def loaded_allocator() -> str:
    """The host allocator of this process, from the shared objects mapped into it."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return f"unknown ({platform.system()} default)"
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        libs = sorted({line.split()[-1] for line in maps.splitlines() if name in line})
        if libs:
            return f"{name} ({libs[0]})"
    return "glibc malloc (default)" if "libc" in maps else "default"


def git_state(path: str) -> str | None:
    """The last commit touching `path`, and whether its working tree differs from it."""
    try:
        run = [["git", "log", "-1", "--format=%h %cI", "--", path], ["git", "status", "-s", path]]
        head, dirty = (
            subprocess.run(c, capture_output=True, text=True, timeout=10, check=True).stdout
            for c in run
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.strip() + (" + uncommitted changes" if dirty.strip() else "")


def environment() -> dict[str, Any]:
    import jax

    from bench import impls

    processor = platform.processor()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        processor = next(ln.split(":", 1)[1].strip() for ln in cpuinfo if "model name" in ln)
    except (OSError, StopIteration):
        pass
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": processor,
        "cores": impls.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "allocator": loaded_allocator(),
        **{k: os.environ.get(k, "") for k in ("LD_PRELOAD", "XLA_FLAGS", "OMP_WAIT_POLICY")},
        "jaxloss_source": git_state("jaxloss"),
    }
    for mod in ("jaxlib", "optax", "numpy", "torch"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --- command line ---------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    from bench.impls import IMPLS, LINEAR_ONLY

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the reduced set (CI, device check)")
    ap.add_argument("--linear-ce", action="store_true", help="the fused linear CE mode")
    ap.add_argument("--out", default="bench/out", help="output folder (default bench/out)")
    ap.add_argument("--shapes", nargs="+", help=f"from bench/shapes.py: {list(shape_table.SHAPES)}")
    ap.add_argument("--dtypes", nargs="+", choices=shape_table.DTYPES)
    ap.add_argument("--modes", nargs="+", choices=shape_table.MODES)
    ap.add_argument("--impls", nargs="+", choices=IMPLS)
    ap.add_argument("--min-rounds", type=int, default=3, help="timed rounds at least")
    ap.add_argument("--max-rounds", type=int, default=20)
    ap.add_argument("--budget", type=float, help="seconds of rounds per case (quick 1, else 6)")
    ap.add_argument("--no-errors", action="store_true", help="skip the float64 comparisons")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--small-limits", action="store_true", help="tests only: tiny limit arrays")
    ap.add_argument("--model-step-all", action="store_true", help="CPU: every model step")
    args = ap.parse_args(argv)
    if args.linear_ce:
        sets = (shape_table.LINEAR_QUICK, shape_table.LINEAR_FULL)
        args.modes = args.modes or ["model_step"]
        args.impls = args.impls or ["fused", "jaxloss", "torch_chunked", "torch"]
        args.model_step_all = True
    else:
        sets = (shape_table.QUICK, shape_table.FULL)
        args.impls = args.impls or [i for i in IMPLS if i not in LINEAR_ONLY]
    args.shapes = args.shapes or list(sets[0] if args.quick else sets[1])
    shape_table.get(args.shapes)  # fail early on an unknown name
    args.dtypes = args.dtypes or list(shape_table.DTYPES)
    args.modes = args.modes or list(shape_table.MODES)
    args.budget = args.budget if args.budget is not None else (1.0 if args.quick else 6.0)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    # PyTorch's OpenMP threads spin after each parallel region and took the 2 cores from the
    # implementation timed next; set before torch is imported (an explicit setting wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from bench import impls, limits, report

    started, load_before, env = time.time(), _load(), environment()
    print(f"{env['backend']} ({env['device_kind']}), {env['cores']} cores, {env['allocator']}")
    lim_runs = [limits.measure(args.quick, args.small_limits)]
    lim = limits.combine(lim_runs)
    rows: list[dict[str, Any]] = []
    # The linear cross-entropy run can share a folder with the main one.
    names = ("linear_ce.json", "linear_ce.md", "linear_ce_") if args.linear_ce else (
        "results.json", "table.md", "")  # fmt: skip

    def write(final: bool) -> str:
        full = list(args.shapes) == list(shape_table.FULL)
        results = {
            "suite": "linear_ce" if args.linear_ce else "quick" if args.quick else
            "full" if full else "custom",
            "complete": final,
            "argv": argv,
            "environment": env,
            "load_before": load_before,
            "load_after": _load(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "wall_s": time.time() - started,
            "limits": lim,
            "impl_descriptions": {k: impls.DESCRIPTIONS[k] for k in args.impls},
            "rows": rows,
        }  # fmt: skip
        limits.apply(rows, lim)  # with the best limits measured so far
        (out / names[0]).write_text(json.dumps(results, indent=1, default=str))
        table = report.markdown(results)
        (out / names[1]).write_text(table)
        if final and not args.no_plots:
            report.plots(results, out, prefix=names[2])
        return table

    for shape in shape_table.get(args.shapes):
        for dtype in args.dtypes:
            rows.extend(run_shape(shape, dtype, args))
        write(final=False)  # a run cut short still leaves its results
    lim_runs.append(limits.measure(args.quick, args.small_limits))
    lim = limits.combine(lim_runs)
    print(write(final=True))
    print(f"wrote {out}/{names[0]}, {names[1]}" + ("" if args.no_plots else " and plots"))
    return 1 if any("error" in r for r in rows) else 0
