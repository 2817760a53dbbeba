"""Which implementation of a kernel runs: the portable one, or one tuned for XLA:CPU or XLA:GPU.

Every kernel has a portable implementation (what TPU compiles, and the formula as written) and
may have an XLA:CPU one (`jaxloss._xla_cpu`) and an XLA:GPU one (`jaxloss._xla_gpu`, row
statistics only). `dispatch` picks between them with
`jax.lax.platform_dependent`, so the choice is made when the program is lowered for a platform,
not when it is traced: a function jitted here and compiled for a TPU (or exported for several
platforms) gets the portable kernel. XLA removes the branch that is not taken. `recompute` makes
the same choice for the optimization barrier before a recomputed gradient pass.

Tests and benchmarks pin one implementation with `pinned(fn, "portable")`,
`pinned(fn, "xla_cpu", config)` or `pinned(fn, "xla_gpu", config)`: a new function, so a `jax.jit`
of it has its own trace cache, and `dispatch` traces only that implementation while it runs
(transform inside it: `pinned(jax.grad(f), ...)`, not `jax.grad(pinned(f, ...))` of a jitted
`f`, whose rules would be traced later). Pinning a kernel the function does not have is an error.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jaxloss import _xla_cpu, _xla_gpu

IMPLEMENTATIONS = ("portable", "xla_cpu", "xla_gpu")
_DEFAULT_CONFIGS = {"portable": None, "xla_cpu": _xla_cpu.CONFIG, "xla_gpu": _xla_gpu.CONFIG}

_state = threading.local()


class _Pin(NamedTuple):
    name: str
    config: Any
    used: list[bool]  # whether a dispatch had this implementation


def pinned(fn: Callable, name: str, config: Any = None) -> Callable:
    """`fn` with only the `name` implementation traced, with `config` (a `CpuConfig` or
    `GpuConfig`; the default one if None). A new function on every call.

    Raises ValueError when `fn` traces no kernel of that implementation.
    """
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")
    pin = _Pin(name, config or _DEFAULT_CONFIGS[name], [name == "portable"])

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        old = getattr(_state, "pin", None)
        _state.pin = pin
        try:
            out = fn(*args, **kwargs)
        finally:
            _state.pin = old
        if not pin.used[0]:
            raise ValueError(f"{getattr(fn, '__name__', fn)!s} has no {name} kernel")
        return out

    return run


def dispatch(
    portable: Callable,
    *args: Any,
    xla_cpu: Callable | None = None,
    xla_gpu: Callable | None = None,
) -> Any:
    """`portable(*args)` by default; on CPU `xla_cpu(config, *args)` and on CUDA
    `xla_gpu(config, *args)`, where those kernels are given."""
    kernels = {"xla_cpu": (xla_cpu, "cpu"), "xla_gpu": (xla_gpu, "cuda")}
    pin = getattr(_state, "pin", None)
    if pin is not None:
        kernel = kernels.get(pin.name, (None, None))[0]
        if kernel is None:
            return portable(*args)
        pin.used[0] = True
        return kernel(pin.config, *args)
    branches = {
        platform: functools.partial(kernel, _DEFAULT_CONFIGS[name])
        for name, (kernel, platform) in kernels.items()
        if kernel is not None
    }
    return jax.lax.platform_dependent(*args, default=portable, **branches)


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
        *args,
        xla_cpu=lambda cfg, *a: jax.checkpoint(fn, prevent_cse=cfg.tangent_barrier)(*a),
    )
