"""`linear_cross_entropy` under `shard_map` on 8 simulated CPU devices.

The devices are simulated in the test process itself (`jax_num_cpu_devices`, set in the root
conftest.py).
"""

from __future__ import annotations

import contextlib
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxloss._linear_cross_entropy import linear_cross_entropy

# The slow tier (`make test-all`); one worker takes the file (`--dist loadfile`), so each case
# compiles once.
pytestmark = pytest.mark.slow

COLLECTIVE = re.compile(
    r"=\s*(.*?)\s(all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter)(?:-start)?\("
)
ARRAY = re.compile(r"[a-z]+[0-9]*\[([0-9,]*)\]")


def collectives(hlo: str) -> list[tuple[str, int]]:
    """(op, largest array in its result, in elements) of every collective in HLO text."""
    out = []
    for line in hlo.splitlines():
        m = COLLECTIVE.search(line)
        if m:
            sizes = [int(np.prod([int(x) for x in s.split(",") if x])) for s in ARRAY.findall(m[1])]
            out.append((m[2], max(sizes, default=0)))
    return out


def layout(x) -> list:
    spec = tuple(x.sharding.spec)
    return [str(e) if e is not None else None for e in spec + (None,) * (x.ndim - len(spec))]


def run_case(
    name,
    mesh_shape,
    n,
    d,
    v,
    reduction,
    options,
    mesh_axes=("data", "model"),
    *,
    explicit=False,
    replicated=False,
    set_mesh=False,
):
    """`explicit`: a mesh of Explicit axes (`jax.make_mesh`'s default) instead of Auto ones;
    `replicated`: the inputs placed replicated rather than sharded like the in-specs;
    `set_mesh`: the call made under `jax.set_mesh(mesh)`."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    devices = np.asarray(jax.devices()[:8]).reshape(mesh_shape)
    kind = AxisType.Explicit if explicit else AxisType.Auto
    mesh = Mesh(devices, ("data", "model"), axis_types=(kind, kind))
    h = rng.standard_normal((n, d)).astype(np.float32)
    w = (rng.standard_normal((d, v)) / np.sqrt(d)).astype(np.float32)
    y = rng.integers(0, v, n).astype(np.int32)
    y[::5] = -100
    b = rng.standard_normal(v).astype(np.float32)
    cw = rng.uniform(0.5, 2.0, v).astype(np.float32)
    ct = rng.standard_normal(n).astype(np.float32)
    kw = dict(options)
    tok_axis, voc_axis = mesh_axes

    def loss(h, w, b, cw, mesh=None):
        out = linear_cross_entropy(
            h, w, y, bias=b, class_weights=cw, reduction=reduction, mesh=mesh,
            mesh_axes=mesh_axes, chunk_size=8, **kw,
        )  # fmt: skip
        if reduction == "sum_and_count":
            out = out[0]
        return jnp.sum(out * ct) if reduction == "none" else out

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
    ref_val, ref_grads = jax.jit(grad)(h, w, b, cw)

    def put(x, spec):
        # Arrays whose size does not divide the mesh cannot be placed sharded: replicate them
        # and let `linear_cross_entropy` pad and shard.
        if replicated:
            return jax.device_put(x, NamedSharding(mesh, P()))
        try:
            return jax.device_put(x, NamedSharding(mesh, spec))
        except ValueError:
            return jax.device_put(x, NamedSharding(mesh, P()))

    args = (
        put(h, P(tok_axis, None)),
        put(w, P(None, voc_axis)),
        put(b, P(voc_axis)),
        put(cw, P(voc_axis)),
    )
    sharded = jax.jit(lambda h, w, b, cw: grad(h, w, b, cw, mesh))
    with jax.set_mesh(mesh) if set_mesh else contextlib.nullcontext():
        compiled = sharded.lower(*args).compile()
        val, grads = compiled(*args)
        fwd = jax.jit(lambda h, w, b, cw: loss(h, w, b, cw, mesh)).lower(*args).compile()
        fwd_hlo = fwd.as_text()
    rel = lambda a, b: float(  # noqa: E731
        np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(np.asarray(b))), 1e-30)
    )
    return {
        "name": name,
        "value_err": rel(val, ref_val),
        "grad_err": [rel(g, r) for g, r in zip(grads, ref_grads, strict=True)],
        "grad_shardings": [str(g.sharding.spec) for g in grads],
        # Each dimension's mesh axes (None: replicated), comparable between arrays.
        "grad_layouts": [layout(g) for g in grads],
        "input_layouts": [layout(a) for a in args],
        "finite": bool(np.isfinite(float(val))),
        "collectives": collectives(compiled.as_text()) + collectives(fwd_hlo),
        "n": n,
        "d": d,
        "v": v,
    }


def explicit_without_mesh() -> dict:
    """Inputs sharded over Explicit axes but no `mesh=`: a clear error, not XLA's."""
    devices = np.asarray(jax.devices()[:8]).reshape(4, 2)
    mesh = Mesh(devices, ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    h = jax.device_put(np.ones((8, 4), np.float32), NamedSharding(mesh, P("data", None)))
    w = np.ones((4, 6), np.float32)
    try:
        linear_cross_entropy(h, w, np.zeros(8, np.int32))
        error = ""
    except ValueError as e:
        error = str(e)
    return {"name": "explicit_without_mesh", "error": error}


EVERYTHING = {
    "ignore_index": -100,
    "label_smoothing": 0.1,
    "z_loss": 1e-3,
    "logit_softcap": 3.0,
}
IGNORE = {"ignore_index": -100}
# name: (mesh shape, tokens, hidden size, classes, reduction, options, keywords of run_case)
CASES = {
    "dp4_mp2_mean": ((4, 2), 64, 16, 96, "mean", IGNORE, {}),
    "dp2_mp4_none_all_options": ((2, 4), 48, 16, 128, "none", EVERYTHING, {}),
    "dp4_mp2_sum_all_options": ((4, 2), 64, 16, 96, "sum", EVERYTHING, {}),
    "dp1_mp8_sum_and_count": ((1, 8), 40, 8, 128, "sum_and_count", IGNORE, {}),
    # Sizes that do not divide the mesh: 30 tokens over 4, 101 classes over 2.
    "uneven_sizes": ((4, 2), 30, 8, 101, "mean", EVERYTHING, {}),
    "data_only": ((8, 1), 64, 8, 50, "mean", IGNORE, {}),
    # Shards that hold only padding: 3 tokens over 2, 5 classes over 4 (2 per shard).
    "all_padding_shards": ((2, 4), 3, 8, 5, "none", EVERYTHING, {}),
    "data_parallel_axes_only": ((8, 1), 64, 8, 50, "none", IGNORE, {"mesh_axes": ("data", None)}),
    # Explicit axes: shard_map needs its inputs in exactly its in-specs, whatever the caller's
    # layout (sharded or replicated, padded or not, under `jax.set_mesh` or not).
    "dp4_mp2_explicit_sum_all_options": ((4, 2), 64, 16, 96, "sum", EVERYTHING,
                                         {"explicit": True}),
    "dp2_mp4_explicit_none_set_mesh": ((2, 4), 48, 16, 128, "none", EVERYTHING,
                                       {"explicit": True, "set_mesh": True}),
    "explicit_replicated_mean": ((4, 2), 64, 16, 96, "mean", IGNORE,
                                 {"explicit": True, "replicated": True}),
    "explicit_replicated_none_set_mesh": ((2, 4), 48, 8, 64, "none", IGNORE,
                                          {"explicit": True, "replicated": True,
                                           "set_mesh": True}),
    "explicit_uneven_mean": ((4, 2), 30, 8, 101, "mean", EVERYTHING, {"explicit": True}),
    "explicit_uneven_none_set_mesh": ((2, 4), 3, 8, 5, "none", EVERYTHING,
                                      {"explicit": True, "set_mesh": True}),
    "explicit_uneven_sum": ((4, 2), 30, 8, 101, "sum", EVERYTHING,
                            {"explicit": True, "replicated": True}),
    "explicit_data_axis_only": ((8, 1), 64, 8, 50, "none", IGNORE,
                                {"explicit": True, "mesh_axes": ("data", None)}),
}  # fmt: skip


@functools.cache
def report(name: str) -> dict:
    """One case's figures, computed once per test process (several tests read each case)."""
    *args, keywords = CASES[name]
    return run_case(name, *args, **keywords)


DIVISIBLE = [
    "dp4_mp2_mean",
    "dp2_mp4_none_all_options",
    "dp4_mp2_sum_all_options",
    "dp1_mp8_sum_and_count",
    "data_only",
    "data_parallel_axes_only",
]


@pytest.mark.parametrize("name", [*DIVISIBLE, "uneven_sizes", "all_padding_shards"])
def test_sharded_matches_single_device(name):
    r = report(name)
    assert r["finite"]
    assert r["value_err"] <= 1e-5, r
    assert max(r["grad_err"]) <= 1e-5, r


@pytest.mark.parametrize("name", DIVISIBLE)
def test_no_gather_of_weight_or_logits(name):
    """Only all-reduces, none larger than a gradient shard (no [N, V] array, no full weight)."""
    r = report(name)
    ops = {op for op, _ in r["collectives"]}
    assert ops <= {"all-reduce"}, r["collectives"]
    assert ops, "expected the shards to combine their statistics"
    mp = {"dp4_mp2": 2, "dp2_mp4": 4, "dp1_mp8": 8}.get(name[:7], 1)
    dp = 8 // mp
    n_local, v_local = r["n"] // dp, r["v"] // mp
    largest = max(size for _, size in r["collectives"])
    assert largest <= max(n_local * r["d"], r["d"] * v_local, r["v"]), r["collectives"]
    assert largest < r["n"] * r["v"] // mp


def test_explicit_inputs_without_mesh_say_what_to_pass():
    error = explicit_without_mesh()["error"]
    assert error.startswith("linear_cross_entropy: inputs sharded over Explicit mesh axes")
    assert "`mesh=`" in error


def test_gradients_keep_the_input_shardings():
    r = report("dp2_mp4_none_all_options")
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
def test_explicit_mesh_matches_single_device(name):
    r = report(name)
    assert r["finite"]
    assert r["value_err"] <= 1e-5, r
    assert max(r["grad_err"]) <= 1e-5, r


@pytest.mark.parametrize("name", EXPLICIT)
def test_explicit_mesh_gradients_keep_the_input_layouts(name):
    r = report(name)
    assert r["grad_layouts"] == r["input_layouts"], r


@pytest.mark.parametrize("name", EXPLICIT_SHARDED)
def test_explicit_mesh_gathers_no_weight_or_logits(name):
    # Only the replicated class weights' gradient and per-token numbers are gathered (no
    # weight shard, no [N, V] block); the rest are the all-reduces of the Auto mesh.
    r = report(name)
    gathered = [size for op, size in r["collectives"] if op != "all-reduce"]
    assert max(gathered, default=0) <= max(r["n"], r["v"]), r["collectives"]
    assert any(op == "all-reduce" for op, _ in r["collectives"])
