"""What the TPU and GPU compilers say jaxloss costs, compiled here without the devices.

The compiles run in a subprocess with the AOT venv's Python (`make aot-env` makes `.venv-aot`,
which holds libtpu and the CUDA plugin; this test venv must never import libtpu), through
`python -m bench --target ...` (`bench/aot.py`), and come back as JSON. Nothing is timed: bytes
accessed, the TPU compiler's estimated time and scratch memory are facts of the compilers, the
same on every run for the pinned versions (pyproject's `aot` extra).

Cases, sized so the file runs in about 3 minutes on a 2-core machine: three compiler processes
side by side, 196 programs, about 6.5 minutes of CPU (3.6 min wall, measured on the shared 2-core
machine this was written on, with other jobs running):

- Every public function against its reference (bench/aot.py's RECIPES) at `lm-32k`
  (4096×32000), f32 and bf16, forward and value_and_grad, on TPU v5e and H100: 4 × 23 programs
  per target. A real vocabulary, whose 32000 classes are not a multiple of the TPU's 128-lane
  tiles; per-row vectors (16 KiB) are far below one pass over the logits (250-500 MiB); and
  the logits are too big for on-chip memory. Smaller shapes would compile no faster, and on
  TPU the compiler may stage a small array in on-chip memory, and its `bytes accessed` then
  counts that copy and the on-chip re-reads (512×32000, 62.5 MiB: 6·B for a logsumexp that
  reads its input twice).
- Integer-label cross-entropy and Optax at vocab-128k (2048×131072) too, the other shape the
  targets are stated for, on TPU v5e only (its compiler gives the estimated time): 12 programs.
- The dense-target losses at imagenet (1024×1000) on H100, where XLA:GPU once kept PolyLoss's
  expm1(z) as a float32 [B, K] buffer between its passes: 16 programs, a second each.
- `softmax_entropy` at mnist (128×10) on H100, whose gradient XLA:GPU fuses into one pass:
  8 programs; `linear_cross_entropy` against the unfused formula at imagenet (D=2048) on
  H100, where one chunk holds the whole vocabulary: 8 programs.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import jaxloss
from bench.aot import NOT_ON_LOGITS

# Its module-scoped work runs once: `make test-all` sends each slow file to one worker
# (`--dist loadfile`).
# The slow tier (`make test-all`): AOT compiles.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
AOT_PYTHON = Path(os.environ.get("JAXLOSS_AOT_PYTHON", ROOT / ".venv-aot" / "bin" / "python"))
MIB = 2**20

needs_aot = pytest.mark.skipif(
    not AOT_PYTHON.exists(),
    reason=f"no AOT compilers ({AOT_PYTHON} missing): run `make aot-env` to compile for "
    "TPU and GPU without them",
)

ALL_SHAPE = "lm-32k"
CE_SHAPES = ("lm-32k", "vocab-128k")
#: The compiler runs: (target, shapes, functions); empty functions: all of jaxloss.__all__.
LINEAR = "linear_cross_entropy"
RUNS = (
    ("tpu-v5e", (ALL_SHAPE,), ()),
    ("tpu-v5e", ("vocab-128k",), ("softmax_cross_entropy_with_integer_labels", "cross_entropy")),
    ("h100", (ALL_SHAPE,), ()),
    ("h100", ("imagenet",), ("softmax_cross_entropy", "poly_loss_cross_entropy", LINEAR)),
    ("h100", ("mnist",), ("softmax_entropy",)),
)
INTEGER_CE = ("softmax_cross_entropy_with_integer_labels", "cross_entropy")
OPTAX_INT = "optax.softmax_cross_entropy_with_integer_labels"
DTYPES = ("float32", "bfloat16")
MODES = ("forward", "value_and_grad")
TARGETS = ("tpu-v5e", "h100")
#: Per-element losses: for bf16 logits they come back in float32 (the library's rule for losses)
#: where Optax returns bf16, and the output is logits-sized, so writing it costs 1·B more.
F32_ELEMENTWISE = {
    "sigmoid_binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss",
}


@functools.cache
def _started() -> dict[tuple, tuple[subprocess.Popen, Path, list[str]]]:
    """Start every compiler run at once (they are independent processes), the first time any
    test asks for one."""
    jobs = {}
    for target, shapes, functions in RUNS:
        out = Path(tempfile.mkdtemp(prefix="jaxloss-test-aot-"))
        cmd = [str(AOT_PYTHON), "-m", "bench", "--target", target, "--shapes", *shapes]
        cmd += ["--no-alternatives", "--no-cache", "--quiet", "--out", str(out)]
        if functions:
            cmd += ["--functions", *functions]
        # Output to files, not pipes: a pipe nobody reads yet would fill up and stall the run.
        with open(out / "log.txt", "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        jobs[(target, shapes, functions)] = (proc, out / f"{target}.json", cmd)
    return jobs


@functools.cache
def _finished(run: tuple) -> dict:
    proc, path, cmd = _started()[run]
    proc.wait(timeout=900)
    if not path.exists():
        log = (path.parent / "log.txt").read_text()[-3000:]
        pytest.fail(f"{' '.join(cmd)} wrote nothing (exit {proc.returncode}):\n{log}")
    return json.loads(path.read_text())


def rows(target: str, shape: str, function: str | None = None) -> list[dict]:
    """The rows of whichever run compiled this target at this shape (for this function)."""
    for run in RUNS:
        t, shapes, functions = run
        if t == target and shape in shapes and (not functions or function in functions):
            return [r for r in _finished(run)["rows"] if r["shape"] == shape]
    raise AssertionError(f"no run compiles {target} {shape} {function}")


def pick(rs: list[dict], **key: Any) -> dict:
    found = [r for r in rs if all(r.get(k) == v for k, v in key.items())]
    assert len(found) == 1, f"{len(found)} rows for {key}"
    assert "error" not in found[0], f"{key}: {found[0]['error']}"
    return found[0]


def describe(r: dict) -> str:
    return (
        f"{r['shape']} {r['dtype']} {r['mode']} {r['function']} by {r['impl']}: "
        f"{r['bytes'] / r['logits_bytes']:.3f}·B, "
        f"temp {r['temp_bytes'] / MIB:.2f} MiB, est {r.get('est_s')}"
    )


# --- every public function against its reference --------------------------------------------


@needs_aot
@pytest.mark.parametrize("target", TARGETS)
def test_every_public_function_compiles(target):
    rs = rows(target, ALL_SHAPE)
    broken = {
        (r["function"], r["impl"], r["dtype"], r["mode"]): r["error"] for r in rs if "error" in r
    }
    assert not broken, broken
    assert {r["function"] for r in rs} == set(jaxloss.__all__) - set(NOT_ON_LOGITS)


@needs_aot
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("function", sorted(set(jaxloss.__all__) - set(NOT_ON_LOGITS)))
def test_no_more_bytes_or_scratch_than_the_reference(function, target, dtype, mode):
    rs = rows(target, ALL_SHAPE)
    key = {"function": function, "dtype": dtype, "mode": mode}
    mine = pick(rs, role="jaxloss", **key)
    ref = pick(rs, role="reference", **key)
    b = mine["logits_bytes"]
    # Scratch: a per-row vector or a TPU tile more is fine; a logits-sized buffer is not.
    slack = 1 * MIB if target.startswith("tpu") else 0.01 * b
    assert mine["temp_bytes"] <= ref["temp_bytes"] + slack, (describe(mine), describe(ref))
    if mine.get("memory_only"):
        return  # linear_cross_entropy loops over chunks: loop bodies count once in the bytes
    # Bytes: a pass over the logits is 1·B. Per-row vectors (labels, losses, row statistics)
    # are 0.0001·B here, and the partial sums of a row reduction XLA:GPU splits in two (128
    # per row, written and read back) 0.008·B: slack of 1% of B, as for GPU scratch.
    wider = function in F32_ELEMENTWISE and dtype == "bfloat16" and mode == "forward"
    extra = 1.0 * b if wider else 0.0
    assert mine["bytes"] <= ref["bytes"] + 0.01 * b + extra, (describe(mine), describe(ref))


@needs_aot
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("function", ["softmax_cross_entropy", "poly_loss_cross_entropy"])
def test_dense_targets_keep_no_logits_sized_scratch_on_short_rows(function, dtype, mode):
    """At 1024×1000 on H100 the scratch is per-row numbers (tens of KiB), never a [B, K] buffer
    (a float32 one is 1·B or 2·B): PolyLoss's value_and_grad once kept 4 MiB."""
    rs = rows("h100", "imagenet", function)
    mine = pick(rs, role="jaxloss", function=function, dtype=dtype, mode=mode)
    assert mine["temp_bytes"] <= 0.1 * mine["logits_bytes"], describe(mine)


@needs_aot
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_cross_entropy_keeps_no_more_scratch_than_unfused_at_a_small_vocabulary(dtype, mode):
    """At 1024×1000 (D=2048) on H100 the whole [N, V] block is smaller than a chunk: the fused
    loss kept 11.8 MiB forward (two 512-token chunks) where the unfused formula keeps 7.8."""
    rs = rows("h100", "imagenet", LINEAR)
    key = {"function": LINEAR, "dtype": dtype, "mode": mode}
    mine, ref = pick(rs, role="jaxloss", **key), pick(rs, role="reference", **key)
    assert mine["temp_bytes"] <= ref["temp_bytes"] + 0.01 * mine["logits_bytes"], (
        describe(mine),
        describe(ref),
    )


@needs_aot
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_entropy_gradient_is_one_fused_pass_on_tiny_rows(dtype):
    """At 128×10 on H100 the plain formula's value_and_grad is 3·B in 2 kernels; jaxloss's took
    7.8·B in 3 until its gradient kept the max-then-sums statistics XLA:GPU fuses."""
    rs = rows("h100", "mnist", "softmax_entropy")
    key = {"function": "softmax_entropy", "dtype": dtype, "mode": "value_and_grad"}
    mine, ref = pick(rs, role="jaxloss", **key), pick(rs, role="reference", **key)
    assert mine["bytes"] <= ref["bytes"], (describe(mine), describe(ref))
    assert mine["kernels"] <= ref["kernels"], (describe(mine), describe(ref))


@needs_aot
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("function", ["logsumexp", "log_softmax", "softmax_kl_divergence"])
def test_recomputed_gradient_shares_the_forward_read(function, target, dtype):
    """value_and_grad at 4096×32000: with no optimization barrier before the recomputed
    gradient pass, XLA reads the logits for it and for the forward statistics together.
    `log_softmax` took 4.0·B (as many as `jax.nn`) and the distillation KL 7.0·B behind the
    barrier; now one pass fewer than the reference, and 5·B for the KL (two logits arrays read
    for the loss, read again and one gradient written)."""
    rs = rows(target, ALL_SHAPE)
    key = {"function": function, "dtype": dtype, "mode": "value_and_grad"}
    mine, ref = pick(rs, role="jaxloss", **key), pick(rs, role="reference", **key)
    assert mine["bytes"] <= ref["bytes"] - 0.9 * mine["logits_bytes"], (
        describe(mine),
        describe(ref),
    )
    if function == "softmax_kl_divergence":
        assert mine["bytes_per_B"] <= 5.1, describe(mine)


# --- integer-label cross-entropy on TPU v5e at the stated shapes -------------------------------


@needs_aot
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_optax_is_what_the_targets_are_stated_against(shape, dtype):
    """The reference's figures, so that a failure below is jaxloss's, not the measurement's:
    Optax reads the logits twice forward (max, then the sum of exp) and makes 4 passes for
    value_and_grad."""
    rs = rows("tpu-v5e", shape, INTEGER_CE[0])
    key = {"function": INTEGER_CE[0], "impl": OPTAX_INT, "shape": shape, "dtype": dtype}
    fwd = pick(rs, mode="forward", **key)
    vag = pick(rs, mode="value_and_grad", **key)
    assert 1.9 <= fwd["bytes_per_B"] <= 2.2, describe(fwd)
    assert fwd["est_s"] > 0 and vag["est_s"] > fwd["est_s"], (describe(fwd), describe(vag))
    assert vag["bytes_per_B"] >= 3.0, describe(vag)


@needs_aot
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("function", INTEGER_CE)
def test_integer_ce_forward_reads_the_logits_once(function, shape, dtype):
    rs = rows("tpu-v5e", shape, function)
    key = {"function": function, "shape": shape, "dtype": dtype, "mode": "forward"}
    mine = pick(rs, role="jaxloss", **key)
    optax = pick(rs, impl=OPTAX_INT, **key)
    assert mine["bytes_per_B"] <= 1.05, (describe(mine), describe(optax))
    assert mine["est_s"] <= 0.55 * optax["est_s"], (describe(mine), describe(optax))


@needs_aot
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("function", INTEGER_CE)
def test_integer_ce_value_and_grad_within_three_passes(function, shape, dtype):
    rs = rows("tpu-v5e", shape, function)
    key = {"function": function, "shape": shape, "dtype": dtype, "mode": "value_and_grad"}
    mine = pick(rs, role="jaxloss", **key)
    optax = pick(rs, impl=OPTAX_INT, **key)
    assert mine["bytes_per_B"] <= 3.1, (describe(mine), describe(optax))
    assert mine["est_s"] <= 0.8 * optax["est_s"], (describe(mine), describe(optax))


def test_main_venv_does_not_load_libtpu():
    assert "libtpu" not in sys.modules


# --- the byte count used where the compiler gives none (XLA:GPU), on this machine's CPU --------


def test_kernel_bytes_count_operands_outputs_and_only_what_a_gather_reads():
    import jax
    import jax.numpy as jnp

    if str(ROOT) not in sys.path:  # `bench/` is a top-level folder, not an installed package
        sys.path.insert(0, str(ROOT))
    from bench import hlo_passes

    x = jax.ShapeDtypeStruct((256, 1000), jnp.float32)
    y = jax.ShapeDtypeStruct((256,), jnp.int32)
    n = 256 * 1000 * 4

    def count(f, *args):
        return hlo_passes.kernel_summary(jax.jit(f).lower(*args).compile().as_text())

    s = count(lambda x: jnp.sum(x, axis=-1), x)
    assert s["bytes_read"] == n and s["bytes_written"] == 256 * 4 and s["kernels"] >= 1
    s = count(lambda x: 2 * x, x)
    assert s["bytes_accessed"] == 2 * n
    # The label's logit: 256 elements gathered (and the labels read), not a pass over x.
    s = count(lambda x, y: jnp.take_along_axis(x, y[:, None], axis=-1)[:, 0], x, y)
    assert s["bytes_read"] <= 4 * 256 * 4, s
