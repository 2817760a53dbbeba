"""Train a small classifier on MNIST-like images with jaxloss.cross_entropy, data parallel.

Read top to bottom: the model (a Flax NNX CNN, or an MLP), the loss, the jit-compiled train and
eval steps, the training loop, main. Each global batch is sharded over a 1-D mesh of all devices
and the parameters are replicated, so the same command runs on one CPU, on simulated CPU
devices, on a GPU or a TPU, and on several hosts, with the same batches: the results agree up to
float rounding. Beside it: mnist_flags.py (the command line), mnist_data.py (finding,
downloading and checking the data), mnist_plot.py (curves.png), mnist_support.py (several
processes, writing the outputs safely).

    python examples/mnist.py                          # MNIST, 10 epochs, the CNN
    python examples/mnist.py --dataset fashion_mnist  # Fashion-MNIST
    python examples/mnist.py --dataset digits         # scikit-learn's digits, fully offline
    python examples/mnist.py --demo                   # short run on whatever can be had

metrics.json and curves.png go to --output-dir (created and checked before training) after
each epoch, on Ctrl-C (exit status 130) and at the end; the last line printed says where.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a script, and imported by the tests
import mnist_data
import mnist_flags as flags
import mnist_support as support


def max_pool_2x2(x):
    """2×2 max pooling (NHWC, even H and W) as a reshape and a max: ``nnx.max_pool``'s values,
    but its gradient is a broadcast, not reduce_window's select-and-scatter, which made the whole
    CNN train step 2.5× slower on a 2-core CPU."""
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


@dataclasses.dataclass
class Trainer:
    """The compiled pieces of a run: the batch sharding, the state and the two steps."""

    batch_sharding: NamedSharding
    params: Any
    opt_state: Any
    train_step: Callable
    eval_step: Callable


def build_trainer(args: argparse.Namespace, total_steps: int, loss_kind: str) -> Trainer:
    # Auto axes: the compiler propagates the batch sharding (the classic data-parallel jit).
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    model_class = {"cnn": CNN, "mlp": MLP}[args.model]
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_class(nnx.Rngs(params=args.seed))))
    lr = args.learning_rate
    if args.schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, max(total_steps, 1))
    tx = optax.adam(lr)

    # Initialised inside jit with a replicated output: every host computes the same values.
    @functools.partial(jax.jit, out_shardings=replicated)
    def init():
        params = nnx.state(model_class(nnx.Rngs(params=args.seed)))
        return params, tx.init(params)

    train_loss, eval_loss = make_loss(loss_kind, args.label_smoothing), make_loss(loss_kind, 0.0)
    dropout_base = jax.random.key(args.seed + 1)

    def logits_of(params, images, dropout_key=None):
        return nnx.merge(graphdef, params)(images.astype(jnp.float32) / 255.0, dropout_key)

    @functools.partial(jax.jit, donate_argnums=(0, 1), out_shardings=replicated)
    def train_step(params, opt_state, images, labels, step):
        def objective(params):
            logits = logits_of(params, images, jax.random.fold_in(dropout_base, step))
            return jnp.mean(train_loss(logits, labels)), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
        return optax.apply_updates(params, updates), opt_state, loss, correct

    @functools.partial(jax.jit, out_shardings=replicated)
    def eval_step(params, images, labels, mask):
        logits = logits_of(params, images)  # no dropout key: dropout off
        losses = jnp.where(mask, eval_loss(logits, labels), 0.0)
        return jnp.sum(losses), jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask)

    params, opt_state = init()
    return Trainer(NamedSharding(mesh, P("data")), params, opt_state, train_step, eval_step)


def evaluate(trainer: Trainer, params, images: np.ndarray, labels: np.ndarray):
    """Mean loss (plain cross-entropy, dropout off) and accuracy over all of ``images``."""
    total_loss, total_correct = 0.0, 0
    for x, y, mask in support.padded_batches(trainer.batch_sharding, images, labels):
        loss, correct = trainer.eval_step(params, x, y, mask)
        total_loss, total_correct = total_loss + float(loss), total_correct + int(correct)
    return total_loss / len(images), total_correct / len(images)


def train(args, ds: mnist_data.Dataset, log, metrics: dict, outputs: support.Outputs) -> None:
    """Trains, filling ``metrics`` as it goes (Ctrl-C keeps them) and saving after each epoch."""
    keep = mnist_data.fixed_subset(len(ds.x_train), args.train_subset, args.seed, salt=7)
    x_train, y_train, batch = ds.x_train[keep], ds.y_train[keep], args.batch_size
    # Evaluated like the test set after every epoch, so that the two can be compared.
    watch = mnist_data.fixed_subset(len(keep), args.train_eval_size, args.seed, salt=11)
    x_watch, y_watch = x_train[watch], y_train[watch]
    if batch % jax.device_count():
        raise SystemExit(f"--batch-size {batch} is not a multiple of {jax.device_count()} devices")
    steps_per_epoch = len(keep) // batch  # the last partial batch is dropped (reshuffled anyway)
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(keep)} training examples do not fill one batch of {batch}")
    total_steps = min(steps_per_epoch * args.epochs, args.max_steps or sys.maxsize)

    trainer = build_trainer(args, total_steps, args.loss)
    params, opt_state, rows = trainer.params, trainer.opt_state, support.process_rows(batch)
    # Compiled ahead of time, so that compile time and epoch time are reported apart.
    t0 = time.perf_counter()
    spec_x = jax.ShapeDtypeStruct((batch, 28, 28), np.uint8, sharding=trainer.batch_sharding)
    spec_y = jax.ShapeDtypeStruct((batch,), np.int32, sharding=trainer.batch_sharding)
    step_fn = trainer.train_step.lower(params, opt_state, spec_x, spec_y, 0).compile()
    steps = {"steps_per_epoch": steps_per_epoch, "loss": [], "accuracy": []}  # one per step
    timing = {"compile_seconds": time.perf_counter() - t0, "epoch_seconds": []}
    timing["epoch_cpu_seconds"] = []
    metrics |= support.run_info(args, ds, len(keep), len(watch))
    metrics |= {"train_steps": steps, "epochs": [], "final": None, "timing": timing}
    for line in support.start_lines(metrics, steps_per_epoch):
        log(line)

    def read(pending: list, bar) -> None:  # reading waits for the device: every few steps
        for loss, correct in jax.device_get(pending):
            steps["loss"].append(float(loss))
            steps["accuracy"].append(int(correct) / batch)
        bar.update(len(pending))
        pending.clear()

    step = 0
    for epoch in range(1, args.epochs + 1):
        if step >= total_steps:
            break
        perm = np.random.default_rng([args.seed, epoch]).permutation(len(keep))
        n_steps, pending = min(steps_per_epoch, total_steps - step), []
        t0, c0 = time.perf_counter(), time.process_time()
        quiet = args.no_progress or jax.process_index() != 0
        with tqdm(
            total=n_steps, desc=f"epoch {epoch}/{args.epochs}", leave=False, disable=quiet
        ) as bar:
            try:
                for i in range(n_steps):
                    idx = perm[i * batch : (i + 1) * batch][rows]
                    x, y = support.global_arrays(trainer.batch_sharding, x_train[idx], y_train[idx])
                    params, opt_state, loss, correct = step_fn(params, opt_state, x, y, step)
                    pending.append((loss, correct))
                    step += 1
                    if len(pending) == 25 or i == n_steps - 1:
                        read(pending, bar)
                        bar.set_postfix(loss=f"{np.mean(steps['loss'][-i - 1 :]):.4f}")
            finally:
                read(pending, bar)  # after Ctrl-C too: the steps that ran
        jax.block_until_ready(params)
        # CPU seconds of this process, all threads: on a shared CPU wall time counts others too.
        timing["epoch_seconds"].append(time.perf_counter() - t0)
        timing["epoch_cpu_seconds"].append(time.process_time() - c0)
        row = {"epoch": epoch, "steps": n_steps}
        row["running_loss"] = float(np.mean(steps["loss"][-n_steps:]))  # dropout on
        row["running_accuracy"] = float(np.mean(steps["accuracy"][-n_steps:]))
        row["train_loss"], row["train_accuracy"] = evaluate(trainer, params, x_watch, y_watch)
        row["test_loss"], row["test_accuracy"] = evaluate(trainer, params, ds.x_test, ds.y_test)
        metrics["epochs"].append(row)
        metrics["final"] = {k: row[k] for k in ("test_loss", "test_accuracy")}
        metrics["final_params_checksum"] = support.params_checksum(params)
        log(support.epoch_line(metrics))
        if step < total_steps and (why := outputs.save(metrics)):  # not the last: main saves
            log(f"warning: {why}; the metrics are kept and written at the next chance")


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.parse_args(argv, flags.build_parser(__doc__))
    support.maybe_initialize_distributed(args)
    leader = jax.process_index() == 0

    def log(msg: str) -> None:
        if leader:
            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    metrics: dict = {}
    try:
        # Before training, so that a bad folder costs seconds, not a run.
        outputs = support.Outputs(support.prepare_output_dir(args.output_dir) if leader else None)
        ds = mnist_data.load(
            args.dataset,
            args.data_dir,
            allow_download=not args.no_download,
            progress=not args.no_progress,
            log=log,
        )
        args.epochs = flags.default_epochs(args, ds.name)
        train(args, ds, log, metrics, outputs)
    except (support.OutputDirError, *mnist_data.LOAD_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # one line and the metrics so far, not a traceback
        done = len(metrics["train_steps"]["loss"]) if metrics else 0
        why = outputs.save(metrics) if metrics else "nothing to write"
        where = why or f"the metrics so far are in {outputs.folder}"
        print(f"interrupted after {done} training steps; {where}", file=sys.stderr)
        return 130
    final, status = metrics["final"], 0
    log(
        f"Final test accuracy on {ds.name}: {final['test_accuracy']:.2%} "
        f"(test loss {final['test_loss']:.4f})"
    )
    if args.min_test_accuracy is not None and not final["test_accuracy"] >= args.min_test_accuracy:
        log(
            f"FAILED: test accuracy {final['test_accuracy']:.2%} is below --min-test-accuracy "
            f"{args.min_test_accuracy:.2%}"
        )
        status = 1
    if why := outputs.save(metrics):
        print(f"error: metrics.json and curves.png were never written: {why}", file=sys.stderr)
        return 2
    if outputs.folder is not None:
        log(f"Metrics: {outputs.json}  Curves: {outputs.png}")
    return status


if __name__ == "__main__":
    sys.exit(main())
