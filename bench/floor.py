"""How much of a value_and_grad is only writing the gradient: the floor under any implementation.

    python -m bench.floor [--shapes lm-32k vocab-128k] [--rounds 7]

`jax.jit(value_and_grad(loss))(logits)` returns its gradient in a new array the size of the
logits. This times, interleaved in one process, Optax's and jaxloss's value_and_grad of the summed
cross-entropy against two plain passes over the same float32 logits: `x * 2` (read them, write a
new array of their size: the least a gradient costs) and a row max (read only). Under glibc
malloc a new array of more than 32 MiB is fresh memory, page-faulted as it is first written,
so `x * 2` runs far below the memory bandwidth; with tcmalloc (`LD_PRELOAD`) it does not.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxloss
from bench import shapes as shape_table
from bench.impls import Prepared
from bench.runner import interleave


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["lm-32k", "vocab-128k"])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    for shape in shape_table.get(args.shapes):
        x = jax.random.normal(jax.random.key(0), (shape.batch, shape.classes), jnp.float32) * 3
        y = jax.random.randint(jax.random.key(1), (shape.batch,), 0, shape.classes)

        def optax_loss(x, y=y):
            return optax.softmax_cross_entropy_with_integer_labels(x, y).sum()

        def jaxloss_loss(x, y=y):
            return jaxloss.cross_entropy(x, y, reduction="sum")

        fns = {
            "optax": jax.jit(jax.value_and_grad(optax_loss)),
            "jaxloss": jax.jit(jax.value_and_grad(jaxloss_loss)),
            "write x*2": jax.jit(lambda x: x * 2.0),
            "read max": jax.jit(lambda x: jnp.max(x, axis=-1)),
        }
        prepared = [
            Prepared(name, lambda f=f, x=x: jax.block_until_ready(f(x))) for name, f in fns.items()
        ]
        times = interleave(prepared, args.rounds, args.rounds, float("inf"))["times"]
        med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
        cells = "  ".join(f"{k} {v:.1f} ms" for k, v in med.items())
        print(
            f"{shape.label} float32 value_and_grad: {cells} | jaxloss/optax "
            f"{med['jaxloss'] / med['optax']:.2f}, write x*2/optax "
            f"{med['write x*2'] / med['optax']:.2f}",
            flush=True,
        )
        del x
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
