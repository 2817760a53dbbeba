"""The human side of the results: a Markdown table, the jaxloss targets, and PNG plots.

`python -m bench.report DIR` re-renders DIR/table.md and the plots from DIR/results.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MIB = 1 << 20


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3g}" if s < 1e-2 else f"{s * 1e3:.1f}"


def _err(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def _key(r: dict) -> tuple:
    return (r["shape"], r["dtype"], r["mode"])


def _by_case(rows: Iterable[dict]) -> dict[tuple, dict[str, dict]]:
    cases: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cases.setdefault(_key(r), {})[r["impl"]] = r
    return cases


def _peak(r: dict) -> float | None:
    m = r.get("memory")
    return None if not m else m["peak"] / MIB


def _mib(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _throughput(r: dict) -> str:
    if r.get("gbps") is not None:
        return f"{r['gbps']:.1f} GB/s"
    if r.get("gflops") is not None:
        return f"{r['gflops']:.0f} GFLOP/s"
    return "-"


def header(results: dict) -> list[str]:
    env, lim = results["environment"], results["limits"]
    lines = [
        f"# jaxloss benchmarks ({results['suite']} set"
        + ("" if results.get("complete", True) else ", partial: the run is still going")
        + ")",
        "",
        f"- Device: {env['backend']} / {env['device_kind']} ({env['processor']}), "
        f"{env['cores']} cores; jax {env['jax']}, optax {env['optax']}, torch {env['torch']}.",
        f"- jaxloss source: {env.get('jaxloss_source')}",
        f"- Host allocator: **{env['allocator']}**"
        + (f" (LD_PRELOAD={env['LD_PRELOAD']})" if env["LD_PRELOAD"] else ""),
        f"- Load average (1, 5, 15 min) before: {results['load_before']}, after: "
        f"{results['load_after']}; started {results['started']}, took "
        f"{results['wall_s'] / 60:.1f} min.",
        "- Reference rates, measured in this run (best of the start and end measurements): "
        "what XLA reaches on a plain copy, exp-and-sum and matmul on this machine. They are "
        "not the hardware's peak, and another implementation can exceed them (PyTorch's own "
        "bf16 matmul, for one), so `% ref` above 100% is possible:",
        f"    - memory bandwidth, in-place copy: **{lim['copy_gbps']:.1f} GB/s** (read + write); "
        f"into a fresh output: {lim['fresh_copy_gbps']:.1f} GB/s; read only: "
        f"{lim['read_gbps']:.1f} GB/s",
        "    - fused exp-and-sum: **"
        + ", ".join(f"{d} {v / 1e9:.2f} G elements/s" for d, v in lim["exp_per_s"].items())
        + "**",
        "    - XLA matmul: "
        + ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in lim["matmul_flops"].items())
        + f" (square, n={lim['matmul_n']})",
        "",
        "Columns: median over interleaved rounds (min-max); `x optax` is the median over "
        "Optax's; throughput is the fewest bytes the operation must move (forward: read the "
        "logits once; value_and_grad: read them once and write the gradient once) per second, "
        "or matmul FLOP/s for the model step; `% ref` is the time at the binding reference rate "
        "(memory, fresh-output memory for value_and_grad's new gradient array, exp or XLA "
        "matmul, named) over the median; `peak MiB` is argument + output + temp "
        "- alias from the compiled executable's `memory_analysis()` (n/a for torch); errors are "
        "max abs against float64 NumPy: loss per example (forward) or the summed loss / batch; "
        "gradient w.r.t. the logits, or for the model step the larger of dh and dW relative to "
        "their largest entry.",
        "",
    ]
    return lines


def case_table(rows: list[dict]) -> list[str]:
    lines = [
        "| shape | dtype | mode | impl | median ms (min-max) | x optax | throughput | % ref "
        "| peak MiB | loss err | grad err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, dtype, mode), impls in _by_case(rows).items():
        base = impls.get("optax", {}).get("median_s")
        for impl, r in impls.items():
            label = f"{r['batch']}x{r['classes']}"
            if "median_s" not in r:
                why = r.get("unavailable") or r.get("error", "")
                lines.append(f"| {label} | {dtype} | {mode} | {impl} | n/a: {why} | | | | | | |")
                continue
            ratio = f"{r['median_s'] / base:.2f}" if base else "-"
            peak = _peak(r)
            lines.append(
                f"| {label} | {dtype} | {mode} | {impl} | {_ms(r['median_s'])} "
                f"({_ms(r['min_s'])}-{_ms(r['max_s'])}) | {ratio} | {_throughput(r)} | "
                f"{100 * r['frac_limit']:.0f}% {r['limit_kind']} | "
                f"{_mib(peak)} | {_err(r.get('loss_err'))} | "
                f"{_err(r.get('grad_err'))} |"
            )
    return lines


def targets(rows: list[dict]) -> list[dict[str, Any]]:
    """Check jaxloss against the targets of issue 3; each entry says met, missed or unknown."""
    cases = _by_case(rows)
    out: list[dict[str, Any]] = []

    def timed(c: dict, impl: str) -> dict | None:
        r = c.get(impl)
        return r if r and "median_s" in r else None

    def add(name: str, failures: list[str], checked: int, detail: str = "") -> None:
        status = "unknown" if checked == 0 else ("met" if not failures else "missed")
        out.append(
            {
                "target": name,
                "status": status,
                "checked": checked,
                "failures": failures,
                "detail": detail,
            }
        )

    for shape, bound in (("lm-32k", 0.6), ("vocab-128k", 0.4)):
        c = cases.get((shape, "float32", "value_and_grad"), {})
        a, b = timed(c, "jaxloss"), timed(c, "optax")
        if a and b:
            ratio = a["median_s"] / b["median_s"]
            add(
                f"jaxloss <= {bound}x optax, {shape} f32 value_and_grad",
                [] if ratio <= bound else [f"{ratio:.2f}x"],
                1,
                f"{ratio:.2f}x",
            )
        else:
            add(f"jaxloss <= {bound}x optax, {shape} f32 value_and_grad", [], 0)

    def compare(other: str, pred, skip_small: bool) -> tuple[list[str], int]:
        fails, n = [], 0
        for (_, dtype, mode), c in cases.items():
            a, b = timed(c, "jaxloss"), timed(c, other)
            if not (a and b) or (skip_small and a["batch"] * a["classes"] < 1024 * 1000):
                continue
            n += 1
            bad = pred(a, b)
            if bad:
                fails.append(f"{a['batch']}x{a['classes']} {dtype} {mode}: {bad}")
        return fails, n

    def slower(a: dict, b: dict) -> str:
        r = a["median_s"] / b["median_s"]
        return f"{r:.2f}x" if r >= 1 else ""

    add(
        "faster than PyTorch from 1024x1000 up (all dtypes, modes)",
        *compare("torch", slower, skip_small=True),
    )
    add("never slower than Optax (any shape, dtype, mode)", *compare("optax", slower, False))

    def more_memory(a: dict, b: dict) -> str:
        pa, pb = _peak(a), _peak(b)
        if pa is None or pb is None or pa <= pb:
            return ""
        return f"{_mib(pa)} > {_mib(pb)} MiB"

    add("peak memory <= Optax's", *compare("optax", more_memory, False))

    def worse_grad(a: dict, b: dict) -> str:
        ga, gb = a.get("grad_err"), b.get("grad_err")
        if ga is None or gb is None:
            return ""
        return f"{ga:.1e} > {gb:.1e}" if ga > gb else ""

    fails, n = compare("optax", worse_grad, False)
    n = sum(
        1
        for c in cases.values()
        if timed(c, "jaxloss") and c["jaxloss"].get("grad_err") is not None and timed(c, "optax")
    )
    add("gradient error vs float64 <= Optax's", fails, n)

    fails, n = [], 0
    for (shape, dtype, mode), c in cases.items():
        a = timed(c, "jaxloss")
        if shape != "lm-32k" or mode == "model_step" or not a:
            continue
        n += 1
        if a["frac_limit"] < 0.5:
            fails.append(f"{dtype} {mode}: {1 / a['frac_limit']:.1f}x the {a['limit_kind']} limit")
    add("within 2x of the machine limit at 4096x32000 (forward, value_and_grad)", fails, n)
    return out


def summary_table(rows: list[dict]) -> list[str]:
    """One line per case: jaxloss's median and its ratio to each other implementation's."""
    others = ("optax", "autodiff", "explicit", "torch")
    lines = [
        "| shape | dtype | mode | jaxloss ms | "
        + " | ".join(f"x {o}" for o in others)
        + " | jaxloss % ref |",
        "|---|---|---|---|" + "---|" * len(others) + "---|",
    ]
    for (_, dtype, mode), impls in _by_case(rows).items():
        ours = impls.get("jaxloss", {})
        if "median_s" not in ours:
            continue
        ratios = []
        for o in others:
            theirs = impls.get(o, {}).get("median_s")
            ratios.append(f"{ours['median_s'] / theirs:.2f}" if theirs else "-")
        lines.append(
            f"| {ours['batch']}x{ours['classes']} | {dtype} | {mode} | {_ms(ours['median_s'])} | "
            + " | ".join(ratios)
            + f" | {100 * ours['frac_limit']:.0f}% {ours['limit_kind']} |"
        )
    return lines


def markdown(results: dict) -> str:
    rows = results["rows"]
    lines = header(results)
    lines += ["## Summary: jaxloss's time over each other implementation's (below 1: faster)", ""]
    lines += summary_table(rows)
    lines += ["", "## Softmax cross-entropy with integer labels", ""]
    lines += case_table(rows)
    lines += ["", "Implementations:", ""]
    lines += [f"- `{k}`: {v}" for k, v in results["impl_descriptions"].items()]
    t = results.get("targets") or targets(rows)
    lines += ["", "## jaxloss targets", "", "| target | status | detail |", "|---|---|---|"]
    for e in t:
        detail = e["detail"] or "; ".join(e["failures"][:6])
        if len(e["failures"]) > 6:
            detail += f"; ... {len(e['failures']) - 6} more"
        lines.append(f"| {e['target']} | {e['status']} ({e['checked']} checked) | {detail} |")
    linear = results.get("linear_ce")
    if linear is not None:
        lines += ["", "## Linear + cross-entropy (bench/linear_ce.py)", ""]
        if linear.get("error"):
            lines.append(f"**bench.linear_ce.run failed:** `{linear['error']}`")
        lines += generic_table(linear.get("rows", []))
    return "\n".join(lines) + "\n"


def generic_table(rows: list[dict]) -> list[str]:
    """A table of whatever keys the rows carry, in first-seen order; lists are summarised."""
    if not rows:
        return ["(no rows)"]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and not isinstance(r[k], list | dict)]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return lines


def plots(results: dict, out: Path) -> list[Path]:
    """time_vs_classes.png and fraction_of_limit.png: one panel per (mode, dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if "median_s" in r]
    modes = [
        m for m in ("forward", "value_and_grad", "model_step") if any(r["mode"] == m for r in rows)
    ]
    dtypes = [d for d in ("float32", "bfloat16") if any(r["dtype"] == d for r in rows)]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    written = []
    if not modes or not dtypes:
        return written
    specs = (
        (
            "time_vs_classes.png",
            lambda r: r["median_s"] / r["batch"] * 1e6,
            "median time per example (µs)",
            "log",
        ),
        (
            "fraction_of_limit.png",
            lambda r: r["frac_limit"],
            "time at XLA's reference rate / time",
            "linear",
        ),
    )
    for fname, value, ylabel, yscale in specs:
        fig, axes = plt.subplots(
            len(modes), len(dtypes), squeeze=False, figsize=(5.5 * len(dtypes), 3.6 * len(modes))
        )
        for i, mode in enumerate(modes):
            for j, dtype in enumerate(dtypes):
                ax = axes[i][j]
                for impl in impls:
                    pts = sorted(
                        (r["classes"], r["batch"], value(r))
                        for r in rows
                        if r["mode"] == mode and r["dtype"] == dtype and r["impl"] == impl
                    )
                    if pts:
                        ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=impl)
                ax.set_xscale("log")
                ax.set_yscale(yscale)
                if yscale == "linear":
                    ax.set_ylim(bottom=0)
                    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
                ax.set_title(f"{mode}, {dtype}")
                ax.set_xlabel("classes")
                ax.set_ylabel(ylabel)
                ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize="small")
        env = results["environment"]
        note = (
            "; 1 = the rate XLA reaches on a plain copy, exp-and-sum or matmul in this run "
            "(not the hardware's peak: other implementations can exceed it)"
            if fname.startswith("fraction")
            else ""
        )
        fig.suptitle(
            f"{env['device_kind']}, {env['cores']} cores, {env['allocator']}{note}",
            fontsize="small",
        )
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_allocator_comparison(out: Path) -> Path | None:
    """allocators.md: each case's median under the default allocator and under tcmalloc."""
    runs = {}
    for kind in ("default", "tcmalloc"):
        p = out / kind / "results.json"
        if p.exists():
            runs[kind] = json.loads(p.read_text())
    if len(runs) < 2:
        return None
    a, b = (_by_case(r for r in runs[k]["rows"] if "median_s" in r) for k in runs)
    lines = [
        "# Default allocator against tcmalloc",
        "",
        f"default: {runs['default']['environment']['allocator']}; tcmalloc: "
        f"{runs['tcmalloc']['environment']['allocator']}",
        "",
        "| shape | dtype | mode | impl | default ms | tcmalloc ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, impls in a.items():
        for impl, r in impls.items():
            s = b.get(key, {}).get(impl)
            if not s:
                continue
            lines.append(
                f"| {r['batch']}x{r['classes']} | {key[1]} | {key[2]} | {impl} | "
                f"{_ms(r['median_s'])} | {_ms(s['median_s'])} | "
                f"{r['median_s'] / s['median_s']:.2f}x |"
            )
    path = out / "allocators.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path


def rerender(out: Path, plot: bool = True) -> str:
    """Rewrite `out`/table.md (and the plots) from `out`/results.json with the current code.

    The timings, errors and limits are the ones measured in that run; only what is derived
    from them (bounds, fractions of the limit, targets, tables) is recomputed.
    """
    from bench import limits

    results = json.loads((out / "results.json").read_text())
    limits.apply(results["rows"], results["limits"])
    results["targets"] = targets(results["rows"])
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    table = markdown(results)
    (out / "table.md").write_text(table)
    if plot:
        plots(results, out)
    return table


if __name__ == "__main__":
    import sys

    print(rerender(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out")))
