"""Train a small classifier on MNIST-like images with jaxloss.cross_entropy, data parallel.

Read top to bottom: the command line, the data, the model (a Flax NNX CNN, or an MLP), the
loss, the jit-compiled train and eval steps, the training loop, the outputs. Each global batch
is sharded over a 1-D mesh of all devices and the parameters are replicated, so the same
command runs on one CPU, on simulated CPU devices, on a GPU or a TPU, and on several hosts;
the batches do not depend on the device count, so the results agree up to float rounding.

Examples::

    python examples/mnist.py                          # MNIST, 10 epochs, the CNN
    python examples/mnist.py --dataset fashion_mnist  # Fashion-MNIST
    python examples/mnist.py --dataset digits         # scikit-learn's digits, fully offline
    python examples/mnist.py --demo                   # short run on whatever can be had

At the end metrics.json and curves.png are written to --output-dir (created and checked
before training), and the last line printed says where. docs/mnist.md is the guide.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
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
import mnist_support as support

EPOCHS, DIGITS_EPOCHS, DEMO_EPOCHS, DIGITS_DEMO_EPOCHS = 10, 30, 2, 15
DEMO_TRAIN_SUBSET = 12_000

# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=support.HelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=["mnist", "fashion_mnist", "digits", "auto"],
        default="mnist",
        help="'auto': MNIST if it can be found or downloaded, else an installed Fashion-MNIST, "
        "else scikit-learn's digits",
    )
    data.add_argument(
        "--data-dir",
        help="folder with the four IDX files, looked at first (default: $JAXLOSS_DATA_DIR, "
        "the cache ~/.cache/jaxloss, Debian's /usr/share/datasets/fashion-mnist)",
    )
    data.add_argument("--no-download", action="store_true", help="never touch the network")
    data.add_argument(
        "--train-subset", type=int, metavar="N", help="train on N examples (default: all)"
    )
    train = p.add_argument_group("training")
    train.add_argument("--model", choices=["cnn", "mlp"], default="cnn", help="architecture")
    train.add_argument(
        "--epochs",
        type=int,
        help=f"default: {EPOCHS}, {DIGITS_EPOCHS} on digits; with --demo {DEMO_EPOCHS} and "
        f"{DIGITS_DEMO_EPOCHS}",
    )
    train.add_argument("--batch-size", type=int, default=128, help="global batch size")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's peak rate")
    train.add_argument(
        "--schedule", choices=["cosine", "constant"], default="cosine", help="learning rate"
    )
    train.add_argument(
        "--label-smoothing", type=float, default=0.0, help="training loss only; eval has none"
    )
    train.add_argument(
        "--loss", choices=["jaxloss", "optax"], default="jaxloss", help="whose cross-entropy"
    )
    train.add_argument("--seed", type=int, default=0, help="parameters, dropout, shuffling")
    train.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    out = p.add_argument_group("evaluation and output")
    out.add_argument(
        "--train-eval-size",
        type=int,
        default=10_000,
        metavar="N",
        help="after each epoch, evaluate like the test set on a fixed N training examples",
    )
    out.add_argument("--output-dir", default="out/mnist", help="for metrics.json and curves.png")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument(
        "--min-test-accuracy",
        type=float,
        metavar="A",
        help="exit with status 1 if the final test accuracy (a fraction) is below A",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help=f"short run: --dataset auto, {DEMO_EPOCHS} epochs on {DEMO_TRAIN_SUBSET} examples "
        f"({DIGITS_DEMO_EPOCHS} epochs on digits); flags given explicitly win",
    )
    support.add_distributed_flags(p)
    return p


def parse_args(
    argv: Sequence[str] | None = None, p: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    p = p or build_parser()
    args = p.parse_args(argv)
    if args.demo:
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        args.dataset = args.dataset if "--dataset" in given else "auto"
        args.train_subset = args.train_subset if "--train-subset" in given else DEMO_TRAIN_SUBSET
    for flag in ("batch_size", "epochs", "train_subset", "train_eval_size", "max_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if not 0.0 <= args.label_smoothing < 1.0:
        p.error("--label-smoothing must be in [0, 1)")
    return args


# --------------------------------------------------------------------------------------------
# Data


def load_data(args: argparse.Namespace, log: Callable[[str], None]) -> mnist_data.Dataset:
    """The dataset asked for; with ``--dataset auto`` the first one that can be had."""

    def load(name, allow_download):
        return mnist_data.load_dataset(
            name, args.data_dir, allow_download=allow_download, progress=not args.no_progress
        )

    if args.dataset != "auto":
        return load(args.dataset, not args.no_download)
    try:
        return load("mnist", not args.no_download)
    except mnist_data.CacheNotWritableError as err:  # a local problem: say which
        log(f"MNIST cannot be had: not found locally, {str(err).splitlines()[-1]}")
    except mnist_data.DataUnavailableError:
        how = "downloads disabled" if args.no_download else "and the download failed: offline?"
        log(f"MNIST cannot be had: not found locally, {how} (--dataset mnist says more).")
    try:
        return load("fashion_mnist", False)
    except mnist_data.DataUnavailableError:
        log("Fashion-MNIST is not installed either (apt-get install dataset-fashion-mnist).")
    log("Using scikit-learn's digits.")
    return mnist_data.load_dataset("digits")


def _fixed_subset(n: int, size: int | None, seed: int, salt: int) -> np.ndarray:
    """Sorted indices of ``size`` of ``n`` rows, the same for every run with this seed."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, salt]).permutation(n)[:size])


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


# --------------------------------------------------------------------------------------------
# Loss


def make_loss(kind: str, label_smoothing: float) -> Callable[[Any, Any], Any]:
    """Per-example cross-entropy from integer labels: jaxloss's, or the optax equivalent."""
    if kind == "jaxloss":
        return functools.partial(jaxloss.cross_entropy, label_smoothing=label_smoothing)

    def optax_loss(logits, labels):
        if label_smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
            return optax.softmax_cross_entropy(logits, targets)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    return optax_loss


# --------------------------------------------------------------------------------------------
# The jitted steps


@dataclasses.dataclass
class Trainer:
    """The compiled pieces of a run: the batch sharding, the state and the two steps."""

    batch_sharding: NamedSharding
    params: Any
    opt_state: Any
    train_step: Callable
    eval_step: Callable


def build_trainer(args: argparse.Namespace, total_steps: int, loss_kind: str) -> Trainer:
    # Auto axes: the compiler propagates the batch sharding (the classic data-parallel jit);
    # make_mesh's default, Explicit, would make every reshape spell out its output sharding.
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    model_class = {"cnn": CNN, "mlp": MLP}[args.model]
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_class(nnx.Rngs(params=args.seed))))
    lr = args.learning_rate
    if args.schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, max(total_steps, 1))
    tx = optax.adam(lr)

    # Initialised inside jit with a replicated output: every host computes the same values
    # from the seed, with no host-to-device copy of parameters.
    @functools.partial(jax.jit, out_shardings=replicated)
    def init():
        params = nnx.state(model_class(nnx.Rngs(params=args.seed)))
        return params, tx.init(params)

    train_loss = make_loss(loss_kind, args.label_smoothing)
    eval_loss = make_loss(loss_kind, 0.0)
    dropout_base = jax.random.key(args.seed + 1)

    def logits_of(params, images, dropout_key=None):
        return nnx.merge(graphdef, params)(images.astype(jnp.float32) / 255.0, dropout_key)

    @functools.partial(jax.jit, donate_argnums=(0, 1), out_shardings=replicated)
    def train_step(params, opt_state, images, labels, step):
        dropout_key = jax.random.fold_in(dropout_base, step)

        def objective(params):
            logits = logits_of(params, images, dropout_key)
            return jnp.mean(train_loss(logits, labels)), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
        return params, opt_state, loss * labels.shape[0], correct

    @functools.partial(jax.jit, out_shardings=replicated)
    def eval_step(params, images, labels, mask):
        logits = logits_of(params, images)  # no dropout key: dropout off
        losses = jnp.where(mask, eval_loss(logits, labels), 0.0)
        correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask)
        return jnp.sum(losses), correct

    params, opt_state = init()
    return Trainer(NamedSharding(mesh, P("data")), params, opt_state, train_step, eval_step)


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate(trainer: Trainer, params, images: np.ndarray, labels: np.ndarray):
    """Mean loss (plain cross-entropy, dropout off) and accuracy over all of ``images``."""
    n = images.shape[0]
    # A whole number of rows per device; the last batch is padded and its padding masked out,
    # so that one compiled shape serves every batch.
    batch = -(-min(1024, n) // jax.device_count()) * jax.device_count()
    rows = support.process_rows(batch)
    total_loss, total_correct = 0.0, 0
    for start in range(0, n, batch):
        x, y = images[start : start + batch], labels[start : start + batch]
        mask = np.arange(batch) < x.shape[0]
        x = np.concatenate([x, np.zeros((batch - x.shape[0], *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros(batch - y.shape[0], y.dtype)])
        gx, gy, gm = support.global_arrays(trainer.batch_sharding, x[rows], y[rows], mask[rows])
        loss, correct = trainer.eval_step(params, gx, gy, gm)
        total_loss += float(loss)
        total_correct += int(correct)
    return total_loss / n, total_correct / n


# --------------------------------------------------------------------------------------------
# Training


def train(args: argparse.Namespace, ds: mnist_data.Dataset, log: Callable[[str], None]) -> dict:
    keep = _fixed_subset(ds.x_train.shape[0], args.train_subset, args.seed, salt=7)
    x_train, y_train = ds.x_train[keep], ds.y_train[keep]
    # Evaluated like the test set after every epoch, so the two can be compared.
    watch = _fixed_subset(len(keep), args.train_eval_size, args.seed, salt=11)
    n_train, batch = x_train.shape[0], args.batch_size
    if batch % jax.device_count():
        raise SystemExit(f"--batch-size {batch} is not a multiple of {jax.device_count()} devices")
    steps_per_epoch = n_train // batch  # the last partial batch is dropped (reshuffled anyway)
    if steps_per_epoch == 0:
        raise SystemExit(f"{n_train} training examples do not fill one batch of {batch}")
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    trainer = build_trainer(args, total_steps, args.loss)
    params, opt_state = trainer.params, trainer.opt_state
    rows = support.process_rows(batch)
    # Compile ahead of time, so that compile time and epoch time are reported apart.
    t0 = time.perf_counter()
    spec_x = jax.ShapeDtypeStruct((batch, 28, 28), np.uint8, sharding=trainer.batch_sharding)
    spec_y = jax.ShapeDtypeStruct((batch,), np.int32, sharding=trainer.batch_sharding)
    step_fn = trainer.train_step.lower(params, opt_state, spec_x, spec_y, 0).compile()
    compile_seconds = time.perf_counter() - t0
    log(
        f"Training {args.model} on {ds.title} ({n_train} train / {ds.x_test.shape[0]} test) "
        f"with {args.loss} cross-entropy on {jax.device_count()} {jax.default_backend()} "
        f"device(s), {jax.process_count()} process(es); {steps_per_epoch} steps/epoch, "
        f"compiled in {compile_seconds:.1f} s"
    )

    history, step = [], 0
    timing = {"compile_seconds": compile_seconds, "epoch_seconds": [], "epoch_cpu_seconds": []}
    for epoch in range(1, args.epochs + 1):
        if step >= total_steps:
            break
        perm = np.random.default_rng([args.seed, epoch]).permutation(n_train)
        n_steps = min(steps_per_epoch, total_steps - step)
        bar = tqdm(
            total=n_steps,
            desc=f"epoch {epoch}/{args.epochs}",
            disable=args.no_progress or jax.process_index() != 0,
            leave=False,
            dynamic_ncols=True,
        )
        loss_sum, correct_sum, seen, pending = 0.0, 0, 0, []
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n_steps):
            idx = perm[i * batch : (i + 1) * batch][rows]
            gx, gy = support.global_arrays(trainer.batch_sharding, x_train[idx], y_train[idx])
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
        # CPU seconds of this process, all threads: on a shared CPU wall time counts others too.
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        bar.close()
        train_loss, train_acc = evaluate(trainer, params, x_train[watch], y_train[watch])
        test_loss, test_acc = evaluate(trainer, params, ds.x_test, ds.y_test)
        row = {
            "epoch": epoch,
            "steps": n_steps,
            "running_loss": loss_sum / seen,  # the training objective, dropout on
            "running_accuracy": correct_sum / seen,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
        }
        history.append(row)
        timing["epoch_seconds"].append(seconds)
        timing["epoch_cpu_seconds"].append(cpu_seconds)
        log(
            f"epoch {epoch}/{args.epochs}: running (dropout on) loss {row['running_loss']:.4f} "
            f"acc {row['running_accuracy']:.2%} | train loss {train_loss:.4f} acc "
            f"{train_acc:.2%} | test loss {test_loss:.4f} acc {test_acc:.2%} | {seconds:.1f} s "
            f"({1e3 * seconds / n_steps:.1f} ms/step, {cpu_seconds:.1f} s CPU)"
        )

    leaves = [np.asarray(jax.device_get(v), np.float64) for v in jax.tree.leaves(params)]
    return {
        "config": vars(args),
        "dataset": {
            "name": ds.name,
            "title": ds.title,
            "source": ds.source,
            "train_examples": int(n_train),
            "train_eval_examples": len(watch),
            "test_examples": int(ds.x_test.shape[0]),
        },
        "devices": {
            "count": jax.device_count(),
            "platform": jax.default_backend(),
            "processes": jax.process_count(),
        },
        "epochs": history,
        "final": {k: history[-1][k] for k in ("test_loss", "test_accuracy")},
        # Sum and sum of squares of every parameter: a cheap fingerprint to compare runs.
        "final_params_checksum": [
            float(sum(v.sum() for v in leaves)),
            float(sum((v * v).sum() for v in leaves)),
        ],
        "timing": timing | {"steps_per_epoch": steps_per_epoch},
    }


# --------------------------------------------------------------------------------------------
# Main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    support.maybe_initialize_distributed(args)
    leader = jax.process_index() == 0

    def log(msg: str) -> None:
        if leader:
            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    try:
        # Before training, so that a bad folder costs seconds, not a run.
        output_dir = support.prepare_output_dir(args.output_dir) if leader else None
        ds = load_data(args, log)
    except (
        support.OutputDirError,
        mnist_data.DataUnavailableError,
        mnist_data.IdxFormatError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.epochs is None:
        if ds.name == "digits":
            args.epochs = DIGITS_DEMO_EPOCHS if args.demo else DIGITS_EPOCHS
        else:
            args.epochs = DEMO_EPOCHS if args.demo else EPOCHS

    metrics = train(args, ds, log)
    final = metrics["final"]
    log(
        f"Final test accuracy on {ds.name}: {final['test_accuracy']:.2%} "
        f"(test loss {final['test_loss']:.4f})"
    )
    status = 0
    if args.min_test_accuracy is not None and not final["test_accuracy"] >= args.min_test_accuracy:
        log(
            f"FAILED: test accuracy {final['test_accuracy']:.2%} is below --min-test-accuracy "
            f"{args.min_test_accuracy:.2%}"
        )
        status = 1
    if output_dir is not None:
        json_path, png_path = output_dir / "metrics.json", output_dir / "curves.png"
        try:
            support.write_json(json_path, metrics)
            support.write_curves(png_path, metrics)
        except OSError as err:
            print(f"error: cannot write the results into {output_dir}: {err}", file=sys.stderr)
            return 2
        log(f"Metrics: {json_path}  Curves: {png_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
