"""pytest-benchmark cases: `pytest bench --benchmark-only [--bench-set quick|full]`."""

from __future__ import annotations

import pytest

from bench import shapes


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-set",
        choices=("quick", "full"),
        default="quick",
        help="jaxloss benchmarks: the reduced set (default) or every shape in bench/shapes.py",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    from bench.impls import IMPLS

    names = shapes.QUICK if metafunc.config.getoption("--bench-set") == "quick" else shapes.FULL
    cases, ids = [], []
    for s in shapes.get(list(names)):
        for dtype in shapes.DTYPES:
            for mode in shapes.MODES:
                for impl in IMPLS:
                    cases.append((s, dtype, mode, impl))
                    ids.append(f"{s.label}-{dtype}-{mode}-{impl}")
    metafunc.parametrize("case", cases, ids=ids)
