"""Which implementation of a kernel runs: the portable one, or the one tuned for XLA:CPU.

Every kernel has a portable implementation (what GPU and TPU compile, and the formula as
written) and may have an XLA:CPU one (`jaxloss._xla_cpu`). `dispatch` picks between them with
`jax.lax.platform_dependent`, so the choice is made when the program is lowered for a platform,
not when it is traced: a function jitted here and compiled for a TPU (or exported for several
platforms) gets the portable kernel. XLA removes the branch that is not taken.

Tests pin one implementation with `implementation("portable")` or
`implementation("xla_cpu", config)`, which makes `dispatch` trace only that one (the choice is
read at trace time: build a fresh jitted function inside the block).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax

from jaxloss._xla_cpu import CONFIG, CpuConfig

IMPLEMENTATIONS = ("portable", "xla_cpu")

_state = threading.local()


@contextlib.contextmanager
def implementation(name: str, config: CpuConfig | None = None) -> Iterator[None]:
    """Trace only the `name` implementation inside the block (`config` for "xla_cpu")."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")
    old = getattr(_state, "forced", None)
    _state.forced = (name, config or CONFIG)
    try:
        yield
    finally:
        _state.forced = old


def dispatch(portable: Callable, xla_cpu: Callable, *args: Any) -> Any:
    """`portable(*args)` on every platform but CPU, `xla_cpu(config, *args)` on CPU."""
    forced = getattr(_state, "forced", None)
    if forced is not None:
        name, config = forced
        return portable(*args) if name == "portable" else xla_cpu(config, *args)
    return jax.lax.platform_dependent(
        *args, cpu=lambda *a: xla_cpu(CONFIG, *a), default=lambda *a: portable(*a)
    )
