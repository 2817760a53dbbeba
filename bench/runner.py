"""`python -m bench`: run every case, write results.json, table.md and plots into `--out`.

Within a case (one shape, dtype and mode) the implementations run in one process, interleaved
(A B C, B C A, C A B, ...: each round starts one later, so no implementation always runs right
after the same other one), after compiling and one warm-up round, so that a slow minute of a
shared machine lands on all of them rather than on one. Each call is waited for
(`block_until_ready`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
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

TCMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)
_REEXEC_FLAG = "JAXLOSS_BENCH_REEXEC"


# --- allocator ------------------------------------------------------------------------------


def loaded_allocator() -> str:
    """The host allocator of this process, from the shared objects mapped into it."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return f"unknown ({platform.system()} default)"
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in maps:
            libs = sorted({line.split()[-1] for line in maps.splitlines() if name in line})
            return f"{name} ({libs[0]})"
    return "glibc malloc (default)" if "libc" in maps else "default"


def find_tcmalloc() -> str | None:
    env = os.environ.get("JAXLOSS_TCMALLOC")
    for p in ((env,) if env else ()) + TCMALLOC_PATHS:
        if p and Path(p).exists():
            return p
    return None


def ensure_allocator(kind: str, argv: list[str]) -> None:
    """Re-execute this process with tcmalloc preloaded if `kind` asks for it and it is not."""
    if kind != "tcmalloc" or "tcmalloc" in loaded_allocator():
        return
    lib = find_tcmalloc()
    if lib is None:
        raise SystemExit(
            "--allocator tcmalloc: libtcmalloc_minimal.so.4 not found. On Debian/Ubuntu: "
            "apt-get install -y libtcmalloc-minimal4 (or set JAXLOSS_TCMALLOC=/path/to/lib)."
        )
    if os.environ.get(_REEXEC_FLAG):
        raise SystemExit(f"--allocator tcmalloc: LD_PRELOAD={lib} did not load it")
    env = dict(os.environ, LD_PRELOAD=lib, **{_REEXEC_FLAG: "1"})
    print(f"re-executing with LD_PRELOAD={lib}", flush=True)
    os.execve(sys.executable, [sys.executable, "-m", "bench", *argv], env)


# --- timing ---------------------------------------------------------------------------------


def interleave(
    prepared: list,
    min_rounds: int,
    max_rounds: int,
    budget_s: float,
    sample_s: float = 0.02,
    on_warmup: Callable[[Any, Any], None] | None = None,
) -> dict:
    """Time each prepared call in turn, round after round; return impl -> seconds per call.

    One untimed warm-up round first, whose outputs go to `on_warmup(prepared, outputs)` (the
    error checks: no extra call of a multi-second case); it also sets how many back-to-back
    calls make one sample (enough to last `sample_s`, so that microsecond cases are not timer
    noise: counted on calls after the first, whose one-off costs would otherwise leave a
    128×10 case at 4 calls per sample). Then at least
    `min_rounds` rounds, more while the rounds so far fit in `budget_s`, at most `max_rounds`.
    An implementation that raises is dropped with its error recorded.
    """
    times: dict[str, list[float]] = {p.impl: [] for p in prepared}
    number: dict[str, int] = {}
    errors: dict[str, str] = {}
    live = list(prepared)

    def run_round(record: bool, first: int = 0) -> None:
        order = list(live)
        for p in order[first % len(order) :] + order[: first % len(order)]:
            n = number.get(p.impl, 1) if record else 1
            try:
                t0 = time.perf_counter()
                for _ in range(n):
                    out = p.call()
                    dt = time.perf_counter() - t0
                    if not record and on_warmup is not None:
                        on_warmup(p, out)
                    del out
                dt = (time.perf_counter() - t0) / n if record else dt
            except Exception as e:
                errors[p.impl] = f"{type(e).__name__}: {e}"
                live.remove(p)
                continue
            if record:
                times[p.impl].append(dt)
            else:
                number[p.impl] = _calls_per_sample(p.call, dt, sample_s)

    run_round(record=False)
    start = time.perf_counter()
    rounds = 0
    while live and rounds < max_rounds:
        run_round(record=True, first=rounds)
        rounds += 1
        elapsed = time.perf_counter() - start
        if rounds >= min_rounds and elapsed * (rounds + 1) / rounds > budget_s:
            break
    return {"times": times, "errors": errors, "number": number}


def _calls_per_sample(call: Callable[[], Any], first_s: float, sample_s: float) -> int:
    """How many back-to-back calls last `sample_s` (1 to 1000): counted by calling again when
    the first call took less than that, since the first call after compiling is the slowest."""
    if first_s >= sample_s:
        return 1
    calls, t0 = 0, time.perf_counter()
    while calls < 1000 and time.perf_counter() - t0 < sample_s:
        call()
        calls += 1
    return max(1, calls)


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


# --- one (shape, dtype) -----------------------------------------------------------------------


def run_shape(shape: shape_table.Shape, dtype: str, args: argparse.Namespace, lim: dict) -> list:
    import jax

    from bench import impls, limits, reference

    rows: list[dict[str, Any]] = []
    modes = sorted(args.modes, key=shape_table.MODES.index)
    if (
        "model_step" in modes
        and not args.model_step_all
        and jax.default_backend() == "cpu"
        and shape.elements > shape_table.MODEL_STEP_CPU_MAX_ELEMENTS
    ):
        modes.remove("model_step")
        print(f"  {shape.label}: model_step skipped on CPU (--model-step-all runs it)", flush=True)
    t0 = time.perf_counter()
    inputs = impls.make_inputs(shape.batch, shape.classes, shape.hidden, dtype, seed=args.seed)
    ref = reference.Reference.of(inputs.x, inputs.y)
    model_ref = None
    if "model_step" in modes and not args.no_errors:
        model_ref = reference.ModelReference.of(inputs.h, inputs.w, inputs.y)
    setup_s = time.perf_counter() - t0
    itemsize = inputs.x.dtype.itemsize

    for mode in modes:
        if mode == "model_step":
            # The model step makes its own logits: drop the input ones (2 GiB at 128k classes
            # in f32) and their reference before its largest buffers appear.
            inputs.x = None  # type: ignore[assignment]  # released on purpose, never read again
            ref = None
            gc.collect()
        prepared, unavailable = [], {}
        for impl in args.impls:
            try:
                prepared.append(impls.prepare(impl, mode, inputs))
            except impls.Unavailable as e:
                unavailable[impl] = str(e)
            except Exception as e:  # a failure to build is a result, not a crash of the suite
                unavailable[impl] = f"failed to build: {type(e).__name__}: {e}"
                traceback.print_exc()
        errs: dict[str, dict[str, Any]] = {}

        def check(p: Any, out: Any, mode=mode, errs=errs, ref=ref, model_ref=model_ref) -> None:
            if args.no_errors:
                return
            try:
                errs[p.impl] = _errors(out, mode, ref, model_ref)
            except Exception as e:
                errs[p.impl] = {"error": f"error check failed: {type(e).__name__}: {e}"}

        timed = interleave(prepared, args.min_rounds, args.max_rounds, args.budget, on_warmup=check)
        b = limits.bound(mode, shape.batch, shape.classes, shape.hidden, itemsize, dtype, lim)
        case: dict[str, Any] = {
            "shape": shape.name,
            "batch": shape.batch,
            "classes": shape.classes,
            "hidden": shape.hidden,
            "dtype": dtype,
            "mode": mode,
        }
        for p in prepared:
            ts = timed["times"][p.impl]
            row: dict[str, Any] = {
                **case,
                "impl": p.impl,
                "times_s": ts,
                "lower_s": p.lower_s,
                "compile_s": p.compile_s,
                "memory": p.memory,
                "notes": p.notes,
                **{k: v for k, v in b.items() if k != "limit_times"},
            }
            if p.impl in timed["errors"] or not ts:
                row["error"] = timed["errors"].get(p.impl, "no timed run")
                rows.append(row)
                continue
            med = _median(ts)
            row.update(
                median_s=med,
                min_s=min(ts),
                max_s=max(ts),
                rounds=len(ts),
                calls_per_sample=timed["number"].get(p.impl, 1),
            )
            row["gbps"] = b["bytes_min"] / med / 1e9 if mode != "model_step" else None
            row["gflops"] = b["flops"] / med / 1e9 if mode == "model_step" else None
            row["frac_limit"] = b["limit_s"] / med
            row.update(errs.get(p.impl, {}))
            rows.append(row)
        for impl, why in unavailable.items():
            rows.append({**case, "impl": impl, "unavailable": why})
        # The loop variable and the error check would keep the last case's arrays alive.
        p = check = None  # type: ignore[assignment]  # only to drop the references
        del prepared
        gc.collect()
        _progress(shape, dtype, mode, rows)
    del inputs, ref, model_ref
    gc.collect()
    jax.clear_caches()
    for r in rows:
        r["case_setup_s"] = setup_s
    return rows


def _errors(out: Any, mode: str, ref: Any, model_ref: Any) -> dict[str, float | None]:
    if mode == "forward":
        return {"loss_err": ref.loss_error(out), "grad_err": None}
    value, grads = out
    if mode == "value_and_grad":
        return {"loss_err": ref.sum_error(value), "grad_err": ref.grad_error(grads)}
    if model_ref is None:
        return {}
    return {"loss_err": model_ref.sum_error(value), "grad_err": model_ref.grad_error(*grads)}


def _progress(shape: Any, dtype: str, mode: str, rows: list) -> None:
    parts = []
    for r in rows:
        if r["mode"] != mode:
            continue
        if "median_s" in r:
            parts.append(f"{r['impl']} {r['median_s'] * 1e3:.1f}ms")
        else:
            parts.append(f"{r['impl']} -")
    print(f"  {shape.label:>12} {dtype:<8} {mode:<14} " + "  ".join(parts), flush=True)


# --- the linear cross-entropy section, written by another module ----------------------------


def run_linear_ce(quick: bool) -> dict[str, Any] | None:
    """Rows from `bench.linear_ce.run(quick)` when that module exists; errors are recorded."""
    if importlib.util.find_spec("bench.linear_ce") is None:
        return None
    try:
        from bench import linear_ce  # type: ignore[attr-defined]  # optional, another author's

        return {"rows": list(linear_ce.run(quick))}
    except Exception as e:
        traceback.print_exc()
        return {"rows": [], "error": f"{type(e).__name__}: {e}"}


# --- environment ------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import jax

    from bench import impls

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cores": impls.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "allocator": loaded_allocator(),
        "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
    }
    env["jaxloss_source"] = _git_state("jaxloss")
    for mod in ("jaxlib", "optax", "numpy", "torch"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env


def _git_state(path: str) -> str | None:
    """The last commit touching `path`, and whether its working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "log", "-1", "--format=%h %cI", "--", path],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", path],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" + uncommitted changes" if dirty else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --- command line ---------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the reduced set (CI, device check)")
    ap.add_argument("--out", default="bench/out", help="output folder (default bench/out)")
    ap.add_argument(
        "--allocator",
        choices=("default", "tcmalloc", "both"),
        default="default",
        help="host allocator; tcmalloc re-executes with LD_PRELOAD; both runs the "
        "suite under each into OUT/default and OUT/tcmalloc and compares them",
    )
    ap.add_argument("--shapes", nargs="+", help=f"from bench/shapes.py: {list(shape_table.SHAPES)}")
    ap.add_argument("--dtypes", nargs="+", choices=shape_table.DTYPES)
    ap.add_argument("--modes", nargs="+", choices=shape_table.MODES)
    ap.add_argument("--impls", nargs="+", help="subset of jaxloss optax autodiff explicit torch")
    ap.add_argument("--min-rounds", type=int, help="timed rounds at least (default 3)")
    ap.add_argument("--max-rounds", type=int, default=20)
    ap.add_argument(
        "--budget",
        type=float,
        help="seconds of timed rounds per case before "
        "stopping after min-rounds (default 1 quick, 6 full)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-errors", action="store_true", help="skip the float64 comparisons")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--small-limits",
        action="store_true",
        help="measure the machine limits on "
        "cache-sized arrays (smoke tests only: the figures are then not the limits)",
    )
    ap.add_argument(
        "--model-step-all",
        action="store_true",
        help="on CPU, run the model step above 4096x32000 logits too (minutes per case)",
    )
    ap.add_argument("--no-linear-ce", action="store_true", help="skip bench/linear_ce.py")
    args = ap.parse_args(argv)
    from bench.impls import IMPLS

    args.shapes = args.shapes or list(shape_table.QUICK if args.quick else shape_table.FULL)
    shape_table.get(args.shapes)  # fail early on an unknown name
    args.dtypes = args.dtypes or list(shape_table.DTYPES)
    args.modes = args.modes or list(shape_table.MODES)
    args.impls = args.impls or list(IMPLS)
    bad = [i for i in args.impls if i not in IMPLS]
    if bad:
        ap.error(f"unknown implementation(s) {bad}; known: {list(IMPLS)}")
    if args.min_rounds is None:
        args.min_rounds = 3
    if args.budget is None:
        args.budget = 1.0 if args.quick else 6.0
    return args


def run_both(argv: list[str], out: Path) -> int:
    """Run the suite once per allocator in child processes, then compare them."""
    from bench import report

    rest = _drop_option(_drop_option(argv, "--allocator"), "--out")
    code = 0
    for kind in ("default", "tcmalloc"):
        cmd = [sys.executable, "-m", "bench", *rest, "--allocator", kind, "--out", str(out / kind)]
        print("$", " ".join(cmd), flush=True)
        code = max(code, subprocess.call(cmd))
    report.write_allocator_comparison(out)
    return code


def _drop_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    # PyTorch's OpenMP threads spin for a while after each parallel region; on a 2-core machine
    # they took the cores from the implementation timed next (jaxloss's 1024×1000 forward read
    # 1.9× Optax's with them spinning, 1.3× without). Set before torch is imported; an explicit
    # setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = Path(args.out)
    if args.allocator == "both":
        return run_both(argv, out)
    ensure_allocator(args.allocator, argv)
    out.mkdir(parents=True, exist_ok=True)

    from bench import impls, limits, report

    started = time.time()
    load_before = _load()
    env = environment()
    print(
        f"backend {env['backend']} ({env['device_kind']}), {env['cores']} cores, "
        f"allocator {env['allocator']}, load {load_before}",
        flush=True,
    )
    lim_runs = [limits.measure(args.quick, args.small_limits)]
    lim = limits.combine(lim_runs)
    print(
        f"limits: copy {lim['copy_gbps']:.1f} GB/s, fresh-output copy "
        f"{lim['fresh_copy_gbps']:.1f} GB/s, exp {lim['exp_per_s']['float32'] / 1e9:.2f} G/s",
        flush=True,
    )

    rows: list[dict[str, Any]] = []

    def write(linear: dict | None, final: bool) -> str:
        # Fractions of the limit use the best limits measured so far in this run.
        limits.apply(rows, lim)
        results = {
            "suite": "quick"
            if args.quick
            else ("full" if list(args.shapes) == list(shape_table.FULL) else "custom"),
            "complete": final,
            "argv": argv,
            "environment": env,
            "load_before": load_before,
            "load_after": _load(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "wall_s": time.time() - started,
            "limits": lim,
            "impl_descriptions": impls.DESCRIPTIONS,
            "rows": rows,
            "linear_ce": linear,
        }
        results["targets"] = report.targets(rows)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        table = report.markdown(results)
        (out / "table.md").write_text(table)
        if final and not args.no_plots:
            report.plots(results, out)
        return table

    for shape in shape_table.get(args.shapes):
        for dtype in args.dtypes:
            rows.extend(run_shape(shape, dtype, args, lim))
        write(None, final=False)  # a run cut short still leaves its results

    linear = None if args.no_linear_ce else run_linear_ce(args.quick)
    lim_runs.append(limits.measure(args.quick, args.small_limits))
    lim = limits.combine(lim_runs)
    table = write(linear, final=True)
    print(table)
    print(
        f"wrote {out / 'results.json'}, {out / 'table.md'}" + ("" if args.no_plots else ", plots"),
        flush=True,
    )
    failed = any("error" in r for r in rows) or bool(linear and linear.get("error"))
    return 1 if failed else 0
