"""The command line of examples/mnist.py: every flag, its default and its check.

Values that cannot train or cannot mean anything are refused here, before any data is loaded:
a learning rate that is NaN, infinite, 0 or negative, a seed outside 0..2**32 - 1, a
--min-test-accuracy outside [0, 1], sizes and counts below 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mnist_support as support

EPOCHS, DIGITS_EPOCHS, DEMO_EPOCHS, DIGITS_DEMO_EPOCHS = 10, 30, 2, 15
DEMO_TRAIN_SUBSET = 12_000


def build_parser(description: str | None = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=support.HelpFormatter)
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
        "--train-subset",
        type=support.positive_int,
        metavar="N",
        help="train on N examples (default: all)",
    )
    train = p.add_argument_group("training")
    train.add_argument("--model", choices=["cnn", "mlp"], default="cnn", help="architecture")
    train.add_argument(
        "--epochs",
        type=support.positive_int,
        help=f"default: {EPOCHS}, {DIGITS_EPOCHS} on digits; with --demo {DEMO_EPOCHS} and "
        f"{DIGITS_DEMO_EPOCHS}",
    )
    train.add_argument("--batch-size", type=support.positive_int, default=128, help="global batch")
    train.add_argument(
        "--learning-rate", type=support.positive_float, default=1e-3, help="Adam's peak rate"
    )
    train.add_argument(
        "--schedule", choices=["cosine", "constant"], default="cosine", help="learning rate"
    )
    train.add_argument(
        "--label-smoothing",
        type=support.smoothing,
        default=0.0,
        help="training loss only; eval has none",
    )
    train.add_argument(
        "--loss", choices=["jaxloss", "optax"], default="jaxloss", help="whose cross-entropy"
    )
    train.add_argument(
        "--seed",
        type=support.seed,
        default=0,
        help=f"parameters, dropout, shuffling: 0 to {support.MAX_SEED}",
    )
    train.add_argument(
        "--max-steps", type=support.positive_int, help="stop after this many steps in all"
    )
    out = p.add_argument_group("evaluation and output")
    out.add_argument(
        "--train-eval-size",
        type=support.positive_int,
        default=10_000,
        metavar="N",
        help="after each epoch, evaluate like the test set on a fixed N training examples",
    )
    out.add_argument("--output-dir", default="out/mnist", help="for metrics.json and curves.png")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument(
        "--min-test-accuracy",
        type=support.fraction,
        metavar="A",
        help="exit with status 1 if the final test accuracy (a fraction in [0, 1]) is below A",
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
    """The parsed flags, with --demo's defaults filled in where a flag was not given."""
    args = (p or build_parser()).parse_args(argv)
    if args.demo:
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        args.dataset = args.dataset if "--dataset" in given else "auto"
        args.train_subset = args.train_subset if "--train-subset" in given else DEMO_TRAIN_SUBSET
    return args


def default_epochs(args: argparse.Namespace, dataset: str) -> int:
    if args.epochs is not None:
        return args.epochs
    if dataset == "digits":
        return DIGITS_DEMO_EPOCHS if args.demo else DIGITS_EPOCHS
    return DEMO_EPOCHS if args.demo else EPOCHS
