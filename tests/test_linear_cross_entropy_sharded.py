"""`linear_cross_entropy` under `shard_map` on 8 simulated CPU devices.

The devices exist only in a fresh process (`--xla_force_host_platform_device_count=8` must be
set before JAX initialises), so `lce_sharded_helper.py` runs in a subprocess and reports JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Its module-scoped work (a subprocess or compiles) runs once: one xdist worker takes the file.
# The slow tier (`make test-all`): a subprocess per check.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lce_sharded")]

HELPER = Path(__file__).with_name("lce_sharded_helper.py")


@pytest.fixture(scope="module")
def report() -> dict[str, dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HELPER.parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(HELPER)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {r["name"]: r for r in json.loads(proc.stdout)}


DIVISIBLE = [
    "dp4_mp2_mean",
    "dp2_mp4_none_all_options",
    "dp4_mp2_sum_all_options",
    "dp1_mp8_sum_and_count",
    "data_only",
    "data_parallel_axes_only",
]


@pytest.mark.parametrize("name", [*DIVISIBLE, "uneven_sizes", "all_padding_shards"])
def test_sharded_matches_single_device(report, name):
    r = report[name]
    assert r["finite"]
    assert r["value_err"] <= 1e-5, r
    assert max(r["grad_err"]) <= 1e-5, r


@pytest.mark.parametrize("name", DIVISIBLE)
def test_no_gather_of_weight_or_logits(report, name):
    """Only all-reduces, none larger than a gradient shard (no [N, V] array, no full weight)."""
    r = report[name]
    ops = {op for op, _ in r["collectives"]}
    assert ops <= {"all-reduce"}, r["collectives"]
    assert ops, "expected the shards to combine their statistics"
    mp = {"dp4_mp2": 2, "dp2_mp4": 4, "dp1_mp8": 8}.get(name[:7], 1)
    dp = 8 // mp
    n_local, v_local = r["n"] // dp, r["v"] // mp
    largest = max(size for _, size in r["collectives"])
    assert largest <= max(n_local * r["d"], r["d"] * v_local, r["v"]), r["collectives"]
    assert largest < r["n"] * r["v"] // mp


def test_explicit_inputs_without_mesh_say_what_to_pass(report):
    error = report["explicit_without_mesh"]["error"]
    assert error.startswith("linear_cross_entropy: inputs sharded over Explicit mesh axes")
    assert "`mesh=`" in error


def test_gradients_keep_the_input_shardings(report):
    r = report["dp2_mp4_none_all_options"]
    assert r["grad_shardings"] == [
        "P('data', None)",
        "P(None, 'model')",
        "P('model',)",
        "P('model',)",
    ]


# Explicit mesh axes (`jax.make_mesh`'s default): inputs sharded like the in-specs or
# replicated, sizes that divide the mesh or not, under `jax.set_mesh` or not.
EXPLICIT_SHARDED = ["dp4_mp2_explicit_sum_all_options", "dp2_mp4_explicit_none_set_mesh"]
EXPLICIT = [
    *EXPLICIT_SHARDED,
    "explicit_replicated_mean",
    "explicit_replicated_none_set_mesh",
    "explicit_uneven_mean",
    "explicit_uneven_none_set_mesh",
    "explicit_uneven_sum",
    "explicit_data_axis_only",
]


@pytest.mark.parametrize("name", EXPLICIT)
def test_explicit_mesh_matches_single_device(report, name):
    r = report[name]
    assert r["finite"]
    assert r["value_err"] <= 1e-5, r
    assert max(r["grad_err"]) <= 1e-5, r


@pytest.mark.parametrize("name", EXPLICIT)
def test_explicit_mesh_gradients_keep_the_input_layouts(report, name):
    r = report[name]
    assert r["grad_layouts"] == r["input_layouts"], r


@pytest.mark.parametrize("name", EXPLICIT_SHARDED)
def test_explicit_mesh_gathers_no_weight_or_logits(report, name):
    # Only the replicated class weights' gradient and per-token numbers are gathered (no
    # weight shard, no [N, V] block); the rest are the all-reduces of the Auto mesh.
    r = report[name]
    gathered = [size for op, size in r["collectives"] if op != "all-reduce"]
    assert max(gathered, default=0) <= max(r["n"], r["v"]), r["collectives"]
    assert any(op == "all-reduce" for op, _ in r["collectives"])
