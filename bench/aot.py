"""`python -m bench --target tpu-v5e|tpu-v6e|h100`: compile every case for an accelerator this
machine does not have, and read what the compiler says it costs.

XLA compiles for TPUs (through libtpu) and NVIDIA GPUs (through the CUDA plugin and `ptxas`)
without the device ("deviceless AOT"). Nothing runs: the arguments are `ShapeDtypeStruct`s, so
even the largest case allocates nothing. Per compiled program this records

- bytes accessed: on TPU the compiler's own cost analysis; on GPU, where `cost_analysis()` gives
  nothing ahead of time, our count from the optimised HLO (`bench.hlo_passes.kernels`: operands
  and output of every kernel, gathers counting what they gather);
- on TPU the compiler's estimated time (`optimal_seconds`); on GPU the bytes over the target's
  memory bandwidth (a floor, not an estimate of the kernels);
- scratch memory (`memory_analysis().temp_size_in_bytes`) and the number of kernels.

Loop bodies (`scan`, `while`) are counted once, not per trip, by both counts: for
`linear_cross_entropy`, which loops over chunks, only the memory figures mean anything.

It needs the AOT environment (`make aot-env`, `.venv-aot`); started from another Python it
re-executes itself with `.venv-aot/bin/python`. Results are cached on disk per (target, compiled
program), keyed by a hash of the lowered program and the versions, so a rerun compiles only what
changed (`--no-cache` to compile everything).
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
from typing import Any

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
        Target("tpu-v5p", "tpu", "TPU v5p", "v5p:2x2x1", "v5p-8"),
        Target("tpu-v4", "tpu", "TPU v4", "v4:2x2x1", "v4-8"),
        Target("h100", "cuda", "NVIDIA H100 SXM 80GB", target_config="h100_sxm.txtpb"),
    )
}

MODES = ("forward", "value_and_grad")


# --- the functions and their references -------------------------------------------------------

#: How each argument kind is shaped: logits-like (batch, classes) or per-example (batch,).
ARG_KINDS = {"logits": "x", "probs": "x", "log_probs": "x", "labels": "y"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A public jaxloss function: its arguments (by kind) and the implementations it is
    compared with, as (label, loader) pairs; the first is *the* reference."""

    args: tuple[str, ...]
    refs: tuple[tuple[str, Callable[[], Callable]], ...]
    #: Options the jaxloss call needs (its reference is written with the same values).
    kwargs: tuple[tuple[str, Any], ...] = ()


def _optax(name: str) -> Callable[[], Callable]:
    def load() -> Callable:
        import optax

        return getattr(optax.losses, name)

    return load


def _jax_ref(name: str) -> Callable[[], Callable]:
    def load() -> Callable:
        import jax
        import jax.numpy as jnp
        from jax.scipy.special import logsumexp, xlogy

        fns = {
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
            "formula: optax.kl_divergence(log_softmax(s), softmax(t))": lambda s, t: _optax(
                "kl_divergence"
            )()(jax.nn.log_softmax(s, -1), jax.nn.softmax(t, -1)),
            "formula: mean(argmax(x) == y)": lambda x, y: jnp.mean(
                (jnp.argmax(x, -1) == y).astype(jnp.float32)
            ),
        }
        return fns[name]

    return load


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


def _impl(name: str) -> Callable[[], Callable]:
    def load() -> Callable:
        from bench import impls

        return {"autodiff": impls.autodiff_loss, "explicit": impls.explicit_loss}[name]

    return load


def _ref(label: str) -> tuple[str, Callable[[], Callable]]:
    if label.startswith("optax."):
        return label, _optax(label.removeprefix("optax."))
    if label in ("autodiff", "explicit"):
        return label, _impl(label)
    return label, _jax_ref(label)


_OPTAX_INT = "optax.softmax_cross_entropy_with_integer_labels"
RECIPES: dict[str, Recipe] = {
    "softmax_cross_entropy_with_integer_labels": Recipe(
        ("logits", "labels"), (_ref(_OPTAX_INT), _ref("autodiff"), _ref("explicit"))
    ),
    "cross_entropy": Recipe(
        ("logits", "labels"), (_ref(_OPTAX_INT), _ref("autodiff"), _ref("explicit"))
    ),
    "softmax_cross_entropy": Recipe(("logits", "probs"), (_ref("optax.softmax_cross_entropy"),)),
    "kl_divergence": Recipe(("log_probs", "probs"), (_ref("optax.kl_divergence"),)),
    "kl_divergence_with_log_targets": Recipe(
        ("log_probs", "log_probs"), (_ref("optax.kl_divergence_with_log_targets"),)
    ),
    "logsumexp": Recipe(("logits",), (_ref("jax.scipy.special.logsumexp"),)),
    "log_softmax": Recipe(("logits",), (_ref("jax.nn.log_softmax"),)),
    "softmax": Recipe(("logits",), (_ref("jax.nn.softmax"),)),
    "entropy": Recipe(("probs",), (_ref("formula: -sum(xlogy(p, p))"),)),
    "softmax_entropy": Recipe(("logits",), (_ref("formula: -sum(softmax * log_softmax)"),)),
    "nll_loss": Recipe(("log_probs", "labels"), (_ref("formula: -take_along_axis(log_probs, y)"),)),
    "sigmoid_binary_cross_entropy": Recipe(
        ("logits", "probs"), (_ref("optax.sigmoid_binary_cross_entropy"),)
    ),
    "binary_cross_entropy_with_logits": Recipe(
        ("logits", "probs"), (_ref("optax.sigmoid_binary_cross_entropy"),)
    ),
    "sigmoid_focal_loss": Recipe(("logits", "probs"), (_ref("optax.sigmoid_focal_loss"),)),
    "softmax_focal_loss": Recipe(("logits", "labels"), (_ref("formula: -(1 - p_y)^2 log p_y"),)),
    "poly_loss_cross_entropy": Recipe(
        ("logits", "probs"), (_ref("optax.poly_loss_cross_entropy"),)
    ),
    "smooth_labels": Recipe(
        ("probs",), (_ref("formula: 0.9 t + 0.1 / K"),), kwargs=(("alpha", 0.1),)
    ),
    "softmax_kl_divergence": Recipe(
        ("logits", "logits"),
        (_ref("formula: optax.kl_divergence(log_softmax(s), softmax(t))"),),
    ),
    "accuracy": Recipe(("logits", "labels"), (_ref("formula: mean(argmax(x) == y)"),)),
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


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "nvidia-cuda-nvcc-cu12", "optax"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def bandwidth(target: Target) -> float | None:
    """The GPU's memory bandwidth in bytes/s, from its target description."""
    if not target.target_config:
        return None
    for line in (TARGET_DIR / target.target_config).read_text().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "memory_bandwidth":
            return float(value)
    return None


class Compiler:
    """Compiles (function, arguments) for one target; memoised in-process and on disk."""

    def __init__(self, target: Target, cache_dir: Path | None) -> None:
        self.target = target
        self.device = device_for(target)
        self.versions = versions()
        self.bandwidth = bandwidth(target)
        self.cache_dir = cache_dir
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

        out: dict[str, Any] = {}
        text = compiled.as_text()
        own = hlo_passes.kernel_summary(text)
        out["kernels"] = own["kernels"]
        out["bytes_counted"] = own["bytes_accessed"]
        cost = compiled.cost_analysis()
        if isinstance(cost, list | tuple):  # older jax: one dict per module
            cost = cost[0] if cost else None
        if cost:
            out["bytes_xla"] = _num(cost.get("bytes accessed"))
            out["est_s"] = _num(cost.get("optimal_seconds"))
            out["flops"] = _num(cost.get("flops"))
            out["transcendentals"] = _num(cost.get("transcendentals"))
        # TPU: the compiler's own figure. GPU (no cost analysis ahead of time): our count.
        out["bytes"] = (
            out.get("bytes_xla") if out.get("bytes_xla") is not None else own["bytes_accessed"]
        )
        if self.bandwidth and out.get("est_s") is None:
            out["floor_s"] = out["bytes"] / self.bandwidth
        m = compiled.memory_analysis()
        for k in ("temp", "argument", "output", "alias", "generated_code"):
            out[f"{k}_bytes"] = int(getattr(m, f"{k}_size_in_bytes", 0) or 0) if m else None
        return out


def _num(v: Any) -> float | None:
    return None if v is None or v < 0 else float(v)


def _summed(fn: Callable) -> Callable:
    import jax.numpy as jnp

    return lambda *a: jnp.sum(fn(*a), dtype=jnp.float32)


def program(fn: Callable, mode: str, argnums: int | tuple[int, ...] = 0) -> Callable:
    """The function compiled for `mode`: the loss, or value_and_grad of its float32 sum (the
    gradient w.r.t. the first argument)."""
    import jax

    if mode == "forward":
        return fn
    if mode == "value_and_grad":
        return jax.value_and_grad(_summed(fn), argnums=argnums)
    raise ValueError(f"unknown mode {mode!r}")


def _explicit_vag() -> Callable:
    from bench import impls

    return impls.explicit_value_and_grad


# --- the cases ----------------------------------------------------------------------------------


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

    import jaxloss

    rows: list[dict[str, Any]] = []
    for shape in shapes:
        for dtype in dtypes:
            dt = jnp.dtype(dtype)
            big = compiler.sds((shape.batch, shape.classes), dt)
            small = compiler.sds((shape.batch,), jnp.int32)
            logits_bytes = shape.elements * dt.itemsize
            base = {
                "shape": shape.name,
                "batch": shape.batch,
                "classes": shape.classes,
                "dtype": dtype,
                "logits_bytes": logits_bytes,
            }
            for mode in modes:
                for name in functions:
                    if name == LINEAR:
                        rows += _linear_rows(compiler, shape, dt, mode, base, log)
                        continue
                    recipe = RECIPES.get(name)
                    if recipe is None:
                        err = "no recipe in bench/aot.py: add one to RECIPES"
                        rows.append({**base, "mode": mode, "function": name, "error": err})
                        rows[-1].update(impl="jaxloss", role="jaxloss")
                        continue
                    args = tuple(small if ARG_KINDS[a] == "y" else big for a in recipe.args)
                    impls = [
                        (
                            "jaxloss",
                            lambda n=name, kw=recipe.kwargs: functools.partial(
                                getattr(jaxloss, n), **dict(kw)
                            ),
                        )
                    ]
                    impls += list(recipe.refs if alternatives else recipe.refs[:1])
                    for k, (label, load) in enumerate(impls):
                        role = "jaxloss" if k == 0 else ("reference" if k == 1 else "alternative")
                        key = (name if k == 0 else label, shape.name, dtype, mode)
                        row = {**base, "mode": mode, "function": name}
                        row.update(impl=label, role=role)
                        try:
                            if label == "explicit" and mode == "value_and_grad":
                                fn = _explicit_vag()
                            else:
                                fn = program(load(), mode)
                            row.update(compiler.measure(key, fn, args))
                            row["bytes_per_B"] = row["bytes"] / logits_bytes
                        except Exception as e:  # one broken function must not stop the table
                            row["error"] = f"{type(e).__name__}: {e}"[:500]
                        rows.append(row)
                    log(_progress(rows[-len(impls) :]))
    return rows


def _linear_rows(
    compiler: Compiler, shape: shape_table.Shape, dt: Any, mode: str, base: dict, log: Callable
) -> list[dict[str, Any]]:
    import jax.numpy as jnp

    import jaxloss

    h = compiler.sds((shape.batch, shape.hidden), dt)
    w = compiler.sds((shape.hidden, shape.classes), dt)
    y = compiler.sds((shape.batch,), jnp.int32)
    fused = jaxloss.linear_cross_entropy

    def unfused(h: Any, w: Any, y: Any) -> Any:
        return jaxloss.cross_entropy(h @ w, y)

    rows = []
    for label, fn, role in (("jaxloss", fused, "jaxloss"), ("unfused", unfused, "reference")):
        row = {**base, "mode": mode, "function": LINEAR, "impl": label, "role": role}
        row.update(hidden=shape.hidden, memory_only=True)
        try:
            # The model step: gradients w.r.t. hidden and weight, as in training.
            prog = program(fn, mode, argnums=(0, 1))
            row.update(
                compiler.measure((LINEAR, label, shape.name, str(dt), mode), prog, (h, w, y))
            )
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        rows.append(row)
    log(_progress(rows))
    return rows


def _progress(rows: list[dict[str, Any]]) -> str:
    r = rows[0]
    parts = []
    for row in rows:
        if "error" in row:
            parts.append(f"{row['impl']}: ERROR")
        else:
            parts.append(
                f"{row['impl']} {row['bytes'] / r['logits_bytes']:.2f}B "
                f"{_mib(row['temp_bytes'])}MiB"
            )
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
    ap.add_argument(
        "--no-alternatives",
        action="store_true",
        help="compare with the reference only (not plain autodiff / the explicit formula)",
    )
    ap.add_argument("--out", default="bench/out/aot", help="writes <target>.json, <target>.md")
    ap.add_argument("--cache", default="bench/out/aot/cache", help="on-disk result cache")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--render", action="store_true", help="only rewrite <target>.md from <target>.json"
    )
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
    from bench.runner import _git_state

    cache = None if args.no_cache else Path(args.cache) / target.name
    compiler = Compiler(target, cache)
    functions = args.functions or public_functions()
    rows = run(
        compiler,
        shape_table.get(args.shapes),
        args.dtypes,
        args.modes,
        functions,
        alternatives=not args.no_alternatives,
        log=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)),
    )
    results = {
        "target": dataclasses.asdict(target),
        "device_kind": getattr(compiler.device, "device_kind", "?"),
        "versions": compiler.versions,
        "python": platform.python_version(),
        "git": _git_state(str(ROOT / "jaxloss")),
        "command": "python -m bench " + " ".join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "wall_s": time.time() - started,
        "compiled": compiler.compiled,
        "cached": compiler.cached,
        "compile_s": compiler.compile_s,
        "compile_s_all": compiler.compile_s_all,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{target.name}.json").write_text(json.dumps(results, indent=1))
    (out / f"{target.name}.md").write_text(markdown(results))
    print(
        f"{target.name}: {len(rows)} rows, {compiler.compiled} compiled "
        f"({results['compile_s']:.0f} s), {compiler.cached} cached, {results['wall_s']:.0f} s; "
        f"wrote {out / (target.name + '.json')}, {out / (target.name + '.md')}",
        flush=True,
    )
    # A reference that does not compile is a finding, not a failure of the run (Optax's
    # sigmoid_focal_loss value_and_grad at 4096×128256 f32 needs 21.5 GB of scratch, more than a
    # TPU v5e's 16 GB); a jaxloss row that does not compile is.
    return 1 if any("error" in r and r.get("role") == "jaxloss" for r in rows) else 0
