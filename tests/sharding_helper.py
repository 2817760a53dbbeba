"""Run every loss sharded over 8 simulated CPU devices and report JSON (tests/test_sharding.py).

For each public function and each mesh kind (Explicit axes, `jax.make_mesh`'s default in JAX
0.10, and Auto axes) the inputs are sharded over the batch; `jax.jit(jax.value_and_grad(...))`
of the summed loss is compared with the same call on unsharded inputs. Then the same through
`shard_map` (each device its own rows), and with the logits sharded over the classes where the
function reduces over them. Each row: the function, the layout, the errors, and any exception.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxloss

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


def run(name, f, arrays, layout):
    want = jax.jit(jax.value_and_grad(_loss(f)))(*arrays)
    row = {"name": name, "layout": layout}
    try:
        if layout in ("explicit", "auto"):
            kind = AxisType.Explicit if layout == "explicit" else AxisType.Auto
            mesh = jax.make_mesh((8,), ("b",), axis_types=(kind,))
            with jax.set_mesh(mesh):
                sharded = [jax.device_put(a, NamedSharding(mesh, P("b"))) for a in arrays]
                got = jax.jit(jax.value_and_grad(_loss(f)))(*sharded)
            row["grad_spec"] = str(got[1].sharding.spec)
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
        row["value_err"], row["grad_err"] = _errors(got, want)
    except Exception as e:  # reported, and asserted on by the test
        row["error"] = f"{type(e).__name__}: {e}"[:2000]
        row["trace"] = traceback.format_exc()[-2000:]
    return row


if __name__ == "__main__":
    rows = [
        run(name, f, arrays, layout)
        for name, (f, arrays) in CASES.items()
        for layout in ("explicit", "auto", "shard_map", "classes")
    ]
    print(json.dumps(rows))
