"""The suite's cases under pytest-benchmark, one group per (shape, dtype, mode).

The same preparation (`bench.impls.prepare`) and sample size (`bench.runner.calls_per_sample`)
as `python -m bench`; pytest-benchmark runs one implementation at a time, where `python -m bench`
interleaves them and adds the reference rates, memory and error figures.
"""

from __future__ import annotations

import functools
import time

import pytest

from bench import impls
from bench.runner import calls_per_sample


@functools.lru_cache(maxsize=1)  # parametrisation keeps a shape's cases together
def _inputs(batch: int, classes: int, hidden: int, dtype: str) -> impls.Inputs:
    return impls.make_inputs(batch, classes, hidden, dtype)


def test_cross_entropy(benchmark, case) -> None:
    shape, dtype, mode, impl = case
    try:
        prepared = impls.prepare(impl, mode, _inputs(*shape[1:4], dtype))
    except impls.Unavailable as e:
        pytest.skip(str(e))
    benchmark.group = f"{shape.label} {dtype} {mode}"
    memory, compile_s = prepared.memory, prepared.compile_s
    benchmark.extra_info.update(shape=shape.name, dtype=dtype, mode=mode, impl=impl)
    benchmark.extra_info.update(memory=memory, compile_s=compile_s)
    t0 = time.perf_counter()
    prepared.call()  # the warm-up outside the timed rounds, as in python -m bench
    number = calls_per_sample(prepared.call, time.perf_counter() - t0)
    benchmark.pedantic(prepared.call, iterations=number, rounds=5)
