"""The jaxloss benchmark suite: `python -m bench` or `pytest bench --benchmark-only`; outside the
default test run on purpose. `bench/runner.py` has the command line, `bench/shapes.py` the cases.
"""
