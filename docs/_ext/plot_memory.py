"""Draw docs/img/large_vocab_memory.png: compiled memory of the fused and unfused losses.

    python docs/_ext/plot_memory.py

For each number of tokens, `value_and_grad` (w.r.t. hidden and weight) of the mean loss is
lowered from `jax.ShapeDtypeStruct`s and compiled, and `memory_analysis()` gives its arguments,
outputs and temporaries. Nothing is allocated or run, so the figures are the same on any CPU
and take seconds; they are the ones docs/large-vocabularies.md prints for three sizes.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import jaxloss

V, D = 131072, 1024
TOKENS = (512, 1024, 2048, 4096, 8192, 16384)
OUT = Path(__file__).resolve().parent.parent / "img" / "large_vocab_memory.png"


def compiled_gib(loss_fn, n: int) -> tuple[float, float]:
    """(temporaries, arguments + outputs + temporaries - aliased) in GiB."""
    args = (
        jax.ShapeDtypeStruct((n, D), jnp.float32),
        jax.ShapeDtypeStruct((D, V), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )
    m = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1))).lower(*args).compile()
    m = m.memory_analysis()
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return m.temp_size_in_bytes / 2**30, total / 2**30


def main() -> None:
    impls = {
        "unfused: cross_entropy(h @ W, y)": lambda h, w, y: jaxloss.cross_entropy(
            h @ w, y, reduction="mean"
        ),
        "fused: linear_cross_entropy(h, W, y)": lambda h, w, y: jaxloss.linear_cross_entropy(
            h, w, y, reduction="mean"
        ),
    }
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for (label, fn), colour in zip(impls.items(), ("tab:red", "tab:blue"), strict=True):
        figures = [compiled_gib(fn, n) for n in TOKENS]
        ax.plot(TOKENS, [a for _, a in figures], "o-", color=colour, label=f"{label}: total")
        ax.plot(TOKENS, [t for t, _ in figures], "s--", color=colour, label=f"{label}: temporaries")
        print(label, [f"{a:.2f}" for _, a in figures])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(TOKENS, [str(n) for n in TOKENS])
    ticks = (0.125, 0.25, 0.5, 1, 2, 4, 8, 16)
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("tokens N")
    ax.set_ylabel("compiled memory (GiB)")
    ax.set_title(f"value_and_grad of the mean loss, float32, D = {D}, V = {V}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
