"""The reliability findings of issue 20: each a regression test that failed before its fix.

Masked rows under a soft-cap, focal labels a rounding step outside [0, 1], `smooth_labels`'
edges, symbolic class counts under `jax.export`, and class-sharded logits on an Explicit mesh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export

import jaxloss
from jaxloss import _impl
from jaxloss._xla_cpu import CpuConfig

# Every kernel of the integer-label cross-entropy, as tests/test_implementations.py pins them.
CUT = CpuConfig(max_row=4, label_shift_min_size=0, narrow_keep_exp_max=0, small_max=0)
KERNELS = {
    "portable": ("portable", None),
    "xla_cpu": ("xla_cpu", None),
    "xla_cpu_cut": ("xla_cpu", CUT),
}  # cross_entropy has no XLA:GPU kernel (pinning one raises)


# --- logit_softcap keeps the masked-row promise ---------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_softcap_masked_and_ignored_rows_have_zero_gradient(kernel):
    # Regression: with a cap, tanh's derivative at a NaN logit (NaN) times the row's zero
    # cotangent gave NaN in masked (`where`) and ignored (`ignore_index`) rows.
    x = jnp.array([[1.0, 2.0, 0.5], [np.nan, 0.0, 1.0], [0.0, np.nan, 1.0], [0.5, 1.0, np.nan]])
    y = jnp.array([0, 1, -100, 0])
    keep = jnp.array([True, False, True, True])
    # A class mask: the NaN in row 3 sits in a masked class.
    classes = jnp.ones((4, 3), bool).at[3, 2].set(False)

    def loss(x, where):
        return jaxloss.cross_entropy(
            x, y[: len(x)], where=where, ignore_index=-100, logit_softcap=3.0, reduction="sum"
        )

    value, g = jax.jit(_impl.pinned(jax.value_and_grad(loss), *KERNELS[kernel]))(x[:3], keep[:3])
    gc = jax.jit(_impl.pinned(jax.grad(loss), *KERNELS[kernel]))(x, keep[:, None] & classes)
    assert np.isfinite(value)
    np.testing.assert_array_equal(g[1:], 0.0)
    assert np.all(np.isfinite(g[0])) and np.any(g[0] != 0)
    np.testing.assert_array_equal(gc[1:3], 0.0)
    assert gc[3, 2] == 0 and np.all(np.isfinite(gc[3])) and np.any(gc[3] != 0)
    # The cap itself is unchanged on the kept rows.
    want = jax.jit(jax.grad(lambda x: jaxloss.cross_entropy(x, y[:1], logit_softcap=3.0).sum()))(
        x[:1]
    )
    np.testing.assert_allclose(g[:1], want, rtol=1e-6)


# --- sigmoid_focal_loss: labels one rounding step outside [0, 1] ----------------------------------


@pytest.mark.parametrize("gamma", [0.5, 1.5, 2.0, 2.5])
def test_focal_labels_a_rounding_step_outside_the_unit_interval_stay_finite(gamma):
    # 1 + 2⁻²² and −1e-8: what a computed target (a mixup, a smoothed label) can give.
    x = jnp.array([0.3, -0.2, 2.0, -3.0])
    t = jnp.array([1 + 2**-22, -1e-8, 1 + 2**-22, -1e-8])
    got = jaxloss.sigmoid_focal_loss(x, t, gamma=gamma)
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, optax.sigmoid_focal_loss(x, t, gamma=gamma), rtol=1e-5)
    # And the clamp changes nothing inside [0, 1].
    inside = jnp.clip(t, 0, 1)
    np.testing.assert_allclose(got, jaxloss.sigmoid_focal_loss(x, inside, gamma=gamma), rtol=1e-5)
    gx, gt = jax.grad(lambda x, t: jaxloss.sigmoid_focal_loss(x, t, gamma=gamma).sum(), (0, 1))(
        x, t
    )
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gt))


# --- smooth_labels --------------------------------------------------------------------------------


def test_smooth_labels_takes_numpy_integer_class_counts():
    want = jaxloss.smooth_labels(jnp.array([2, 0]), 0.2, num_classes=3)
    for n in (np.int64(3), np.int32(3), np.uint8(3)):
        np.testing.assert_array_equal(
            jaxloss.smooth_labels(jnp.array([2, 0]), 0.2, num_classes=n), want
        )
    for bad in (True, np.True_, 3.0, 0):
        with pytest.raises(
            ValueError, match=r"smooth_labels: `num_classes` must be a positive int"
        ):
            jaxloss.smooth_labels(jnp.array([2, 0]), 0.2, num_classes=bad)


def test_smooth_labels_without_classes_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"smooth_labels: `labels` with shape \(2, 0\) has no classes"
    ):
        jaxloss.smooth_labels(jnp.zeros((2, 0)), 0.1)


def test_smooth_labels_row_whose_label_class_is_masked_is_nan_not_alpha():
    # The docstring promises kept rows that sum to 1; the label's 1 − α has nowhere to go when
    # its class is masked, so the row is NaN (as an out-of-range label), not a row summing to α.
    mask = jnp.array([[True, True, False]] * 3).at[2].set(False)
    out = jaxloss.smooth_labels(jnp.array([2, 0, 1]), 0.1, num_classes=3, where=mask)
    assert np.all(np.isnan(out[0]))
    np.testing.assert_allclose(out[1], [0.95, 0.05, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(out[2], 0.0)  # a fully masked row stays 0
    # Rows whose label is kept sum to 1 and match cross_entropy's label smoothing.
    t = jaxloss.smooth_labels(jnp.array([1, 0]), 0.1, num_classes=3, where=mask[:2].at[0].set(True))
    np.testing.assert_allclose(jnp.sum(t, -1), 1.0, rtol=1e-6)


# --- symbolic class counts (jax.export) -----------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        jaxloss.cross_entropy,
        jaxloss.softmax_cross_entropy_with_integer_labels,
        jaxloss.nll_loss,
        jaxloss.softmax_focal_loss,
        jaxloss.accuracy,
        lambda x, y: jaxloss.softmax_cross_entropy(x, jax.nn.one_hot(y, x.shape[-1])),
    ],
)
def test_symbolic_class_count_is_refused_with_a_clear_message(fn):
    b, k = export.symbolic_shape("b, k")
    x = jax.ShapeDtypeStruct((b, k), jnp.float32)
    y = jax.ShapeDtypeStruct((b,), jnp.int32)
    with pytest.raises(ValueError, match=r"the number of classes must be static.*symbolic shape"):
        export.export(jax.jit(fn))(x, y)


@pytest.mark.parametrize(
    "fn",
    [
        jaxloss.logsumexp,
        jaxloss.log_softmax,
        jaxloss.softmax,
        jaxloss.softmax_entropy,
        lambda x: jaxloss.softmax_kl_divergence(x, x),
    ],
)
def test_symbolic_class_count_is_refused_by_the_softmax_functions(fn):
    b, k = export.symbolic_shape("b, k")
    with pytest.raises(ValueError, match=r"the number of classes must be static.*symbolic shape"):
        export.export(jax.jit(fn))(jax.ShapeDtypeStruct((b, k), jnp.float32))


def test_a_traced_entropy_base_is_refused_by_name():
    with pytest.raises(TypeError, match=r"entropy: `base` must be a Python number"):
        jax.jit(lambda p, b: jaxloss.entropy(p, base=b))(jnp.ones((2, 3)) / 3, 2.0)


# --- class-sharded logits on an Explicit mesh -----------------------------------------------------

# Run in a fresh process: the 8 simulated devices must be set before JAX starts.
_SHARDED = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import jaxloss

    B, K = 8, 16
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(B, K)), jnp.float32)
    Y = jnp.asarray(rng.integers(0, K, size=B), jnp.int32)
    M = jnp.asarray(rng.random((B, K)) > 0.2).at[:, 0].set(True)
    W = jnp.linspace(0.5, 2.0, K)
    cases = {
        "cross_entropy": lambda x, y: jaxloss.cross_entropy(
            x, y, label_smoothing=0.1, class_weights=W, z_loss=1e-3, logit_softcap=5.0),
        "cross_entropy_class_mask": lambda x, y: jaxloss.cross_entropy(x, y, where=M),
        "softmax_focal_loss": lambda x, y: jaxloss.softmax_focal_loss(x, y, gamma=2.0),
        "nll_loss": lambda x, y: jaxloss.nll_loss(x, y),
        "accuracy_top2": lambda x, y: jaxloss.accuracy(x, y, k=2, reduction="none"),
        "accuracy_class_mask": lambda x, y: jaxloss.accuracy(x, y, where=M, reduction="none"),
    }
    mesh = jax.make_mesh((2, 4), ("b", "k"), axis_types=(AxisType.Explicit,) * 2)
    rows = {}
    with jax.set_mesh(mesh):
        xs = jax.device_put(X, NamedSharding(mesh, P("b", "k")))
        ys = jax.device_put(Y, NamedSharding(mesh, P("b")))
        for name, f in cases.items():
            try:
                err = float(np.nanmax(np.abs(jax.jit(f)(xs, ys) - f(X, Y))))
                row = {"value_err": err}
                if not name.startswith("accuracy"):
                    total = lambda x, y: jnp.sum(f(x, y))
                    g = jax.jit(jax.grad(total))(xs, ys)
                    row["grad_err"] = float(np.max(np.abs(g - jax.grad(total)(X, Y))))
                    row["grad_spec"] = str(g.sharding.spec)
            except Exception as e:
                row = {"error": f"{type(e).__name__}: {e}"[:1500]}
            rows[name] = row
    print(json.dumps(rows))
    """
)


@pytest.mark.slow  # a subprocess with 8 simulated devices, compiling every case
def test_class_sharded_logits_on_an_explicit_mesh():
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 6
    for name, row in rows.items():
        assert "error" not in row, (name, row["error"])
        assert row["value_err"] <= 1e-5, (name, row)
        if "grad_err" in row:
            assert row["grad_err"] <= 1e-5, (name, row)
            assert row["grad_spec"] == "P('b', 'k')", (name, row)  # nothing gathered
