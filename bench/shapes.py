"""The named table of benchmark shapes, shared by the benchmarks and the tests.

Dependency-free on purpose (no JAX, no NumPy): tests and tools import it without paying for a
backend. Each shape is a (batch, classes) pair for the logits, named after the model it stands
for, plus the hidden size used by the "model step" mode, where the logits are `h @ W` with
`h: (batch, hidden)` and `W: (hidden, classes)`.

The hidden sizes of the language-model rows (128) are scaled down from the real models (4096 and
up) so that one model step stays within seconds on a CPU: with a small hidden size the matmuls
cost about as much as the loss, the regime where the loss's own passes over the logits still show.
"""

from __future__ import annotations

from typing import NamedTuple


class Shape(NamedTuple):
    name: str
    batch: int
    classes: int
    hidden: int
    note: str

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.classes}"

    @property
    def elements(self) -> int:
        return self.batch * self.classes


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("mnist", 128, 10, 784, "MNIST, a linear classifier on flattened 28x28 images"),
        Shape("imagenet", 1024, 1000, 2048, "ImageNet-1k head on ResNet-50 features"),
        Shape("lm-32k-512", 512, 32000, 128, "language model, Llama-2 vocabulary, 512 tokens"),
        Shape("lm-32k", 4096, 32000, 128, "language model, Llama-2 vocabulary"),
        Shape("lm-32k-8k", 8192, 32000, 128, "language model, Llama-2 vocabulary, 8k tokens"),
        Shape("vocab-128k", 2048, 131072, 128, "large vocabulary, 2^17 classes"),
        Shape("llama3-128k", 4096, 128256, 128, "large vocabulary, Llama-3 tokenizer"),
        # The fused linear cross-entropy (`--linear-ce`): hidden sizes of real models.
        Shape("lce-8k", 1024, 8192, 256, "linear cross-entropy, small"),
        Shape("lce-32k", 4096, 32768, 1024, "linear cross-entropy, 32K vocabulary"),
        Shape("lce-128k", 8192, 131072, 1024, "linear cross-entropy, 128K vocabulary"),
    )
}

#: The reduced set (`--quick`, CI, device check): small and medium shapes only.
QUICK: tuple[str, ...] = ("mnist", "imagenet", "lm-32k-512")
#: The full set: the shapes the issue names (the medium `lm-32k-512` is only in the quick set).
FULL: tuple[str, ...] = ("mnist", "imagenet", "lm-32k", "lm-32k-8k", "vocab-128k", "llama3-128k")

#: `--linear-ce [--quick]`: the model step only, at the hidden sizes of real models.
LINEAR_QUICK: tuple[str, ...] = ("lce-8k",)
LINEAR_FULL: tuple[str, ...] = ("lce-32k", "lce-128k")

DTYPES: tuple[str, ...] = ("float32", "bfloat16")

#: On a CPU the model step of the larger shapes is minutes of matmul per case, so the full set
#: runs it only up to this many logits unless asked (`--model-step-all`); accelerators run all.
MODEL_STEP_CPU_MAX_ELEMENTS = 4096 * 32000

#: forward: the per-example loss; value_and_grad: the summed loss and its gradient w.r.t. the
#: logits; model_step: logits = h @ W inside the same jitted function, gradient w.r.t. h and W.
MODES: tuple[str, ...] = ("forward", "value_and_grad", "model_step")


def get(names: tuple[str, ...] | list[str]) -> list[Shape]:
    """Return the shapes with these names, in the table's order, naming any unknown one."""
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise KeyError(f"unknown shape(s) {unknown}; known: {list(SHAPES)}")
    return [s for s in SHAPES.values() if s.name in names]
