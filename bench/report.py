"""The human side of the results: the Markdown table, the plots, and the figures the docs quote.

    python -m bench.report DIR        # re-render DIR/table.md and the plots from results.json
    python -m bench.report --docs     # rewrite every figure quoted in docs/benchmarks.md

A figure in the docs' prose is written `<!-- fig EXPR -->value<!-- /fig -->`: EXPR is evaluated
here (`figure`) against the generated files under docs/ (`R`: docs/bench/results.json, `L`: the
linear cross-entropy run, `A("h100")`: an accelerator table), and tests/test_bench_smoke.py
checks that every value still equals it.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.3g}" if s < 1e-2 else f"{s * 1e3:.1f}"


def _err(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _peak(r: dict) -> float | None:
    return r["memory"]["peak"] / MIB if r.get("memory") else None


def by_case(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    cases: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cases.setdefault((r["shape"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    return cases


def _label(r: dict) -> str:
    mid = f"{r['hidden']}x" if r["shape"].startswith("lce") else ""
    return f"{r['batch']}x{mid}{r['classes']}"


def _roles(results: dict) -> tuple[str, str]:
    """(ours, the one the case table compares with): the fused loss against the unfused one in
    a linear cross-entropy run, jaxloss against Optax otherwise."""
    return ("fused", "jaxloss") if results.get("suite") == "linear_ce" else ("jaxloss", "optax")


def header(results: dict) -> list[str]:
    env, lim = results["environment"], results["limits"]
    partial = "" if results.get("complete", True) else ", partial: the run is still going"
    return [
        f"# jaxloss benchmarks ({results['suite']} set{partial})",
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
        "not the hardware's peak, and another implementation can exceed them, so `% ref` "
        "above 100% is possible:",
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
        f"Columns: median over interleaved rounds (min-max); `x {_roles(results)[1]}`: the median "
        f"over {_roles(results)[1]}'s; the others are described in docs/benchmarks.md, 'What is "
        "measured'.",
        "",
    ]


def case_table(results: dict) -> list[str]:
    compare = _roles(results)[1]
    lines = [
        f"| shape | dtype | mode | impl | median ms (min-max) | x {compare} | throughput | % ref "
        "| peak MiB | loss err | grad err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, dtype, mode), impls in by_case(results["rows"]).items():
        base = impls.get(compare, {}).get("median_s")
        for impl, r in impls.items():
            head = f"| {_label(r)} | {dtype} | {mode} | {impl} |"
            if "median_s" not in r:
                why = r.get("unavailable") or r.get("error", "")
                lines.append(f"{head} n/a: {why} | | | | | | |")
                continue
            ratio = f"{r['median_s'] / base:.2f}" if base else "-"
            rate = f"{r['gbps']:.1f} GB/s" if r.get("gbps") is not None else "-"
            rate = f"{r['gflops']:.0f} GFLOP/s" if r.get("gflops") is not None else rate
            lines.append(
                f"{head} {_ms(r['median_s'])} ({_ms(r['min_s'])}-{_ms(r['max_s'])}) | {ratio} | "
                f"{rate} | {100 * r['frac_limit']:.0f}% {r['limit_kind']} | {_mib(_peak(r))} | "
                f"{_err(r.get('loss_err'))} | {_err(r.get('grad_err'))} |"
            )
    return lines


def summary_table(results: dict) -> list[str]:
    """One line per case: our median and its ratio to each other implementation's."""
    ours = _roles(results)[0]
    others = [i for i in results["impl_descriptions"] if i != ours]
    lines = [
        f"| shape | dtype | mode | {ours} ms | "
        + " | ".join(f"x {o}" for o in others)
        + f" | {ours} % ref |",
        "|---|---|---|---|" + "---|" * len(others) + "---|",
    ]
    for (_, dtype, mode), impls in by_case(results["rows"]).items():
        r = impls.get(ours, {})
        if "median_s" in r:
            cells = [impls.get(o, {}).get("median_s") for o in others]
            lines.append(
                f"| {_label(r)} | {dtype} | {mode} | {_ms(r['median_s'])} | "
                + " | ".join(f"{r['median_s'] / t:.2f}" if t else "-" for t in cells)
                + f" | {100 * r['frac_limit']:.0f}% {r['limit_kind']} |"
            )
    return lines


def markdown(results: dict) -> str:
    ours = _roles(results)[0]
    lines = header(results)
    lines += [f"## Summary: {ours}'s time over each other implementation's (below 1: faster)", ""]
    lines += summary_table(results)
    lines += ["", "## Softmax cross-entropy with integer labels", ""]
    lines += case_table(results)
    lines += ["", "Implementations:", ""]
    lines += [f"- `{k}`: {v}" for k, v in results["impl_descriptions"].items()]
    return "\n".join(lines) + "\n"


def plots(results: dict, out: Path, prefix: str = "") -> None:
    """time_vs_classes.png and fraction_of_limit.png: one panel per (mode, dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if "median_s" in r]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    env = results["environment"]
    specs = (
        ("time_vs_classes", "median time per example (µs)", "log", ""),
        (
            "fraction_of_limit",
            "time at XLA's reference rate / time",
            "linear",
            "; 1 = the rate XLA reaches on a plain copy, exp-and-sum or matmul in this run "
            "(not the hardware's peak: other implementations can exceed it)",
        ),
    )
    for name, ylabel, yscale, note in specs if rows else ():
        fig, axes = plt.subplots(
            len(modes), len(dtypes), squeeze=False, figsize=(5.5 * len(dtypes), 3.6 * len(modes))
        )
        for (i, mode), (j, dtype) in ((a, b) for a in enumerate(modes) for b in enumerate(dtypes)):
            ax = axes[i][j]
            for impl in impls:
                pts = sorted(
                    (r["classes"], r["median_s"] / r["batch"] * 1e6 if yscale == "log" else
                     r["frac_limit"])
                    for r in rows
                    if (r["mode"], r["dtype"], r["impl"]) == (mode, dtype, impl)
                )  # fmt: skip
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=impl)
            ax.set_xscale("log")
            ax.set_yscale(yscale)
            if yscale == "linear":
                ax.set_ylim(bottom=0)
                ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
            ax.set(title=f"{mode}, {dtype}", xlabel="classes", ylabel=ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize="small")
        title = f"{env['device_kind']}, {env['cores']} cores, {env['allocator']}{note}"
        fig.suptitle(title, fontsize="small")
        fig.tight_layout()
        fig.savefig(out / f"{prefix}{name}.png", dpi=110)
        plt.close(fig)


def rerender(out: Path, plot: bool = True) -> str:
    """Rewrite `out`/table.md (and the plots) from `out`/results.json with the current code:
    the measured timings, errors and limits stay; what is derived from them is recomputed."""
    from bench import limits

    results = json.loads((out / "results.json").read_text())
    limits.apply(results["rows"], results["limits"])
    table = markdown(results)
    (out / "table.md").write_text(table)
    if plot:
        plots(results, out)
    return table


# --- figures quoted in the docs ---------------------------------------------------------------

FIGURE = re.compile(r"<!-- fig (.+?) -->(.*?)<!-- /fig -->", re.S)


@functools.lru_cache
def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def row(res: dict, shape: str, dtype: str, mode: str, impl: str, **match: Any) -> dict:
    """The one row of `res` for this case and implementation (AOT rows: `function=...`)."""
    key = {"shape": shape, "dtype": dtype, "mode": mode, "impl": impl, **match}
    found = [r for r in res["rows"] if all(r.get(k) == v for k, v in key.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match {key}")
    return found[0]


def ratios(res: dict, mode: str, dtype: str, shapes: str, a: str, b: str) -> list[float]:
    """Median of `a` over median of `b`, one per shape (space-separated names)."""
    return [
        row(res, s, dtype, mode, a)["median_s"] / row(res, s, dtype, mode, b)["median_s"]
        for s in shapes.split()
    ]


def pairs(res: dict) -> list[tuple[dict, dict]]:
    """(jaxloss row, its reference's row) for each case of an accelerator table."""
    cases: dict[tuple, dict[str, dict]] = {}
    for r in res["rows"]:
        if "error" not in r and r.get("role") in ("jaxloss", "reference"):
            cases.setdefault((r["function"], r["shape"], r["dtype"], r["mode"]), {})[r["role"]] = r
    return [(c["jaxloss"], c["reference"]) for c in cases.values() if len(c) == 2]


def span(values: Any, fmt: str = ".2f") -> str:
    """`lo–hi` (one value when they round alike)."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def figure(expr: str, docs: Path) -> str:
    """The value of one figure expression against the generated files under `docs`."""
    ns: dict[str, Any] = {"R": _json(docs / "bench" / "results.json")}
    ns.update(
        # Shorthands for the main run: `vs(mode, dtype, "shape ...", "optax")` is the span of
        # jaxloss's time over Optax's; `peak(...)` a row's compiled peak memory in MiB.
        vs=lambda mode, dtype, shapes, b="optax", a="jaxloss": span(
            ratios(ns["R"], mode, dtype, shapes, a, b)
        ),
        peak=lambda *case: row(ns["R"], *case)["memory"]["peak"] / MIB,
    )
    ns |= {
        "A": lambda target: _json(docs / "bench" / "aot" / f"{target}.json"),
        "row": row,
        "ratios": ratios,
        "span": span,
        "pairs": pairs,
        "MIB": MIB,
    }
    if (docs / "bench" / "linear_ce.json").is_file():
        ns["L"] = _json(docs / "bench" / "linear_ce.json")
    return str(eval(expr, ns))  # the docs' own expressions, not input from elsewhere


def docs_figures(page: Path) -> list[tuple[str, str, str]]:
    """(expression, value on the page, value from the generated files) for each figure."""
    text = page.read_text()
    return [(e, v, figure(e, page.parent)) for e, v in FIGURE.findall(text)]


def refresh_docs(page: Path) -> int:
    """Rewrite each figure of `page` from the generated files; return how many changed."""
    text = page.read_text()
    changed = 0

    def sub(m: re.Match) -> str:
        nonlocal changed
        value = figure(m.group(1), page.parent)
        changed += value != m.group(2)
        return f"<!-- fig {m.group(1)} -->{value}<!-- /fig -->"

    page.write_text(FIGURE.sub(sub, text))
    return changed


if __name__ == "__main__":
    if sys.argv[1:2] == ["--docs"]:
        page = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "benchmarks.md"
        print(f"{page}: {refresh_docs(page)} figures changed")
    else:
        print(rerender(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out")))
