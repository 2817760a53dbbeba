"""pytest-benchmark cases: `pytest bench --benchmark-only [--bench-set quick|full|linear-ce]`."""

from __future__ import annotations

import pytest

from bench import shapes


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-set",
        choices=("quick", "full", "linear-ce"),
        default="quick",
        help="jaxloss benchmarks: the reduced set (default), every shape of bench/shapes.py's "
        "FULL, or the fused linear cross-entropy's (the model step only)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    from bench.impls import IMPLS, LINEAR_ONLY

    chosen = metafunc.config.getoption("--bench-set")
    names = {"quick": shapes.QUICK, "full": shapes.FULL, "linear-ce": shapes.LINEAR_FULL}[chosen]
    modes = ("model_step",) if chosen == "linear-ce" else shapes.MODES
    cases = [
        (s, dtype, mode, impl)
        for s in shapes.get(list(names))
        for dtype in shapes.DTYPES
        for mode in modes
        for impl in IMPLS
        if mode == "model_step" or impl not in LINEAR_ONLY
    ]
    ids = [f"{s.label}-{dtype}-{mode}-{impl}" for s, dtype, mode, impl in cases]
    metafunc.parametrize("case", cases, ids=ids)
