"""A fast run of the benchmark suite on the smallest shape: it must run end to end, write its
outputs, and every implementation must agree with the float64 reference. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# Its module-scoped work runs once: `make test-all` sends each slow file to one worker
# (`--dist loadfile`).
# The slow tier (`make test-all`): a subprocess per check.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench/` is a top-level folder, not an installed package
    sys.path.insert(0, str(ROOT))


def _load_shapes():
    spec = importlib.util.spec_from_file_location("bench_shapes", ROOT / "bench" / "shapes.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclass-like NamedTuple needs its module registered
    spec.loader.exec_module(mod)
    return mod


def test_shape_table_is_dependency_free_and_complete():
    shapes = _load_shapes()
    wanted = {(128, 10), (1024, 1000), (4096, 32000), (8192, 32000), (2048, 131072), (4096, 128256)}
    full = {(s.batch, s.classes) for s in shapes.get(list(shapes.FULL))}
    assert wanted <= full
    assert set(shapes.QUICK) <= set(shapes.SHAPES)
    assert max(shapes.SHAPES[n].elements for n in shapes.QUICK) <= 1024 * 32000  # "quick"
    assert set(shapes.DTYPES) == {"float32", "bfloat16"}
    with pytest.raises(KeyError, match="unknown shape"):
        shapes.get(["no-such-shape"])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--shapes",
        "mnist",
        "--min-rounds",
        "1",
        "--max-rounds",
        "1",
        "--budget",
        "0",
        "--small-limits",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def test_outputs_written(smoke_run):
    for name in ("results.json", "table.md", "time_vs_classes.png", "fraction_of_limit.png"):
        assert (smoke_run / name).stat().st_size > 0, name
    table = (smoke_run / "table.md").read_text()
    assert "allocator" in table and "| 128x10 |" in table


def test_every_case_ran_and_matches_float64(smoke_run):
    res = json.loads((smoke_run / "results.json").read_text())
    assert res["environment"]["allocator"]
    rows = res["rows"]
    modes = {"forward", "value_and_grad", "model_step"}
    for impl in ("optax", "autodiff", "explicit"):  # always installed with the test extra
        for dtype in ("float32", "bfloat16"):
            got = {
                r["mode"]
                for r in rows
                if r["impl"] == impl and r["dtype"] == dtype and "median_s" in r
            }
            assert got == modes, (impl, dtype, got)
    for r in rows:
        if "median_s" not in r:
            assert "unavailable" in r, r  # skipped for a stated reason, never silently
            continue
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["memory"] is not None or r["impl"] == "torch"
        # bf16 results are rounded to 8 bits of mantissa; the losses here are about 2.5.
        tol = 1e-5 if r["dtype"] == "float32" else 5e-2
        assert r["loss_err"] < tol * 3, r
        if r["mode"] != "forward":
            assert r["grad_err"] < tol, r


def test_hlo_pass_counter_sees_the_gradient_pass():
    from bench import hlo_passes

    text = hlo_passes.compiled_text("explicit", "value_and_grad", 64, 1000, 16, "float32")
    s = hlo_passes.passes(text, 64 * 1000)
    assert s["writes"] >= 1  # the gradient
    assert s["passes"] >= 2  # the fewest possible: read the logits once, write once
    # The label's logit is gathered, one element per row: a partial read, not a pass.
    assert s["partial"] >= 1


def test_interleave_rotates_the_order_and_counts_calls_per_sample():
    """Each round starts one implementation later, and a fast call is repeated until a sample
    lasts `sample_s` (counted after the first call), a slow one is not."""
    import time
    from types import SimpleNamespace

    from bench.runner import interleave

    log: list[str] = []

    def prepared(name: str, seconds: float) -> SimpleNamespace:
        def call() -> None:
            log.append(name)
            time.sleep(seconds)

        return SimpleNamespace(impl=name, call=call)

    slow = 0.03
    out = interleave(
        [prepared("a", 0.0), prepared("b", slow), prepared("c", slow)],
        min_rounds=3, max_rounds=3, budget_s=100.0, sample_s=0.02,
    )  # fmt: skip
    assert out["number"]["b"] == out["number"]["c"] == 1
    assert out["number"]["a"] > 10
    # The calls with runs of one name collapsed; the last nine are the three recorded rounds,
    # and round i starts with the i-th implementation.
    runs = [name for i, name in enumerate(log) if i == 0 or log[i - 1] != name]
    assert runs[-9:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"], runs


def test_linear_ce_mode_runs_the_fused_loss_against_the_unfused_ones(tmp_path):
    """`--linear-ce` (what bench/linear_ce.py was): the model step only, the fused loss next
    to the unfused one and PyTorch's two, each checked against float64."""
    cmd = [sys.executable, "-m", "bench", "--linear-ce", "--quick", "--dtypes", "float32"]
    cmd += ["--min-rounds", "1", "--max-rounds", "1", "--budget", "0", "--small-limits"]
    cmd += ["--no-plots", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads((tmp_path / "linear_ce.json").read_text())
    assert res["suite"] == "linear_ce" and (tmp_path / "linear_ce.md").is_file()
    rows = {r["impl"]: r for r in res["rows"]}
    assert {r["mode"] for r in res["rows"]} == {"model_step"}
    assert {"fused", "jaxloss"} <= set(rows)
    for r in rows.values():
        if "unavailable" not in r:
            assert r["grad_err"] < 1e-4 and r["loss_err"] < 1e-4, r
    assert rows["fused"]["memory"]["temp"] < rows["jaxloss"]["memory"]["temp"]
