"""Test-session settings shared by the tests and the doctests."""

import numpy as np

# Doctests print arrays to 4 decimals, as the docstrings show them.
np.set_printoptions(precision=4, suppress=True)

import jax  # noqa: E402

# Strict: an implicit (B, 1) vs (B,) broadcast is a bug in a loss library; make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Eight simulated CPU devices in every test process, so that the sharding tests run in-process
# (as equinox's do). Set before JAX creates its CPU client; unsharded arrays stay on device 0.
jax.config.update("jax_num_cpu_devices", 8)
