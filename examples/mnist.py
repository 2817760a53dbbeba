"""Train a small classifier on MNIST-like data with jaxloss.cross_entropy, data parallel.

A Flax NNX model (a small CNN, or ``--model mlp``), an Optax optimiser and a jit-compiled
train and eval step. The batch is sharded over a 1-D mesh of all devices and the parameters
are replicated, so the same command runs unchanged on one CPU, on several simulated CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on a GPU or a TPU, and on
several hosts (each feeds its own slice of every global batch). The global batches do not
depend on the number of devices or hosts, so the results agree up to float rounding.

Examples::

    python examples/mnist.py                          # MNIST, 10 epochs, the CNN
    python examples/mnist.py --dataset fashion_mnist  # Fashion-MNIST
    python examples/mnist.py --dataset digits         # scikit-learn's digits, fully offline
    python examples/mnist.py --demo                   # short run on whatever can be had
    python examples/mnist.py --time-losses 15         # step time, jaxloss vs optax loss

At the end the metrics (JSON) and the loss and accuracy curves (PNG) are written to
``--output-dir``, and the last line printed says where.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

import jaxloss

# Importable both as a script (examples/ on sys.path) and from the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_data

DEFAULT_OUTPUT_DIR = "out/mnist"
DEFAULT_EPOCHS = 10
DIGITS_EPOCHS = 30
DEMO_EPOCHS = 2
DIGITS_DEMO_EPOCHS = 15
DEMO_TRAIN_SUBSET = 12_000


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=["mnist", "fashion_mnist", "digits", "auto"],
        default="mnist",
        help="'auto': MNIST if it can be found or downloaded, else Fashion-MNIST if it is "
        "installed, else scikit-learn's digits (default: %(default)s)",
    )
    data.add_argument("--data-dir", help="folder holding the four IDX files (looked at first)")
    data.add_argument(
        "--no-download", action="store_true", help="never touch the network; local files only"
    )
    data.add_argument(
        "--train-subset", type=int, default=None, metavar="N", help="train on N examples only"
    )
    train = p.add_argument_group("training")
    train.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default: {DEFAULT_EPOCHS}, or {DIGITS_EPOCHS} on digits (1437 images an epoch); "
        f"with --demo {DEMO_EPOCHS} and {DIGITS_DEMO_EPOCHS}",
    )
    train.add_argument("--batch-size", type=int, default=128, help="global batch size")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="peak (Adam)")
    train.add_argument(
        "--schedule", choices=["cosine", "constant"], default="cosine", help="learning rate"
    )
    train.add_argument("--label-smoothing", type=float, default=0.0)
    train.add_argument("--loss", choices=["jaxloss", "optax"], default="jaxloss")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps in all"
    )
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument(
        "--min-test-accuracy",
        type=float,
        default=None,
        metavar="A",
        help="exit with status 1 if the final test accuracy (a fraction) is below A",
    )
    misc = p.add_argument_group("modes")
    misc.add_argument(
        "--demo",
        action="store_true",
        help=f"short run: --dataset auto, {DEMO_EPOCHS} epochs on {DEMO_TRAIN_SUBSET} examples "
        f"({DIGITS_DEMO_EPOCHS} on digits); flags given explicitly win",
    )
    misc.add_argument(
        "--time-losses",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead of training, time the train step with each loss, interleaved, ROUNDS "
        "rounds of --time-steps steps each, and print the medians",
    )
    misc.add_argument("--time-steps", type=int, default=10, help=argparse.SUPPRESS)
    misc.add_argument(
        "--distributed",
        choices=["auto", "on", "off"],
        default="auto",
        help="call jax.distributed.initialize: 'auto' does when a multi-process launch is "
        "detected (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI); 'on' also for Cloud TPU pods",
    )
    misc.add_argument(
        "--coordinator-address",
        default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
        help="host:port of process 0, for a hand-made multi-process launch "
        "(default: $JAX_COORDINATOR_ADDRESS; SLURM, Open MPI and TPU pods need none)",
    )
    misc.add_argument(
        "--num-processes", type=int, default=_env_int("JAX_NUM_PROCESSES"), help=argparse.SUPPRESS
    )
    misc.add_argument(
        "--process-id", type=int, default=_env_int("JAX_PROCESS_ID"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.demo:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--dataset" not in given:
            args.dataset = "auto"
        if "--train-subset" not in given:
            args.train_subset = DEMO_TRAIN_SUBSET
    if args.batch_size <= 0 or (args.epochs is not None and args.epochs <= 0):
        p.error("--batch-size and --epochs must be positive")
    if not 0.0 <= args.label_smoothing < 1.0:
        p.error("--label-smoothing must be in [0, 1)")
    return args


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def _multiprocess_launch_detected(args: argparse.Namespace) -> bool:
    if args.coordinator_address or (args.num_processes or 1) > 1:
        return True
    return any((_env_int(v) or 1) > 1 for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


# --------------------------------------------------------------------------------------------
# Models


def max_pool_2x2(x):
    """2×2 max pooling (NHWC, even H and W) as a reshape and a max.

    Same values as ``nnx.max_pool(x, (2, 2), strides=(2, 2))``, but the gradient is a plain
    broadcast instead of reduce_window's select-and-scatter, which XLA:CPU runs slowly: with
    ``nnx.max_pool`` the whole CNN train step took 2.5× as long on a 2-core CPU.
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class CNN(nnx.Module):
    """Two 3×3 conv layers (32, 64 channels) each with 2×2 max pooling, then 128 hidden units."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.dense1 = nnx.Linear(7 * 7 * 64, 128, rngs=rngs)
        self.dense2 = nnx.Linear(128, mnist_data.NUM_CLASSES, rngs=rngs)
        self.dropout = nnx.Dropout(0.3)

    def __call__(self, x, dropout_key=None):
        """Logits for images ``x`` of shape (B, 28, 28); dropout only when given a key."""
        x = max_pool_2x2(jax.nn.relu(self.conv1(x[..., None])))
        x = max_pool_2x2(jax.nn.relu(self.conv2(x)))
        x = jax.nn.relu(self.dense1(x.reshape(x.shape[0], -1)))
        x = self.dropout(x, deterministic=dropout_key is None, rngs=dropout_key)
        return self.dense2(x)


class MLP(nnx.Module):
    """784 → 512 → 256 → 10, ReLU, dropout before the output layer."""

    def __init__(self, rngs: nnx.Rngs):
        self.dense1 = nnx.Linear(28 * 28, 512, rngs=rngs)
        self.dense2 = nnx.Linear(512, 256, rngs=rngs)
        self.dense3 = nnx.Linear(256, mnist_data.NUM_CLASSES, rngs=rngs)
        self.dropout = nnx.Dropout(0.2)

    def __call__(self, x, dropout_key=None):
        x = jax.nn.relu(self.dense1(x.reshape(x.shape[0], -1)))
        x = jax.nn.relu(self.dense2(x))
        x = self.dropout(x, deterministic=dropout_key is None, rngs=dropout_key)
        return self.dense3(x)


def make_model(kind: str, seed: int) -> nnx.Module:
    return {"cnn": CNN, "mlp": MLP}[kind](nnx.Rngs(params=seed))


# --------------------------------------------------------------------------------------------
# Loss


def make_loss(kind: str, label_smoothing: float) -> Callable[[Any, Any], Any]:
    """Per-example cross-entropy from integer labels: jaxloss's, or the optax equivalent."""
    if kind == "jaxloss":

        def loss(logits, labels):
            return jaxloss.cross_entropy(logits, labels, label_smoothing=label_smoothing)

        return loss

    def loss(logits, labels):
        if label_smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
            return optax.softmax_cross_entropy(logits, targets)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    return loss


# --------------------------------------------------------------------------------------------
# Steps


@dataclasses.dataclass
class Trainer:
    """The compiled pieces of a run: mesh, shardings, state and the two steps."""

    mesh: Any
    batch_sharding: Any
    replicated: Any
    params: Any
    opt_state: Any
    train_step: Callable
    eval_step: Callable


def build_trainer(args: argparse.Namespace, total_steps: int, loss_kind: str) -> Trainer:
    # Auto axes: the compiler propagates the batch sharding (the classic data-parallel jit);
    # make_mesh's default, Explicit, would make every reshape of a sharded array spell out
    # its output sharding.
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_model(args.model, args.seed)))
    if args.schedule == "cosine":
        lr = optax.cosine_decay_schedule(args.learning_rate, max(total_steps, 1))
    else:
        lr = args.learning_rate
    tx = optax.adam(lr)

    # Initialised inside jit with a replicated output: every host computes the same values
    # from the seed, with no host-to-device copy of parameters.
    @functools.partial(jax.jit, out_shardings=replicated)
    def init():
        params = nnx.state(make_model(args.model, args.seed))
        return params, tx.init(params)

    params, opt_state = init()
    train_loss = make_loss(loss_kind, args.label_smoothing)
    eval_loss = make_loss(loss_kind, 0.0)
    dropout_base = jax.random.key(args.seed + 1)

    def preprocess(images):
        return images.astype(jnp.float32) / 255.0

    @functools.partial(jax.jit, donate_argnums=(0, 1), out_shardings=replicated)
    def train_step(params, opt_state, images, labels, step):
        dropout_key = jax.random.fold_in(dropout_base, step)

        def objective(params):
            logits = nnx.merge(graphdef, params)(preprocess(images), dropout_key)
            return jnp.mean(train_loss(logits, labels)), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
        return params, opt_state, loss * labels.shape[0], correct

    @functools.partial(jax.jit, out_shardings=replicated)
    def eval_step(params, images, labels, mask):
        logits = nnx.merge(graphdef, params)(preprocess(images))
        losses = jnp.where(mask, eval_loss(logits, labels), 0.0)
        correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask)
        return jnp.sum(losses), correct

    return Trainer(mesh, batch_sharding, replicated, params, opt_state, train_step, eval_step)


def _global_batch(sharding, local_images: np.ndarray, local_labels: np.ndarray):
    return (
        jax.make_array_from_process_local_data(sharding, local_images),
        jax.make_array_from_process_local_data(sharding, local_labels),
    )


def _process_slice(global_size: int) -> slice:
    """This host's rows of a global batch of ``global_size`` rows."""
    per = global_size // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def evaluate(trainer: Trainer, params, images: np.ndarray, labels: np.ndarray):
    """Mean test loss (plain cross-entropy) and accuracy over all of ``images``."""
    quantum = jax.device_count()
    n = images.shape[0]
    batch = min(1024, n)
    batch = -(-batch // quantum) * quantum  # a whole number of rows per device
    total_loss, total_correct = 0.0, 0
    rows = _process_slice(batch)
    for start in range(0, n, batch):
        x, y = images[start : start + batch], labels[start : start + batch]
        valid = x.shape[0]
        mask = np.arange(batch) < valid
        if valid < batch:  # pad to keep one compiled shape; padded rows are masked out
            x = np.concatenate([x, np.zeros((batch - valid, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(batch - valid, y.dtype)])
        gx, gy = _global_batch(trainer.batch_sharding, x[rows], y[rows])
        gm = jax.make_array_from_process_local_data(trainer.batch_sharding, mask[rows])
        loss, correct = trainer.eval_step(params, gx, gy, gm)
        total_loss += float(loss)
        total_correct += int(correct)
    return total_loss / n, total_correct / n


# --------------------------------------------------------------------------------------------
# Data


def choose_dataset(args: argparse.Namespace, log: Callable[[str], None]) -> mnist_data.Dataset:
    progress = not args.no_progress
    if args.dataset != "auto":
        return mnist_data.load_dataset(
            args.dataset, args.data_dir, allow_download=not args.no_download, progress=progress
        )
    try:
        return mnist_data.load_dataset(
            "mnist", args.data_dir, allow_download=not args.no_download, progress=progress
        )
    except mnist_data.DataUnavailableError as err:
        how = "downloads disabled" if args.no_download else "and the download failed: offline?"
        log(
            f"MNIST cannot be had: not found locally, {how} ({len(str(err).splitlines())}-line "
            "report with --dataset mnist). Falling back."
        )
    try:
        return mnist_data.load_dataset(
            "fashion_mnist", args.data_dir, allow_download=False, progress=progress
        )
    except mnist_data.DataUnavailableError:
        log(
            "Fashion-MNIST is not installed either (apt-get install dataset-fashion-mnist); "
            "using scikit-learn's digits."
        )
    return mnist_data.load_dataset("digits")


def _subset(ds: mnist_data.Dataset, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= ds.x_train.shape[0]:
        return ds.x_train, ds.y_train
    keep = np.sort(np.random.default_rng([seed, 7]).permutation(ds.x_train.shape[0])[:n])
    return ds.x_train[keep], ds.y_train[keep]


# --------------------------------------------------------------------------------------------
# Output


def write_outputs(output_dir: Path, metrics: dict) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "metrics.json"
    png_path = output_dir / "curves.png"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(json_path)

    rows = metrics["epochs"]
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for split, style in (("train", "o-"), ("test", "s--")):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], style, label=split)
        ax_acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in rows], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (nats)", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    cfg = metrics["config"]
    fig.suptitle(f"{metrics['dataset']['name']}, {cfg['model']}, loss={cfg['loss']}")
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return json_path, png_path


# --------------------------------------------------------------------------------------------
# Training


def train(args: argparse.Namespace, ds: mnist_data.Dataset, log: Callable[[str], None]) -> dict:
    x_train, y_train = _subset(ds, args.train_subset, args.seed)
    n_train = x_train.shape[0]
    batch = args.batch_size
    if batch % jax.device_count():
        raise SystemExit(
            f"--batch-size {batch} must be a multiple of the device count {jax.device_count()}"
        )
    steps_per_epoch = n_train // batch  # the last partial batch is dropped (reshuffled anyway)
    if steps_per_epoch == 0:
        raise SystemExit(f"{n_train} training examples do not fill one batch of {batch}")
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    trainer = build_trainer(args, total_steps, args.loss)
    params, opt_state = trainer.params, trainer.opt_state
    rows = _process_slice(batch)
    leader = jax.process_index() == 0

    # Compile ahead of time so that compile time and epoch time are reported apart.
    t0 = time.perf_counter()
    spec_x = jax.ShapeDtypeStruct((batch, 28, 28), np.uint8, sharding=trainer.batch_sharding)
    spec_y = jax.ShapeDtypeStruct((batch,), np.int32, sharding=trainer.batch_sharding)
    step_fn = trainer.train_step.lower(params, opt_state, spec_x, spec_y, 0).compile()
    compile_seconds = time.perf_counter() - t0

    history, epoch_seconds, cpu_seconds = [], [], []
    step = 0
    log(
        f"Training {args.model} on {ds.name} ({n_train} train / {ds.x_test.shape[0]} test) "
        f"with {args.loss} cross-entropy on {jax.device_count()} {jax.default_backend()} "
        f"device(s), {jax.process_count()} process(es); {steps_per_epoch} steps/epoch, "
        f"compiled in {compile_seconds:.1f} s"
    )
    for epoch in range(1, args.epochs + 1):
        if step >= total_steps:
            break
        perm = np.random.default_rng([args.seed, epoch]).permutation(n_train)
        n_steps = min(steps_per_epoch, total_steps - step)
        bar = tqdm(
            total=n_steps,
            desc=f"epoch {epoch}/{args.epochs}",
            disable=args.no_progress or not leader,
            leave=False,
            dynamic_ncols=True,
        )
        loss_sum, correct_sum, seen = 0.0, 0, 0
        pending: list = []
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n_steps):
            idx = perm[i * batch : (i + 1) * batch][rows]
            gx, gy = _global_batch(trainer.batch_sharding, x_train[idx], y_train[idx])
            params, opt_state, loss, correct = step_fn(params, opt_state, gx, gy, step)
            pending.append((loss, correct))
            step += 1
            # Reading a value waits for the device: do it every few steps, not every step.
            if len(pending) == 25 or i == n_steps - 1:
                loss_sum += sum(float(v[0]) for v in pending)
                correct_sum += sum(int(v[1]) for v in pending)
                seen += len(pending) * batch
                bar.update(len(pending))
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct_sum / seen:.2%}")
                pending = []
        jax.block_until_ready(params)
        seconds = time.perf_counter() - t0
        # CPU seconds of this process, all threads: on a shared CPU, wall time also counts
        # the other processes.
        cpu_seconds.append(time.process_time() - c0)
        bar.close()
        test_loss, test_acc = evaluate(trainer, params, ds.x_test, ds.y_test)
        history.append(
            {
                "epoch": epoch,
                "steps": n_steps,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct_sum / seen,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
            }
        )
        epoch_seconds.append(seconds)
        log(
            f"epoch {epoch}/{args.epochs}: train loss {loss_sum / seen:.4f} acc "
            f"{correct_sum / seen:.2%} | test loss {test_loss:.4f} acc {test_acc:.2%} | "
            f"{seconds:.1f} s ({1e3 * seconds / n_steps:.1f} ms/step, {cpu_seconds[-1]:.1f} s CPU)"
        )

    config = {k: v for k, v in vars(args).items() if k not in ("time_losses", "time_steps")}
    return {
        "config": config,
        "dataset": {
            "name": ds.name,
            "source": ds.source,
            "train_examples": int(n_train),
            "test_examples": int(ds.x_test.shape[0]),
        },
        "devices": {
            "count": jax.device_count(),
            "platform": jax.default_backend(),
            "processes": jax.process_count(),
        },
        "epochs": history,
        "final": {k: history[-1][k] for k in ("test_loss", "test_accuracy")},
        "final_params_checksum": _params_checksum(params),
        "timing": {
            "compile_seconds": compile_seconds,
            "epoch_seconds": epoch_seconds,
            "epoch_cpu_seconds": cpu_seconds,
            "steps_per_epoch": steps_per_epoch,
        },
    }


def _params_checksum(params) -> list[float]:
    """Sum and sum of squares of every parameter: a cheap fingerprint to compare runs."""
    leaves = [np.asarray(jax.device_get(v), np.float64) for v in jax.tree.leaves(params)]
    return [float(sum(v.sum() for v in leaves)), float(sum((v * v).sum() for v in leaves))]


def time_losses(args: argparse.Namespace, ds: mnist_data.Dataset, log) -> dict:
    """Median train-step time with each loss, measured in interleaved blocks."""
    batch = args.batch_size
    x, y = ds.x_train[:batch], ds.y_train[:batch]
    kinds = ("jaxloss", "optax")
    states = {}
    for kind in kinds:
        tr = build_trainer(args, 1000, kind)
        rows = _process_slice(batch)
        gx, gy = _global_batch(tr.batch_sharding, x[rows], y[rows])
        fn = tr.train_step.lower(tr.params, tr.opt_state, gx, gy, 0).compile()
        states[kind] = [fn, tr.params, tr.opt_state, gx, gy]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.time_losses + 1):
        order = kinds if r % 2 == 0 else kinds[::-1]  # alternate who goes first
        for kind in order:
            fn, params, opt_state, gx, gy = states[kind]
            t0 = time.perf_counter()
            for s in range(args.time_steps):
                params, opt_state, loss, _ = fn(params, opt_state, gx, gy, s)
            jax.block_until_ready((params, loss))
            if r > 0:  # round 0 warms caches and thread pools
                times[kind].append((time.perf_counter() - t0) / args.time_steps)
            states[kind][1:3] = [params, opt_state]
    result = {
        k: {"median_ms": 1e3 * statistics.median(v), "runs_ms": [1e3 * t for t in v]}
        for k, v in times.items()
    }
    ratio = result["jaxloss"]["median_ms"] / result["optax"]["median_ms"]
    log(
        f"train step ({args.model}, batch {batch}, {jax.device_count()} device(s), "
        f"{args.time_losses} interleaved rounds of {args.time_steps} steps): "
        f"jaxloss {result['jaxloss']['median_ms']:.2f} ms, "
        f"optax {result['optax']['median_ms']:.2f} ms, ratio {ratio:.3f}"
    )
    return {"step_time": result, "ratio_jaxloss_over_optax": ratio}


# --------------------------------------------------------------------------------------------
# Main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.distributed == "on" or (
        args.distributed == "auto" and _multiprocess_launch_detected(args)
    ):
        # Whatever is not given here, JAX detects (SLURM, Open MPI, Cloud TPU, Kubernetes).
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    leader = jax.process_index() == 0

    def log(msg: str) -> None:
        if leader:
            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    try:
        ds = choose_dataset(args, log)
    except (mnist_data.DataUnavailableError, mnist_data.IdxFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.epochs is None:
        if ds.name == "digits":
            args.epochs = DIGITS_DEMO_EPOCHS if args.demo else DIGITS_EPOCHS
        else:
            args.epochs = DEMO_EPOCHS if args.demo else DEFAULT_EPOCHS
    output_dir = Path(args.output_dir)

    if args.time_losses:
        result = time_losses(args, ds, log)
        if leader:
            output_dir.mkdir(parents=True, exist_ok=True)
            path = output_dir / "loss_timing.json"
            path.write_text(json.dumps(result, indent=2) + "\n")
            log(f"Step times written to {path}")
        return 0

    metrics = train(args, ds, log)
    final_acc = metrics["final"]["test_accuracy"]
    log(
        f"Final test accuracy on {ds.name}: {final_acc:.2%} (test loss "
        f"{metrics['final']['test_loss']:.4f})"
    )
    status = 0
    if args.min_test_accuracy is not None and not final_acc >= args.min_test_accuracy:
        log(
            f"FAILED: test accuracy {final_acc:.2%} is below --min-test-accuracy "
            f"{args.min_test_accuracy:.2%}"
        )
        status = 1
    if leader:
        json_path, png_path = write_outputs(output_dir, metrics)
        log(f"Metrics: {json_path}  Curves: {png_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
