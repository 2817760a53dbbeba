"""curves.png for examples/mnist.py: loss and accuracy, per training step and per epoch.

The training curve is the running mean of the last few steps' batches (the training objective,
dropout on), drawn over the raw per-step values, so that even a one-epoch run shows the network
learning; the evaluations after each epoch (a fixed training subset and the test set, dropout
off) are points at the epoch's end.
"""

from __future__ import annotations

import io

import numpy as np


def running_mean(values, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each step (fewer at the start)."""
    values = np.asarray(values, np.float64)
    total = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - window, 0)
    return (total[ends] - total[starts]) / (ends - starts)


def curves_png(metrics: dict) -> bytes:
    """:func:`figure` as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = figure(metrics)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def figure(metrics: dict):
    """Loss and accuracy side by side; every curve is labelled with what exactly it measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cfg, ds = metrics["epochs"], metrics["config"], metrics["dataset"]
    steps = metrics["train_steps"]
    n = len(steps["loss"])
    # About 20 windows over the run, at most 50 steps each.
    window = min(50, max(1, n // 20))
    x_steps = np.arange(1, n + 1) / steps["steps_per_epoch"]  # in epochs
    smoothing = f", label smoothing {cfg['label_smoothing']}" if cfg["label_smoothing"] else ""
    epochs = [r["epoch"] for r in rows]
    points = (
        ("train", "o-", f"train: {ds['train_eval_examples']:,} fixed examples after each epoch"),
        ("test", "s-", f"test: all {ds['test_examples']:,} examples after each epoch"),
    )
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    for ax, key, scale in ((ax_loss, "loss", 1), (ax_acc, "accuracy", 100)):
        values = scale * np.asarray(steps[key], np.float64)
        label = f"train: each step's batch (dropout on{smoothing})"
        if window > 1:
            ax.plot(x_steps, values, color="C0", alpha=0.2, linewidth=0.6)
            label = label.replace("batch", f"batch, mean of the last {window} steps")
        ax.plot(x_steps, running_mean(values, window), color="C0", label=label)
        for (kind, style, label), color in zip(points, ("C1", "C2"), strict=True):
            values = [scale * r[f"{kind}_{key}"] for r in rows]
            ax.plot(epochs, values, style, color=color, label=label)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1.02 * max([*epochs, x_steps[-1] if n else 1]))
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (nats)", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    fig.legend(
        *ax_loss.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small"
    )
    loss = "jaxloss.cross_entropy" if cfg["loss"] == "jaxloss" else "optax cross-entropy"
    fig.suptitle(
        f"{ds['title']}: {cfg['model'].upper()} trained on {ds['train_examples']:,} images with "
        f"{loss}, Adam {cfg['learning_rate']:g} ({cfg['schedule']}), batch {cfg['batch_size']}"
    )
    return fig
