"""The suite's cases under pytest-benchmark, one group per (shape, dtype, mode).

pytest-benchmark runs one implementation at a time; `python -m bench` interleaves them and adds
the machine limits, memory and error figures.
"""

from __future__ import annotations

import functools

import pytest

from bench import impls


@functools.lru_cache(maxsize=1)  # parametrisation keeps a shape's cases together
def _inputs(name: str, batch: int, classes: int, hidden: int, dtype: str) -> impls.Inputs:
    return impls.make_inputs(batch, classes, hidden, dtype)


def test_cross_entropy(benchmark, case) -> None:
    shape, dtype, mode, impl = case
    inputs = _inputs(shape.name, shape.batch, shape.classes, shape.hidden, dtype)
    try:
        prepared = impls.prepare(impl, mode, inputs)
    except impls.Unavailable as e:
        pytest.skip(str(e))
    benchmark.group = f"{shape.label} {dtype} {mode}"
    benchmark.extra_info.update(
        shape=shape.name,
        dtype=dtype,
        mode=mode,
        impl=impl,
        lower_s=prepared.lower_s,
        compile_s=prepared.compile_s,
        memory=prepared.memory,
    )
    prepared.call()  # warm up outside the timed rounds
    benchmark(prepared.call)
