"""Which implementation of a kernel runs: the portable one, or one tuned for XLA:CPU or XLA:GPU.

Every kernel has a portable implementation (what TPU compiles, and the formula as written) and
may have an XLA:CPU one (`jaxloss._xla_cpu`) and an XLA:GPU one (`jaxloss._xla_gpu`, row
statistics only). `dispatch` picks between them with
`jax.lax.platform_dependent`, so the choice is made when the program is lowered for a platform,
not when it is traced: a function jitted here and compiled for a TPU (or exported for several
platforms) gets the portable kernel. XLA removes the branch that is not taken. `recompute` makes
the same choice for the optimization barrier before a recomputed gradient pass.

Tests pin one implementation with `implementation("portable")`,
`implementation("xla_cpu", config)` or `implementation("xla_gpu", config)`, which makes
`dispatch` trace only that one (the choice is read at trace time: build a fresh jitted function
inside the block).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax

from jaxloss import _xla_cpu, _xla_gpu

IMPLEMENTATIONS = ("portable", "xla_cpu", "xla_gpu")
_DEFAULT_CONFIGS = {"portable": None, "xla_cpu": _xla_cpu.CONFIG, "xla_gpu": _xla_gpu.CONFIG}

_state = threading.local()


@contextlib.contextmanager
def implementation(name: str, config: Any = None) -> Iterator[None]:
    """Trace only the `name` implementation inside the block, with `config` (a `CpuConfig` or
    `GpuConfig`; the default one if None)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")
    old = getattr(_state, "forced", None)
    _state.forced = (name, config or _DEFAULT_CONFIGS[name])
    try:
        yield
    finally:
        _state.forced = old


def dispatch(portable: Callable, xla_cpu: Callable, *args: Any, xla_gpu: Callable | None = None):
    """`portable(*args)` by default, `xla_cpu(config, *args)` on CPU, and on CUDA
    `xla_gpu(config, *args)` where a GPU kernel is given."""
    forced = getattr(_state, "forced", None)
    if forced is not None:
        name, config = forced
        if name == "xla_cpu":
            return xla_cpu(config, *args)
        if name == "xla_gpu" and xla_gpu is not None:
            return xla_gpu(config, *args)
        return portable(*args)
    branches = {"cpu": lambda *a: xla_cpu(_xla_cpu.CONFIG, *a)}
    if xla_gpu is not None:
        branches["cuda"] = lambda *a: xla_gpu(_xla_gpu.CONFIG, *a)
    return jax.lax.platform_dependent(*args, default=lambda *a: portable(*a), **branches)


def recompute(fn: Callable, *args: Any) -> Any:
    """`jax.checkpoint(fn)(*args)`: the backward pass recomputes `fn`'s `[..., K]` intermediates
    from its arguments instead of keeping them.

    Without an optimization barrier (``prevent_cse=False``) XLA may read the logits once for both
    the forward statistics and the gradient's recomputation: on TPU and GPU that saves a whole
    pass (`log_softmax` value_and_grad at 4096×32000: 4.0·B to 3.0·B). XLA:CPU keeps the
    barrier when `CpuConfig.tangent_barrier` says so.
    """
    return dispatch(
        lambda *a: jax.checkpoint(fn, prevent_cse=False)(*a),
        lambda cfg, *a: jax.checkpoint(fn, prevent_cse=cfg.tangent_barrier)(*a),
        *args,
    )
