"""Every loss sharded over 8 simulated CPU devices: Explicit and Auto meshes, shard_map, classes.

The devices exist only in a fresh process (`--xla_force_host_platform_device_count=8` must be set
before JAX initialises), so `sharding_helper.py` runs in a subprocess and reports JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxloss

# Its module-scoped work (a subprocess or compiles) runs once: one xdist worker takes the file.
# The slow tier (`make test-all`): a subprocess per check.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sharding")]

HELPER = Path(__file__).with_name("sharding_helper.py")
LAYOUTS = ("explicit", "auto", "shard_map", "classes")
# linear_cross_entropy has its own sharded tests (test_linear_cross_entropy_sharded.py).
NAMES = sorted(n for n in jaxloss.__all__ if n != "linear_cross_entropy")


@pytest.fixture(scope="module")
def report() -> dict[tuple[str, str], dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HELPER.parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(HELPER)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {(r["name"], r["layout"]): r for r in json.loads(proc.stdout)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NAMES)
def test_sharded_value_and_grad_match_one_device(report, name, layout):
    r = report[(name, layout)]
    assert "error" not in r, r.get("trace")
    assert r["value_err"] <= 1e-5, r
    assert r["grad_err"] <= 1e-5, r


@pytest.mark.parametrize("name", NAMES)
def test_explicit_mesh_keeps_the_batch_sharding(report, name):
    # The gradient comes back sharded like the logits: nothing was gathered to one device.
    spec = report[(name, "explicit")]["grad_spec"]
    assert spec.startswith("P('b'"), spec
