"""Every loss sharded over 8 simulated CPU devices: Explicit and Auto meshes, shard_map, classes.

The devices are simulated in the test process itself (`jax_num_cpu_devices`, set in the root
conftest.py). For each public function and each layout, `jax.jit(jax.value_and_grad(...))` of the
summed loss on sharded inputs is compared with the same call on unsharded ones: the batch sharded
over a mesh of Explicit axes (`jax.make_mesh`'s default) or of Auto axes, through `shard_map`
(each device its own rows), and with the logits sharded over the classes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxloss

# The slow tier (`make test-all`): each check compiles a sharded program.
pytestmark = pytest.mark.slow

B, K = 16, 24
rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(B, K)) * 2, jnp.float32)
PROBS = jax.nn.softmax(jnp.asarray(rng.normal(size=(B, K)), jnp.float32))
Y = jnp.asarray(rng.integers(0, K, size=B), jnp.int32)
W = jnp.linspace(0.5, 2.0, K)

# name: (function of its arrays, arrays); the first array is differentiated.
CASES = {
    "logsumexp": (jaxloss.logsumexp, (X,)),
    "log_softmax": (jaxloss.log_softmax, (X,)),
    "softmax": (jaxloss.softmax, (X,)),
    "entropy": (jaxloss.entropy, (PROBS,)),
    "softmax_entropy": (jaxloss.softmax_entropy, (X,)),
    "kl_divergence": (jaxloss.kl_divergence, (jnp.log(PROBS[::-1]), PROBS)),
    "kl_divergence_with_log_targets": (
        jaxloss.kl_divergence_with_log_targets,
        (jnp.log(PROBS[::-1]), jnp.log(PROBS)),
    ),
    "softmax_cross_entropy": (jaxloss.softmax_cross_entropy, (X, PROBS)),
    "softmax_cross_entropy_with_integer_labels": (
        jaxloss.softmax_cross_entropy_with_integer_labels,
        (X, Y),
    ),
    "cross_entropy": (
        lambda x, y: jaxloss.cross_entropy(x, y, label_smoothing=0.1, class_weights=W),
        (X, Y),
    ),
    "nll_loss": (lambda x, y: jaxloss.nll_loss(x, y, class_weights=W), (jax.nn.log_softmax(X), Y)),
    "softmax_focal_loss": (
        lambda x, y: jaxloss.softmax_focal_loss(x, y, gamma=0.5, alpha=W),
        (X, Y),
    ),
    "poly_loss_cross_entropy": (jaxloss.poly_loss_cross_entropy, (X, PROBS)),
    "smooth_labels": (lambda t: jaxloss.smooth_labels(t, 0.1), (PROBS,)),
    "sigmoid_binary_cross_entropy": (jaxloss.sigmoid_binary_cross_entropy, (X, PROBS)),
    "binary_cross_entropy_with_logits": (
        lambda x, t: jaxloss.binary_cross_entropy_with_logits(x, t, weight=W, pos_weight=W),
        (X, PROBS),
    ),
    "sigmoid_focal_loss": (lambda x, t: jaxloss.sigmoid_focal_loss(x, t, alpha=0.25), (X, PROBS)),
    "softmax_kl_divergence": (
        lambda s, t: jaxloss.softmax_kl_divergence(s, t, temperature=2.0, beta=0.3),
        (X, X[::-1] * 1.5),
    ),
    "accuracy": (lambda x, y: jaxloss.accuracy(x, y, k=2, reduction="none"), (X, Y)),
    "perplexity": (lambda x: jaxloss.perplexity(jnp.mean(x * x, -1), 2.0), (X,)),
}


def _loss(f):
    # Squared, so that a loss whose plain sum is constant (softmax sums to 1) has a gradient.
    def loss(a, *rest):
        out = f(a, *rest)
        return jnp.sum(out * out)

    return loss


def _errors(got, want):
    (gv, gg), (wv, wg) = got, want
    scale = float(jnp.max(jnp.abs(wg))) or 1.0
    return abs(float(gv) - float(wv)) / max(abs(float(wv)), 1e-6), float(
        jnp.max(jnp.abs(gg - wg))
    ) / scale


def run(f, arrays, layout):
    """(sharded, unsharded) `value_and_grad` of the summed squared loss."""
    want = jax.jit(jax.value_and_grad(_loss(f)))(*arrays)
    if layout in ("explicit", "auto"):
        kind = AxisType.Explicit if layout == "explicit" else AxisType.Auto
        mesh = jax.make_mesh((8,), ("b",), axis_types=(kind,))
        with jax.set_mesh(mesh):
            sharded = [jax.device_put(a, NamedSharding(mesh, P("b"))) for a in arrays]
            got = jax.jit(jax.value_and_grad(_loss(f)))(*sharded)
    elif layout == "classes":
        mesh = jax.make_mesh((8,), ("c",), axis_types=(AxisType.Auto,))
        with jax.set_mesh(mesh):
            sharded = [
                jax.device_put(a, NamedSharding(mesh, P(None, "c") if a.ndim == 2 else P()))
                for a in arrays
            ]
            got = jax.jit(jax.value_and_grad(_loss(f)))(*sharded)
    else:  # shard_map: each device sums its own rows, the sums are added
        mesh = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Explicit,))
        local = jax.shard_map(
            lambda *a: jax.lax.psum(_loss(f)(*a), "b"),
            mesh=mesh,
            in_specs=tuple(P("b") for _ in arrays),
            out_specs=P(),
        )
        with jax.set_mesh(mesh):
            sharded = [jax.device_put(a, NamedSharding(mesh, P("b"))) for a in arrays]
            got = jax.jit(jax.value_and_grad(local))(*sharded)
    return got, want


LAYOUTS = ("explicit", "auto", "shard_map", "classes")
# linear_cross_entropy has its own sharded tests (test_linear_cross_entropy_sharded.py).
NAMES = sorted(n for n in jaxloss.__all__ if n != "linear_cross_entropy")


def test_the_cases_cover_every_public_function():
    assert sorted(CASES) == NAMES


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NAMES)
def test_sharded_value_and_grad_match_one_device(name, layout):
    f, arrays = CASES[name]
    got, want = run(f, arrays, layout)
    value_err, grad_err = _errors(got, want)
    assert value_err <= 1e-5
    assert grad_err <= 1e-5
    if layout == "explicit":
        # The gradient comes back sharded like the logits: nothing was gathered to one device.
        assert str(got[1].sharding.spec).startswith("P('b'"), got[1].sharding
