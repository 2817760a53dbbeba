"""The jaxloss benchmark suite: `python -m bench` or `pytest bench --benchmark-only`.

Outside the default test run on purpose. See `bench/runner.py` for the command line,
`bench/shapes.py` for the cases.
"""
