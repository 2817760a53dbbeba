"""Plumbing for examples/mnist.py that a reader of the training script can skip.

* The command line: argument types that refuse nonsense at parsing, a help formatter that
  shows every default, and the multi-process flags.
* Several processes: starting ``jax.distributed`` and feeding each process's rows of a batch.
* Outputs: checking the output folder before training; writing files atomically (a unique
  temporary file in the same folder, then ``os.replace``), so that a reader, or a second run
  writing into the same folder, never sees half a file; and ``Outputs``, which keeps the
  metrics in memory when a write fails and writes them at the next chance. ``metrics.json`` is
  strict JSON: a NaN or infinity (a diverged run) is written as ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import mnist_data
import mnist_plot
import numpy as np

# --------------------------------------------------------------------------------------------
# Command line and several processes


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: ...)" to every flag whose default is a value; None is explained."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default is not None and action.default is not False  # 0 is shown
        if shown and action.default != argparse.SUPPRESS and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0: a learning rate of NaN, inf, 0 or below trains nothing."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number > 0")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        hint = f" (a fraction: {value / 100:g} for {text}%)" if 1 < value <= 100 else ""
        raise argparse.ArgumentTypeError(f"{text} is not a number in [0, 1]{hint}")
    return value


def smoothing(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number in [0, 1)")
    return value


MAX_SEED = 2**32 - 1


def seed(text: str) -> int:
    """0 to 2**32 - 1: jax.random.key keeps 32 bits (x64 off), so 2**32 + s would repeat s."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text} is not an integer from 0 to {MAX_SEED}")
    return value


def env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    multi = parser.add_argument_group(
        "several processes",
        "Under SLURM or Open MPI, or with JAX_COORDINATOR_ADDRESS set, jax.distributed\n"
        "starts by itself; each process feeds its rows of every batch, process 0 writes.",
    )
    multi.add_argument(
        "--distributed",
        choices=["auto", "on", "off"],
        default="auto",
        help="call jax.distributed.initialize: 'auto' when a multi-process launch is "
        "detected, 'on' always (Cloud TPU pods)",
    )
    multi.add_argument(
        "--coordinator-address",
        default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
        help="host:port of process 0, for a launch by hand "
        f"(default: $JAX_COORDINATOR_ADDRESS, {_now('JAX_COORDINATOR_ADDRESS')})",
    )
    for flag, env, what in (
        ("--num-processes", "JAX_NUM_PROCESSES", "how many processes, for a launch by hand"),
        ("--process-id", "JAX_PROCESS_ID", "this process, 0 to --num-processes - 1"),
    ):
        multi.add_argument(
            flag, type=int, default=env_int(env), help=f"{what} (default: ${env}, {_now(env)})"
        )


def _now(env: str) -> str:
    return f"now {os.environ[env]}" if os.environ.get(env) else "unset"


def maybe_initialize_distributed(args: argparse.Namespace) -> None:
    """Calls ``jax.distributed.initialize`` if asked to, or if launched as several processes."""
    launched = args.coordinator_address or (args.num_processes or 1) > 1
    launched = launched or any(
        (env_int(v) or 1) > 1 for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
    )
    if args.distributed == "on" or (args.distributed == "auto" and launched):
        # Whatever is not given here, JAX detects (SLURM, Open MPI, Cloud TPU, Kubernetes).
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )


def process_rows(global_size: int) -> slice:
    """This process's rows of a global batch of ``global_size`` rows."""
    per = global_size // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def global_arrays(sharding, *local: np.ndarray) -> tuple[jax.Array, ...]:
    """One global array per local slice: each process passes its own rows."""
    return tuple(jax.make_array_from_process_local_data(sharding, a) for a in local)


def padded_batches(sharding, images: np.ndarray, labels: np.ndarray, size: int = 1024):
    """Global ``(images, labels, mask)`` batches covering every row once, for evaluation.

    A whole number of rows per device; the last batch is padded and its padding masked out,
    so that one compiled shape serves every batch.
    """
    n, devices = images.shape[0], jax.device_count()
    batch = -(-min(size, n) // devices) * devices
    rows = process_rows(batch)
    for start in range(0, n, batch):
        x, y = images[start : start + batch], labels[start : start + batch]
        mask = np.arange(batch) < x.shape[0]
        x = np.concatenate([x, np.zeros((batch - x.shape[0], *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros(batch - y.shape[0], y.dtype)])
        yield global_arrays(sharding, x[rows], y[rows], mask[rows])


# --------------------------------------------------------------------------------------------
# Outputs


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


def prepare_output_dir(path: str | os.PathLike[str]) -> Path:
    """Creates ``path`` and proves it writable, before hours of training depend on it."""
    path = Path(path)
    try:
        mnist_data.ensure_writable(path)
    except OSError as err:
        raise OutputDirError(
            f"cannot write to the output folder {path}: {err.strerror or err}"
        ) from err
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a unique temporary file beside it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0o600 would hide the results from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(finite_or_none(data), indent=2, allow_nan=False)
    write_atomic(path, (text + "\n").encode())


class Outputs:
    """``metrics.json`` and ``curves.png`` in ``folder`` (None: this process writes nothing).

    ``save`` writes both; when that fails (a full disk, a folder removed or made read-only
    during the run) it returns why, the metrics stay in memory with the caller, and the next
    ``save`` tries again.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.json = folder / "metrics.json" if folder else None
        self.png = folder / "curves.png" if folder else None

    def save(self, metrics: dict) -> str | None:
        """Writes both files; returns None, or one line saying why they could not be written."""
        if self.json is None or self.png is None:
            return None
        try:
            write_json(self.json, metrics)
            write_atomic(self.png, mnist_plot.curves_png(metrics))
        except OSError as err:
            return f"cannot write into {self.folder}: {err.strerror or err}"
        return None


# --------------------------------------------------------------------------------------------
# What a run prints and records


_KINDS = ("running", "train", "test")  # the three measurements of each epoch


def run_info(args: argparse.Namespace, ds, train_examples: int, train_eval_examples: int) -> dict:
    """The head of metrics.json: the flags, the data and the devices of the run."""
    dataset = {"name": ds.name, "title": ds.title, "source": ds.source}
    dataset |= {"train_examples": train_examples, "train_eval_examples": train_eval_examples}
    devices = {"count": jax.device_count(), "platform": jax.default_backend()}
    return {
        "config": vars(args),
        "dataset": dataset | {"test_examples": int(ds.x_test.shape[0])},
        "devices": devices | {"processes": jax.process_count()},
    }


def start_lines(metrics: dict, steps_per_epoch: int) -> list[str]:
    """What is trained on what, then the header of the table of epochs."""
    cfg, ds, dev = metrics["config"], metrics["dataset"], metrics["devices"]
    compiled = metrics["timing"]["compile_seconds"]
    return [
        f"Training {cfg['model']} on {ds['title']}: {ds['train_examples']} train / "
        f"{ds['test_examples']} test images, {steps_per_epoch} steps/epoch",
        f"with {cfg['loss']} cross-entropy on {dev['count']} {dev['platform']} device(s), "
        f"{dev['processes']} process(es); compiled in {compiled:.1f} s",
        " | ".join(["  epoch", *(f"{k + ' loss':>12} {'acc':>6}" for k in _KINDS), "time"]),
    ]


def epoch_line(metrics: dict) -> str:
    """The last epoch's row of the table: the three measurements and its time."""
    row, epochs = metrics["epochs"][-1], metrics["config"]["epochs"]
    timing = metrics["timing"]
    cells = [f"{row['epoch']:>3}/{epochs:<3}"]
    for kind in _KINDS:
        cells.append(f"{row[f'{kind}_loss']:>12.4f} {row[f'{kind}_accuracy']:6.2%}")
    cells.append(f"{timing['epoch_seconds'][-1]:.1f} s")  # CPU seconds: in metrics.json
    return " | ".join(cells)


def params_checksum(params) -> list[float]:
    """Sum and sum of squares of every parameter: a cheap fingerprint to compare runs."""
    leaves = [np.asarray(v, np.float64) for v in jax.tree.leaves(jax.device_get(params))]
    return [float(sum(v.sum() for v in leaves)), float(sum((v * v).sum() for v in leaves))]
