"""`jax.export` with a symbolic batch size, for CPU, TPU and CUDA at once, for every loss.

Exporting for several platforms lowers both the portable and the XLA:CPU kernels (the
per-platform choice stays in the exported program), so neither may make a size-based choice that
needs a concrete batch. The exported program is then called here on two batch sizes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jaxloss

pytestmark = pytest.mark.slow  # `make test-all`: serialisation round trips for several platforms

K = 12
W = np.linspace(0.5, 2.0, K).astype(np.float32)
# linear_cross_entropy: [b, K] hidden states times a [K, V] weight.
V = 37
LCE_W = (np.random.default_rng(1).normal(size=(K, V)) / np.sqrt(K)).astype(np.float32)

# name: (function, kinds of its arguments: "x" logits-like [b, K], "y" labels [b]).
CASES = {
    "logsumexp": (jaxloss.logsumexp, "x"),
    "log_softmax": (jaxloss.log_softmax, "x"),
    "softmax": (jaxloss.softmax, "x"),
    "entropy": (lambda p: jaxloss.entropy(jax.nn.softmax(p)), "x"),
    "softmax_entropy": (jaxloss.softmax_entropy, "x"),
    "kl_divergence": (lambda a, b: jaxloss.kl_divergence(a, jax.nn.softmax(b)), "xx"),
    "kl_divergence_with_log_targets": (jaxloss.kl_divergence_with_log_targets, "xx"),
    "softmax_cross_entropy": (lambda a, b: jaxloss.softmax_cross_entropy(a, jax.nn.softmax(b)),
                              "xx"),
    "softmax_cross_entropy_with_integer_labels": (
        jaxloss.softmax_cross_entropy_with_integer_labels, "xy"),
    "cross_entropy": (lambda x, y: jaxloss.cross_entropy(
        x, y, label_smoothing=0.1, class_weights=W, z_loss=1e-3, reduction="mean"), "xy"),
    "nll_loss": (lambda x, y: jaxloss.nll_loss(x, y, reduction="sum"), "xy"),
    "softmax_focal_loss": (lambda x, y: jaxloss.softmax_focal_loss(
        x, y, gamma=0.5, alpha=W, reduction="mean"), "xy"),
    "poly_loss_cross_entropy": (
        lambda a, b: jaxloss.poly_loss_cross_entropy(a, jax.nn.softmax(b)), "xx"),
    "smooth_labels": (lambda t: jaxloss.smooth_labels(jax.nn.softmax(t), 0.1), "x"),
    "sigmoid_binary_cross_entropy": (
        lambda a, b: jaxloss.sigmoid_binary_cross_entropy(a, jax.nn.sigmoid(b)), "xx"),
    "binary_cross_entropy_with_logits": (
        lambda a, b: jaxloss.binary_cross_entropy_with_logits(
            a, jax.nn.sigmoid(b), pos_weight=W, reduction="mean"), "xx"),
    "sigmoid_focal_loss": (
        lambda a, b: jaxloss.sigmoid_focal_loss(a, jax.nn.sigmoid(b), alpha=0.25), "xx"),
    "softmax_kl_divergence": (lambda s, t: jaxloss.softmax_kl_divergence(
        s, t, temperature=2.0, beta=0.3, reduction="mean"), "xx"),
    "accuracy": (lambda x, y: jaxloss.accuracy(x, y, k=2), "xy"),
    "perplexity": (lambda x: jaxloss.perplexity(jnp.mean(x * x, -1), 2.0), "x"),
    "linear_cross_entropy": (lambda h, y: jaxloss.linear_cross_entropy(h, LCE_W, y), "xy"),
}  # fmt: skip


def test_every_public_function_is_exported_here():
    assert set(CASES) == set(jaxloss.__all__)


@pytest.mark.parametrize("mode", ["forward", "grad"])
@pytest.mark.parametrize("name", list(CASES))
def test_symbolic_batch_export(name, mode):
    f, kinds = CASES[name]
    (b,) = export.symbolic_shape("b")
    x_spec = jax.ShapeDtypeStruct((b, K), jnp.float32)
    y_spec = jax.ShapeDtypeStruct((b,), jnp.int32)
    specs = [x_spec if k == "x" else y_spec for k in kinds]
    g = f if mode == "forward" else jax.grad(lambda a, *r: jnp.sum(f(a, *r)))
    exported = export.export(jax.jit(g), platforms=("cpu", "tpu", "cuda"))(*specs)
    assert exported.platforms == ("cpu", "tpu", "cuda")
    rng = np.random.default_rng(0)
    for n in (3, 8):
        args = [
            jnp.asarray(rng.normal(size=(n, K)), jnp.float32) if k == "x"
            else jnp.asarray(rng.integers(0, K, size=n), jnp.int32)
            for k in kinds
        ]  # fmt: skip
        np.testing.assert_allclose(exported.call(*args), g(*args), rtol=1e-6, atol=1e-7)


LCE_OPTIONS = {
    "ignore_index": 3,
    "label_smoothing": 0.1,
    "class_weights": np.linspace(0.5, 2.0, V).astype(np.float32),
    "bias": np.linspace(-1.0, 1.0, V).astype(np.float32),
    "z_loss": 1e-3,
    "logit_softcap": 5.0,
}


@pytest.mark.parametrize(
    ("reduction", "chunk_size", "options"),
    [("none", None, {}), ("mean", 4, LCE_OPTIONS), ("sum", 8, {}), ("none", 4, LCE_OPTIONS)],
)
def test_linear_cross_entropy_symbolic_tokens(reduction, chunk_size, options):
    """Value and gradients (hidden and weight) of the export, against the concrete call, on
    token counts below, at and above the chunk (the export pads to a multiple of it)."""

    def f(h, w, y):
        out = jaxloss.linear_cross_entropy(
            h, w, y, reduction=reduction, chunk_size=chunk_size, **options
        )
        return jnp.sum(jnp.square(out))  # squared: the per-token cotangents differ

    g = jax.value_and_grad(f, argnums=(0, 1))
    (b,) = export.symbolic_shape("b")
    specs = (
        jax.ShapeDtypeStruct((b, K), jnp.float32),
        jax.ShapeDtypeStruct((K, V), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )
    exported = export.export(jax.jit(g), platforms=("cpu", "tpu", "cuda"))(*specs)
    rng = np.random.default_rng(0)
    for n in (3, 8, 13):
        h = jnp.asarray(rng.normal(size=(n, K)), jnp.float32)
        y = jnp.asarray(rng.integers(0, V, size=n), jnp.int32)
        got, want = exported.call(h, LCE_W, y), g(h, LCE_W, y)
        for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6, err_msg=f"n={n}")


def test_linear_cross_entropy_symbolic_tokens_with_a_mesh_is_refused():
    mesh = jax.make_mesh((1, 1), ("data", "model"))
    (b,) = export.symbolic_shape("b")
    f = jax.jit(lambda h, y: jaxloss.linear_cross_entropy(h, LCE_W, y, mesh=mesh))
    specs = (jax.ShapeDtypeStruct((b, K), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.int32))
    with pytest.raises(ValueError, match="`mesh` needs a concrete number of tokens"):
        export.export(f, platforms=("cpu",))(*specs)
