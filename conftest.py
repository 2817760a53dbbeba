"""Test-session settings shared by the tests and the doctests."""

import numpy as np

# Doctests print arrays to 4 decimals, as the docstrings show them.
np.set_printoptions(precision=4, suppress=True)
