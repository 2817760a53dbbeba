"""`python -m bench --target tpu-v5e|tpu-v6e|h100`: compile every case for an accelerator this
machine does not have ("deviceless AOT", through libtpu or the CUDA plugin and `ptxas`), and
read what the compiler says it costs. Nothing runs: the arguments are `ShapeDtypeStruct`s.

Per program: bytes accessed (TPU: the compiler's cost analysis; GPU, which has none ahead of
time: our count from the optimised HLO, `bench.hlo_passes.kernels`); the TPU compiler's time
estimate, or on GPU the bytes over the memory bandwidth (a floor); scratch memory and kernels.
Loop bodies are counted once, not per trip: for `linear_cross_entropy` only memory means
anything. It needs `.venv-aot` (`make aot-env`) and re-executes itself with its Python. Results
are cached on disk per (target, lowered program, versions); `--no-cache` compiles everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench import shapes as shape_table

ROOT = Path(__file__).resolve().parents[1]
AOT_PYTHON = ROOT / ".venv-aot" / "bin" / "python"
TARGET_DIR = Path(__file__).resolve().parent / "targets"
_REEXEC_FLAG = "JAXLOSS_AOT_REEXEC"


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    platform: str  # "tpu" or "cuda"
    description: str
    topology: str = ""  # TPU topology name
    accelerator_type: str = ""  # TPU_ACCELERATOR_TYPE libtpu wants without a TPU
    target_config: str = ""  # GPU: GpuTargetConfigProto text file under bench/targets/


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("tpu-v5e", "tpu", "TPU v5e (v5 lite)", "v5e:2x2", "v5litepod-4"),
        Target("tpu-v6e", "tpu", "TPU v6e (Trillium)", "v6e:2x2", "v6e-4"),
        Target("h100", "cuda", "NVIDIA H100 SXM 80GB", target_config="h100_sxm.txtpb"),
    )
}

MODES = ("forward", "value_and_grad")


# --- the functions and their references -------------------------------------------------------


class Recipe(NamedTuple):
    """A public jaxloss function: its arguments (by kind), the labels of the implementations it
    is compared with (the first is *the* reference, see `_load`), and the options its call
    needs (its reference is written with the same values)."""

    args: tuple[str, ...]
    refs: tuple[str, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()


def _softmax_entropy(x: Any) -> Any:
    import jax
    import jax.numpy as jnp

    ls = jax.nn.log_softmax(x, axis=-1)
    return -jnp.sum(jnp.exp(ls) * ls, axis=-1)


def _softmax_focal(x: Any, y: Any) -> Any:
    import jax
    import jax.numpy as jnp

    lp = jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), y[:, None], axis=-1)[:, 0]
    return -((1 - jnp.exp(lp)) ** 2) * lp


def _load(label: str) -> Callable:
    """The reference function a label names: `optax.<name>`, `autodiff`, `explicit`, or one
    of the formulas below."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.scipy.special import logsumexp, xlogy

    from bench import impls

    if label.startswith("optax."):
        return getattr(optax.losses, label.removeprefix("optax."))
    return {
        "autodiff": impls.autodiff_loss,
        "explicit": impls.explicit_loss,
        "jax.scipy.special.logsumexp": lambda x: logsumexp(x, axis=-1),
        "jax.nn.log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
        "jax.nn.softmax": lambda x: jax.nn.softmax(x, axis=-1),
        "formula: -sum(xlogy(p, p))": lambda p: -jnp.sum(xlogy(p, p), axis=-1),
        "formula: -sum(softmax * log_softmax)": _softmax_entropy,
        "formula: -take_along_axis(log_probs, y)": lambda lp, y: (
            -jnp.take_along_axis(lp, y[:, None], axis=-1)[:, 0]
        ),
        "formula: -(1 - p_y)^2 log p_y": _softmax_focal,
        "formula: 0.9 t + 0.1 / K": lambda t: 0.9 * t + 0.1 / t.shape[-1],
        "formula: optax.kl_divergence(log_softmax(s), softmax(t))": lambda s, t: (
            optax.losses.kl_divergence(jax.nn.log_softmax(s, -1), jax.nn.softmax(t, -1))
        ),
        "formula: mean(argmax(x) == y)": lambda x, y: jnp.mean(
            (jnp.argmax(x, -1) == y).astype(jnp.float32)
        ),
    }[label]


_CE = ("optax.softmax_cross_entropy_with_integer_labels", "autodiff", "explicit")
RECIPES: dict[str, Recipe] = {
    "softmax_cross_entropy_with_integer_labels": Recipe(("logits", "labels"), _CE),
    "cross_entropy": Recipe(("logits", "labels"), _CE),
    "softmax_cross_entropy": Recipe(("logits", "probs"), ("optax.softmax_cross_entropy",)),
    "kl_divergence": Recipe(("log_probs", "probs"), ("optax.kl_divergence",)),
    "kl_divergence_with_log_targets": Recipe(
        ("log_probs", "log_probs"), ("optax.kl_divergence_with_log_targets",)
    ),
    "logsumexp": Recipe(("logits",), ("jax.scipy.special.logsumexp",)),
    "log_softmax": Recipe(("logits",), ("jax.nn.log_softmax",)),
    "softmax": Recipe(("logits",), ("jax.nn.softmax",)),
    "entropy": Recipe(("probs",), ("formula: -sum(xlogy(p, p))",)),
    "softmax_entropy": Recipe(("logits",), ("formula: -sum(softmax * log_softmax)",)),
    "nll_loss": Recipe(("log_probs", "labels"), ("formula: -take_along_axis(log_probs, y)",)),
    "sigmoid_binary_cross_entropy": Recipe(
        ("logits", "probs"), ("optax.sigmoid_binary_cross_entropy",)
    ),
    "binary_cross_entropy_with_logits": Recipe(
        ("logits", "probs"), ("optax.sigmoid_binary_cross_entropy",)
    ),
    "sigmoid_focal_loss": Recipe(("logits", "probs"), ("optax.sigmoid_focal_loss",)),
    "softmax_focal_loss": Recipe(("logits", "labels"), ("formula: -(1 - p_y)^2 log p_y",)),
    "poly_loss_cross_entropy": Recipe(("logits", "probs"), ("optax.poly_loss_cross_entropy",)),
    "smooth_labels": Recipe(("probs",), ("formula: 0.9 t + 0.1 / K",), (("alpha", 0.1),)),
    "softmax_kl_divergence": Recipe(
        ("logits", "logits"), ("formula: optax.kl_divergence(log_softmax(s), softmax(t))",)
    ),
    "accuracy": Recipe(("logits", "labels"), ("formula: mean(argmax(x) == y)",)),
}
#: Public functions that take no [.., K] array, so have nothing to compile against a reference
#: at a logits shape: perplexity maps a (sum, count) pair of scalars to a scalar.
NOT_ON_LOGITS = ("perplexity",)
#: Compared on memory only, against the unfused formula, at the shapes' model-step hidden sizes.
LINEAR = "linear_cross_entropy"


def public_functions() -> list[str]:
    import jaxloss

    return [f for f in jaxloss.__all__ if f not in NOT_ON_LOGITS]


# --- compiling ----------------------------------------------------------------------------------


def setup_environment(target: Target) -> None:
    """Environment variables the compilers need; set before JAX is imported."""
    # No accelerator is used: the CPU backend is the only one JAX initialises (the CUDA plugin
    # would otherwise look for a driver and fail), the targets are reached through topologies.
    os.environ["JAX_PLATFORMS"] = "cpu"
    if target.platform == "tpu":
        os.environ["TPU_ACCELERATOR_TYPE"] = target.accelerator_type
        # Without it libtpu logs an error looking for the (absent) TPU workers' addresses.
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        # libtpu takes a machine-wide lock (/tmp/libtpu_lockfile) to guard a TPU no process
        # opens here: without this, two compiling processes (a benchmark and a test) collide.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def ensure_aot_python(argv: list[str]) -> None:
    """Re-execute with the AOT venv's Python when this one lacks the compilers."""
    missing = [m for m in ("libtpu", "jax_cuda12_plugin") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if AOT_PYTHON.exists() and not os.environ.get(_REEXEC_FLAG):
        env = dict(os.environ, **{_REEXEC_FLAG: "1"})
        os.execve(str(AOT_PYTHON), [str(AOT_PYTHON), "-m", "bench", *argv], env)
    raise SystemExit(
        f"{sys.executable} lacks {missing}: run `make aot-env`, then `make bench-aot` or "
        f"`.venv-aot/bin/python -m bench --target ...`"
    )


def device_for(target: Target) -> Any:
    from jax.experimental import topologies

    if target.platform == "tpu":
        topo = topologies.get_topology_desc(topology_name=target.topology, platform="tpu")
    else:
        text = (TARGET_DIR / target.target_config).read_text()
        topo = topologies.get_topology_desc(platform="cuda", target_config=text, topology="1x1x1")
    return topo.devices[0]


class Compiler:
    """Compiles (function, arguments) for one target; memoised in-process and on disk."""

    def __init__(self, target: Target, cache_dir: Path | None) -> None:
        self.target, self.device, self.cache_dir = target, device_for(target), cache_dir
        self.versions: dict[str, str | None] = {}
        for dist in ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "nvidia-cuda-nvcc-cu12"):
            try:
                self.versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                self.versions[dist] = None
        self.versions["optax"] = importlib.metadata.version("optax")
        # A GPU's memory bandwidth in bytes/s, from its target description.
        config = (TARGET_DIR / target.target_config).read_text() if target.target_config else ""
        found = [ln.split(":")[1] for ln in config.splitlines() if "memory_bandwidth" in ln]
        self.bandwidth = float(found[0]) if found else None
        self.memo: dict[tuple, dict[str, Any]] = {}
        self.compiled = self.cached = 0
        self.compile_s = 0.0  # lowering and compiling, each program once, in this run
        self.compile_s_all = 0.0  # the same including cached programs' first compile

    def sds(self, shape: tuple[int, ...], dtype: Any) -> Any:
        import jax

        return jax.ShapeDtypeStruct(
            shape, dtype, sharding=jax.sharding.SingleDeviceSharding(self.device)
        )

    def measure(self, key: tuple, fn: Callable, args: tuple) -> dict[str, Any]:
        if key in self.memo:
            return self.memo[key]
        import jax

        t0 = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        lower_s = time.perf_counter() - t0
        program = lowered.as_text()
        digest = hashlib.sha256(
            json.dumps([self.target.name, self.versions]).encode() + program.encode()
        ).hexdigest()[:24]
        path = self.cache_dir / f"{digest}.json" if self.cache_dir else None
        if path is not None and path.is_file():
            out = json.loads(path.read_text())
            out["cached"] = True
            self.cached += 1
        else:
            t1 = time.perf_counter()
            compiled = lowered.compile()
            out = {"lower_s": lower_s, "compile_s": time.perf_counter() - t1, "cached": False}
            self.compile_s += lower_s + out["compile_s"]
            out.update(self._facts(compiled))
            self.compiled += 1
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(out))
        self.compile_s_all += out["lower_s"] + out["compile_s"]
        self.memo[key] = out
        return out

    def _facts(self, compiled: Any) -> dict[str, Any]:
        from bench import hlo_passes

        own = hlo_passes.kernel_summary(compiled.as_text())
        out: dict[str, Any] = {"kernels": own["kernels"], "bytes_counted": own["bytes_accessed"]}
        cost = compiled.cost_analysis()
        if isinstance(cost, list | tuple):  # older jax: one dict per module
            cost = cost[0] if cost else None
        names = ("bytes accessed", "optimal_seconds", "flops", "transcendentals")
        for key, name in zip(
            ("bytes_xla", "est_s", "flops", "transcendentals"), names, strict=True
        ):
            if cost:
                out[key] = _num(cost.get(name))
        # TPU: the compiler's own figure. GPU (no cost analysis ahead of time): our count.
        xla = out.get("bytes_xla")
        out["bytes"] = xla if xla is not None else own["bytes_accessed"]
        if self.bandwidth and out.get("est_s") is None:
            out["floor_s"] = out["bytes"] / self.bandwidth
        m = compiled.memory_analysis()
        for k in ("temp", "argument", "output", "alias", "generated_code"):
            out[f"{k}_bytes"] = int(getattr(m, f"{k}_size_in_bytes", 0) or 0) if m else None
        return out


def _num(v: Any) -> float | None:
    return None if v is None or v < 0 else float(v)


def program(fn: Callable, mode: str, argnums: int | tuple[int, ...] = 0) -> Callable:
    """The function compiled for `mode`: the loss, or value_and_grad of its float32 sum (the
    gradient w.r.t. the first argument)."""
    import jax
    import jax.numpy as jnp

    if mode == "forward":
        return fn
    return jax.value_and_grad(lambda *a: jnp.sum(fn(*a), dtype=jnp.float32), argnums=argnums)


# --- the cases ----------------------------------------------------------------------------------


def _cases(name: str, alternatives: bool) -> list[tuple[str, str, Callable[[], Callable]]]:
    """(label, role, loader) of jaxloss's `name` and what it is compared with."""
    import jaxloss

    recipe = RECIPES[name]
    mine = functools.partial(getattr(jaxloss, name), **dict(recipe.kwargs))
    refs = recipe.refs if alternatives else recipe.refs[:1]
    roles = ["reference"] + ["alternative"] * (len(refs) - 1)
    cases = [("jaxloss", "jaxloss", lambda: mine)]
    return cases + [(r, role, lambda r=r: _load(r)) for r, role in zip(refs, roles, strict=True)]


def run(
    compiler: Compiler,
    shapes: list[shape_table.Shape],
    dtypes: list[str],
    modes: list[str],
    functions: list[str],
    alternatives: bool,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    import jax.numpy as jnp

    from bench import impls

    rows: list[dict[str, Any]] = []
    for shape, dtype, mode, name in (
        (s, d, m, n) for s in shapes for d in dtypes for m in modes for n in functions
    ):
        dt = jnp.dtype(dtype)
        big = compiler.sds((shape.batch, shape.classes), dt)
        small = compiler.sds((shape.batch,), jnp.int32)
        base = {"shape": shape.name, "batch": shape.batch, "classes": shape.classes}
        base.update(dtype=dtype, logits_bytes=shape.elements * dt.itemsize)
        base.update(mode=mode, function=name)
        if name == LINEAR:
            rows += _linear_rows(compiler, shape, dt, base, log)
            continue
        if name not in RECIPES:
            err = "no recipe in bench/aot.py: add one to RECIPES"
            rows.append({**base, "error": err, "impl": "jaxloss", "role": "jaxloss"})
            continue
        args = tuple(small if a == "labels" else big for a in RECIPES[name].args)
        cases = _cases(name, alternatives)
        for label, role, load in cases:
            row = {**base, "impl": label, "role": role}
            key = (name if role == "jaxloss" else label, shape.name, dtype, mode)
            try:
                if label == "explicit" and mode == "value_and_grad":
                    fn = impls.explicit_value_and_grad
                else:
                    fn = program(load(), mode)
                row.update(compiler.measure(key, fn, args))
                row["bytes_per_B"] = row["bytes"] / row["logits_bytes"]
            except Exception as e:  # one broken function must not stop the table
                row["error"] = f"{type(e).__name__}: {e}"[:500]
            rows.append(row)
        log(_progress(rows[-len(cases) :]))
    return rows


def _linear_rows(
    compiler: Compiler, shape: shape_table.Shape, dt: Any, base: dict, log: Callable
) -> list[dict[str, Any]]:
    import jax.numpy as jnp

    import jaxloss

    h = compiler.sds((shape.batch, shape.hidden), dt)
    w = compiler.sds((shape.hidden, shape.classes), dt)
    y = compiler.sds((shape.batch,), jnp.int32)

    def unfused(h: Any, w: Any, y: Any) -> Any:
        return jaxloss.cross_entropy(h @ w, y)

    rows = []
    for label, fn, role in (
        ("jaxloss", jaxloss.linear_cross_entropy, "jaxloss"),
        ("unfused", unfused, "reference"),
    ):
        row = {**base, "impl": label, "role": role, "hidden": shape.hidden, "memory_only": True}
        key = (LINEAR, label, shape.name, str(dt), base["mode"])
        try:  # the model step: gradients w.r.t. hidden and weight, as in training
            row.update(compiler.measure(key, program(fn, base["mode"], (0, 1)), (h, w, y)))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        rows.append(row)
    log(_progress(rows))
    return rows


def _progress(rows: list[dict[str, Any]]) -> str:
    r = rows[0]
    parts = [
        f"{x['impl']}: ERROR"
        if "error" in x
        else f"{x['impl']} {x['bytes'] / r['logits_bytes']:.2f}B {_mib(x['temp_bytes'])}MiB"
        for x in rows
    ]
    return f"{r['shape']} {r['dtype']} {r['mode']} {r['function']}: " + "; ".join(parts)


# --- report -------------------------------------------------------------------------------------


def _mib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**20:.1f}"


def _us(s: float | None) -> str:
    return "–" if s is None else f"{s * 1e6:.0f}"


#: Between the summary and the per-function tables (docs/_ext/bench_hook.py folds the latter).
DETAILS_MARKER = "<!-- aot-details -->"
SUMMARY_SHAPES = ("lm-32k", "vocab-128k")


def summary(rows: list[dict[str, Any]], time_col: str, gpu: bool) -> list[str]:
    """jaxloss / its reference at the language-model shapes, one line per function and case."""
    shapes = [s for s in SUMMARY_SHAPES if any(r["shape"] == s for r in rows)]
    if not shapes:
        return []
    out = [
        f"## Summary: {' and '.join(shapes)}, jaxloss / reference",
        "",
        f"| function | shape | dtype | mode | bytes/B | {time_col} | temp MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    cases: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["shape"] in shapes and r.get("role") in ("jaxloss", "reference"):
            key = (r["function"], r["shape"], r["dtype"], r["mode"])
            cases.setdefault(key, {})[r["role"]] = r
    for (name, shape, dtype, mode), pair in cases.items():
        mine, ref = pair.get("jaxloss"), pair.get("reference")
        if mine is None or ref is None or "error" in mine or "error" in ref:
            err = (mine or {}).get("error") or (ref or {}).get("error") or "missing"
            out.append(f"| `{name}` | {shape} | {dtype} | {mode} | error: {err[:80]} | | |")
            continue
        t = "floor_s" if gpu else "est_s"
        if mine.get("memory_only"):
            cells = ["–", "–"]
        else:
            cells = [
                f"{mine['bytes_per_B']:.2f} / {ref['bytes_per_B']:.2f}",
                f"{_us(mine.get(t))} / {_us(ref.get(t))}",
            ]
        cells.append(f"{_mib(mine['temp_bytes'])} / {_mib(ref['temp_bytes'])}")
        out.append(f"| `{name}` | {shape} | {dtype} | {mode} | " + " | ".join(cells) + " |")
    return [*out, ""]


def markdown(results: dict[str, Any]) -> str:
    t = results["target"]
    v = results["versions"]
    gpu = t["platform"] == "cuda"
    compiler = (
        f"jax-cuda12-plugin {v.get('jax-cuda12-plugin')}, ptxas from nvidia-cuda-nvcc-cu12 "
        f"{v.get('nvidia-cuda-nvcc-cu12')}"
        if gpu
        else f"libtpu {v.get('libtpu')}"
    )
    lines = [
        f"# {t['description']} ({t['name']}): compiled, not run",
        "",
        f"jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, {compiler}, optax {v.get('optax')}; "
        f"device kind `{results['device_kind']}`; jaxloss at `{results.get('git') or '?'}`; "
        f"{results['started']}. Command: `{results['command']}`. "
        f"{results['compiled'] + results['cached']} programs, lowered and compiled in "
        f"{results.get('compile_s_all', results['compile_s']):.0f} s"
        + (
            f" ({results['cached']} taken from the cache: compiled by an earlier run, or the "
            f"same program as another row; this run {results['compile_s']:.0f} s)"
            if results["cached"]
            else ""
        )
        + f", {results['wall_s']:.0f} s in all (shared 2-core CPU).",
        "",
        "B is the size of the logits in bytes. **bytes** is "
        + (
            "our count from the optimised HLO (operands and outputs of each kernel; XLA:GPU "
            "gives no cost analysis ahead of time); **floor µs** is those bytes over the "
            "GPU's memory bandwidth, a lower bound, not an estimate."
            if gpu
            else "the TPU compiler's `bytes accessed`, which counts every memory space: an "
            "array small enough for on-chip memory may be copied there and re-read, and both "
            "count (at 512×32000 a logsumexp shows 6·B; at 4096×32000, 2·B). **est. µs** is "
            "the compiler's `optimal_seconds`."
        )
        + " **temp** is the compiled program's scratch memory; **kernels** the top-level "
        "kernels in the optimised HLO. value_and_grad is the float32 sum of the loss and its "
        "gradient w.r.t. the first argument. Loop bodies are counted once, so for "
        "`linear_cross_entropy` (against `cross_entropy(h @ w, y)`, gradients w.r.t. `h` and "
        "`w`, at the shapes' model-step hidden size) only memory is shown.",
        "",
    ]
    time_col = "floor µs" if gpu else "est. µs"
    rows = results["rows"]
    lines += summary(rows, time_col, gpu)
    lines += [DETAILS_MARKER, ""]
    functions = list(dict.fromkeys(r["function"] for r in rows))
    for name in functions:
        lines += [f"## `{name}`", ""]
        mine = [r for r in rows if r["function"] == name]
        refs = list(dict.fromkeys(r["impl"] for r in mine if r["role"] != "jaxloss"))
        if refs:
            lines += ["Compared with: " + ", ".join(f"`{x}`" for x in refs) + ".", ""]
        if name == LINEAR:
            lines += [
                "| shape (N×D×V) | dtype | mode | impl | temp MiB | argument + output MiB "
                "| compile s |",
                "|---|---|---|---|---|---|---|",
            ]
        else:
            lines += [
                f"| shape | dtype | mode | impl | bytes/B | bytes MiB | {time_col} | temp MiB "
                "| kernels | compile s |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
        for r in mine:
            label = f"{r['batch']}x{r['classes']}"
            if name == LINEAR:
                label = f"{r['batch']}x{r.get('hidden')}x{r['classes']}"
            head = f"| {label} | {r['dtype']} | {r['mode']} | {r['impl']} |"
            if "error" in r:
                lines.append(head + f" error: {r['error'][:120].replace('|', '/')} |")
                continue
            comp = f"{r['lower_s'] + r['compile_s']:.1f}"
            if name == LINEAR:
                io = (r.get("argument_bytes") or 0) + (r.get("output_bytes") or 0)
                lines.append(head + f" {_mib(r['temp_bytes'])} | {_mib(io)} | {comp} |")
            else:
                when = r.get("est_s") if not gpu else r.get("floor_s")
                lines.append(
                    head + f" {r['bytes_per_B']:.2f} | {_mib(r['bytes'])} | {_us(when)} | "
                    f"{_mib(r['temp_bytes'])} | {r['kernels']} | {comp} |"
                )
        lines.append("")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench --target", description=__doc__)
    ap.add_argument("--target", required=True, choices=list(TARGETS))
    ap.add_argument("--shapes", nargs="+", default=None, help="default: the full set")
    ap.add_argument("--dtypes", nargs="+", default=list(shape_table.DTYPES))
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--functions", nargs="+", default=None, help="default: jaxloss.__all__")
    ap.add_argument("--no-alternatives", action="store_true", help="the reference only")
    ap.add_argument("--out", default="bench/out/aot", help="writes <target>.json, <target>.md")
    ap.add_argument("--cache", default="bench/out/aot/cache", help="on-disk result cache")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render", action="store_true", help="<target>.md from <target>.json")
    args = ap.parse_args(argv)
    args.shapes = args.shapes or list(shape_table.FULL)
    shape_table.get(args.shapes)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.render:
        out = Path(args.out) / f"{args.target}.json"
        out.with_suffix(".md").write_text(markdown(json.loads(out.read_text())))
        return 0
    ensure_aot_python(argv)
    target = TARGETS[args.target]
    setup_environment(target)
    started = time.time()
    from bench.runner import git_state

    compiler = Compiler(target, None if args.no_cache else Path(args.cache) / target.name)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    rows = run(
        compiler, shape_table.get(args.shapes), args.dtypes, args.modes,
        args.functions or public_functions(), not args.no_alternatives, log,
    )  # fmt: skip
    results = {
        "target": dataclasses.asdict(target),
        "device_kind": getattr(compiler.device, "device_kind", "?"),
        "versions": compiler.versions,
        "python": platform.python_version(),
        "git": git_state(str(ROOT / "jaxloss")),
        "command": "python -m bench " + " ".join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "wall_s": time.time() - started,
        **{k: getattr(compiler, k) for k in ("compiled", "cached", "compile_s", "compile_s_all")},
        "rows": rows,
    }
    out = Path(args.out) / f"{target.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results))
    print(f"{target.name}: {len(rows)} rows, {compiler.compiled} compiled, {compiler.cached} "
          f"cached, {results['wall_s']:.0f} s; wrote {out} and its .md", flush=True)  # fmt: skip
    # A reference that does not compile is a finding, not a failure of the run (Optax's
    # sigmoid_focal_loss value_and_grad at 4096×128256 f32 needs 21.5 GB of scratch, more than a
    # TPU v5e's 16 GB); a jaxloss row that does not compile is.
    return 1 if any("error" in r and r.get("role") == "jaxloss" for r in rows) else 0
