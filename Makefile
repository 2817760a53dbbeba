# The two commands: `make demo` runs the main job, `make test` runs the checks.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-all test-floor lint install docs bench bench-quick aot-env \
	bench-aot

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,examples,docs]'
	touch $(STAMP)

# What the demo needs and no more (no torch, no playwright: those are the test and docs extras),
# with pip's progress shown: on a fresh machine this is the long part of the first `make demo`.
# A venv that `make install` filled already has it.
DEMO_STAMP := $(VENV)/.installed-examples
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing jaxloss and the examples' dependencies (jax, flax, optax, matplotlib,"
	@echo "scikit-learn, tqdm, pooch, requests; about 0.9 GB once installed) into $(VENV)"
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -e '.[examples]'
	touch $(DEMO_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright jaxloss

# Tests in parallel over the machine's cores (pytest-xdist).
# `make test`: the fast tier (every public function on every kernel, options, edges, errors,
# parity, doctests), minutes. `make test-all`: everything, the slow tier too (AOT compiles,
# sharding, export, Hessians, f16, the docs site, the example); CI runs it. The slow tier sends
# each file to one worker (`--dist loadfile`): a file's module-scoped work (the AOT compiles,
# the docs site's build, the benchmark run) then happens once. (`--dist loadgroup` with
# `xdist_group` marks does not group under pytest 9.2 with pytest-xdist 3.8: both workers ran
# the AOT compiles.)
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/pytest -q -n $(PYTEST_WORKERS)
test: lint
	$(PYTEST) --dist load -m "not slow"

test-slow: $(STAMP)
	$(PYTEST) --dist loadfile -m slow

test-all: test test-slow

# The fast tier again on the oldest JAX that pyproject.toml accepts (the `jax>=` bound, read from
# there so the two cannot drift), in a venv of its own: the declared floor is a tested one. The
# examples and docs extras come along because fast tests import them (the MNIST data code, flax,
# griffe); no lint (that is `make test`'s).
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.installed
FLOOR_JAX := $(shell sed -n 's/^ *"jax>=\([0-9.]*\),.*/\1/p' pyproject.toml)

$(FLOOR_STAMP): pyproject.toml
	@test -n "$(FLOOR_JAX)" || { echo "no jax>= bound found in pyproject.toml"; exit 1; }
	$(PY) -m venv $(FLOOR_VENV)
	echo '*' > $(FLOOR_VENV)/.gitignore  # out of git's sight, as Python 3.13's venv does itself
	$(FLOOR_VENV)/bin/pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/pip install -q -e '.[test,examples,docs]' 'jax==$(FLOOR_JAX)' 'jaxlib==$(FLOOR_JAX)'
	touch $(FLOOR_STAMP)

test-floor: $(FLOOR_STAMP)
	$(FLOOR_VENV)/bin/python -c 'import jax; assert jax.__version__ == "$(FLOOR_JAX)", jax.__version__'
	$(FLOOR_VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist load -m "not slow"

# The printed tour, then a short MNIST run (Fashion-MNIST or scikit-learn's digits offline).
demo: $(if $(wildcard $(STAMP)),$(STAMP),$(DEMO_STAMP))
	$(BIN)/python examples/tour.py
	$(BIN)/python examples/mnist.py --demo --output-dir out/mnist-demo

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python -m bench --out bench/out

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick --out bench/out/quick

# Compilers for TPUs and NVIDIA GPUs, used without the devices (bench/aot.py, tests/test_aot.py).
# One venv holds both (libtpu and the CUDA plugin coexist), apart from .venv.
AOT_VENV := .venv-aot
AOT_STAMP := $(AOT_VENV)/.installed
AOT_TARGETS ?= tpu-v5e tpu-v6e h100

$(AOT_STAMP): pyproject.toml
	$(PY) -m venv $(AOT_VENV)
	$(AOT_VENV)/bin/pip install -q --upgrade pip
	$(AOT_VENV)/bin/pip install -q -e '.[aot]'
	touch $(AOT_STAMP)

aot-env: $(AOT_STAMP)

bench-aot: $(AOT_STAMP)
	set -e; for t in $(AOT_TARGETS); do \
	  $(AOT_VENV)/bin/python -m bench --target $$t --out docs/bench/aot; done
