"""Plumbing for examples/mnist.py that a reader of the training script can skip.

* The command line: a help formatter that shows every default, and the multi-process flags.
* Several processes: starting ``jax.distributed`` and feeding each process's rows of a batch.
* Outputs: checking the output folder before training, and writing files atomically (a unique
  temporary file in the same folder, then ``os.replace``), so that a reader, or a second run
  writing into the same folder, never sees half a file. ``metrics.json`` is strict JSON: a
  NaN or infinity (a diverged run) is written as ``null``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import mnist_data
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


def write_curves(path: Path, metrics: dict) -> None:
    """Loss and accuracy per epoch, each curve labelled with what exactly it measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cfg, ds = metrics["epochs"], metrics["config"], metrics["dataset"]
    epochs = [r["epoch"] for r in rows]
    smoothing = f", label smoothing {cfg['label_smoothing']}" if cfg["label_smoothing"] else ""
    curves = (
        ("running", "^:", f"train: running mean while training (dropout on{smoothing})"),
        ("train", "o-", f"train: {ds['train_eval_examples']:,} fixed examples after each epoch"),
        ("test", "s-", f"test: all {ds['test_examples']:,} examples"),
    )
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    for key, style, label in curves:
        ax_loss.plot(epochs, [r[f"{key}_loss"] for r in rows], style, label=label)
        ax_acc.plot(epochs, [100 * r[f"{key}_accuracy"] for r in rows], style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (nats)", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, len(epochs) + 0.5)
        if len(epochs) <= 15:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(loc="outside lower center", ncols=3, fontsize="small")
    loss = "jaxloss.cross_entropy" if cfg["loss"] == "jaxloss" else "optax cross-entropy"
    fig.suptitle(
        f"{ds['title']}: {cfg['model'].upper()} trained on {ds['train_examples']:,} images with "
        f"{loss}, Adam {cfg['learning_rate']:g} ({cfg['schedule']}), batch {cfg['batch_size']}"
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
