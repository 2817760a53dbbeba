"""Tests for examples/mnist.py: short training runs on every dataset kind, 8 devices vs 1.

The IDX datasets are tiny fakes written by the tests; ``digits`` is scikit-learn's real one.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import mnist
import mnist_data
import mnist_flags
import mnist_plot
import mnist_support

EXAMPLES = Path(mnist.__file__).parent
ROOT = EXAMPLES.parent


def _fake_idx_dataset(folder: Path, seed: int, n_train: int = 64, n_test: int = 40) -> None:
    rng = np.random.default_rng(seed)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for f, array in zip(mnist_data.DATASETS["mnist"].files, arrays, strict=True):
        mnist_data.write_idx(folder / f.name, array)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data outside tmp_path: empty cache, no $JAXLOSS_DATA_DIR, no Debian folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("JAXLOSS_DATA_DIR", raising=False)
    spec = mnist_data.DATASETS["fashion_mnist"]
    monkeypatch.setitem(
        mnist_data.DATASETS,
        "fashion_mnist",
        dataclasses.replace(spec, system_dirs=(tmp_path / "debian",)),
    )
    return tmp_path


def _run(capsys, *argv: str) -> tuple[int, list[str], dict]:
    status = mnist.main([*argv, "--no-progress", "--no-download"])
    out = capsys.readouterr().out.strip().splitlines()
    output_dir = Path(argv[argv.index("--output-dir") + 1])
    metrics_path = output_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return status, out, metrics


@pytest.mark.slow
@pytest.mark.parametrize(
    "dataset,model,where",
    # The CNN (the default model) also runs in test_eight_devices_match_one.
    [("mnist", "cnn", "flag"), ("fashion_mnist", "mlp", "env"), ("digits", "mlp", None)],
)
def test_two_training_steps(isolated, capsys, monkeypatch, dataset, model, where):
    data_args = []
    if where == "flag":
        _fake_idx_dataset(isolated / "data", seed=1)
        data_args = ["--data-dir", str(isolated / "data")]
    elif where == "env":
        _fake_idx_dataset(isolated / "env" / dataset, seed=2)
        monkeypatch.setenv("JAXLOSS_DATA_DIR", str(isolated / "env"))
    out_dir = isolated / "out"
    status, out, metrics = _run(
        capsys,
        *["--dataset", dataset, "--model", model, *data_args],
        *["--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--seed", "3"],
        *["--output-dir", str(out_dir)],
    )
    assert status == 0
    (epoch,) = metrics["epochs"]
    assert epoch["steps"] == 2
    assert metrics["dataset"]["name"] == dataset
    assert metrics["dataset"]["test_examples"] == (360 if dataset == "digits" else 40)
    if where == "flag":
        assert metrics["dataset"]["source"] == str(isolated / "data")
    for kind in ("running", "train", "test"):
        assert np.isfinite(epoch[f"{kind}_loss"]) and 0.5 < epoch[f"{kind}_loss"] < 20
        assert 0.0 <= epoch[f"{kind}_accuracy"] <= 1.0
    assert metrics["dataset"]["train_eval_examples"] == (1437 if dataset == "digits" else 64)
    assert metrics["config"]["loss"] == "jaxloss" and metrics["config"]["model"] == model
    assert (out_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out[-2].startswith(f"Final test accuracy on {dataset}: ")
    assert out[-1] == f"Metrics: {out_dir / 'metrics.json'}  Curves: {out_dir / 'curves.png'}"


@pytest.mark.slow
def test_same_seed_same_metrics_and_min_accuracy_gate(isolated, capsys):
    common = ["--dataset", "digits", "--model", "mlp", "--train-subset", "256", "--batch-size"]
    common += ["32", "--epochs", "1", "--max-steps", "6"]
    runs, statuses, outs = {}, {}, {}
    # Run c, with another seed, also gets an unreachable --min-test-accuracy.
    for name, extra in (
        ("a", []),
        ("b", []),
        ("c", ["--seed", "1", "--min-test-accuracy", "0.999"]),
    ):
        statuses[name], outs[name], metrics = _run(
            capsys, *common, *extra, "--output-dir", str(isolated / name)
        )
        runs[name] = {k: v for k, v in metrics.items() if k not in ("timing", "config")}
    assert statuses == {"a": 0, "b": 0, "c": 1}
    assert runs["a"] == runs["b"]
    assert runs["a"]["epochs"] != runs["c"]["epochs"]  # the seed matters, so the check can fail
    # The failing gate says why, and the outputs are still written.
    assert any(line.startswith("FAILED: test accuracy") for line in outs["c"])
    assert outs["c"][-1].startswith("Metrics: ") and (isolated / "c" / "curves.png").exists()


def _subprocess_run(out_dir: Path, devices: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    args = [sys.executable, str(EXAMPLES / "mnist.py"), "--dataset", "digits", "--seed", "5"]
    args += ["--epochs", "2", "--max-steps", "6", "--batch-size", "64", "--train-subset", "256"]
    args += ["--no-progress", "--no-download", "--output-dir", str(out_dir)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_eight_devices_match_one(tmp_path):
    procs = {n: _subprocess_run(tmp_path / f"dev{n}", n) for n in (1, 8)}
    metrics = {}
    for n, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode()
        metrics[n] = json.loads((tmp_path / f"dev{n}" / "metrics.json").read_text())
    assert metrics[1]["devices"]["count"] == 1 and metrics[8]["devices"]["count"] == 8
    one, eight = metrics[1]["epochs"], metrics[8]["epochs"]
    assert [e["steps"] for e in one] == [e["steps"] for e in eight] == [4, 2]
    for a, b in zip(one, eight, strict=True):
        for key in ("running_loss", "train_loss", "test_loss"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4)
        # Accuracies count examples: equal unless a prediction sits on a near-tie, and then
        # off by one example (of at least 128).
        for key in ("running_accuracy", "train_accuracy", "test_accuracy"):
            assert abs(b[key] - a[key]) <= 1 / 128 + 1e-12
    np.testing.assert_allclose(
        metrics[8]["final_params_checksum"], metrics[1]["final_params_checksum"], rtol=1e-5
    )


@pytest.mark.slow
def test_auto_dataset_falls_back(isolated, capsys):
    logs: list[str] = []
    load = functools.partial(mnist_data.load, "auto", allow_download=False, progress=False)
    assert load(log=logs.append).name == "digits"
    assert logs[0].startswith("MNIST cannot be had")
    assert "dataset-fashion-mnist" in logs[1]
    _fake_idx_dataset(isolated / "debian", seed=4)  # as if the Debian package were installed
    logs.clear()
    ds = load(log=logs.append)
    assert (ds.name, ds.source) == ("fashion_mnist", str(isolated / "debian"))
    assert len(logs) == 1


@pytest.mark.slow
def test_auto_dataset_says_when_the_cache_is_not_writable(isolated, monkeypatch):
    # It said "the download failed: offline?" for a cache folder it could not write.
    (isolated / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "a-file" / "cache"))
    logs: list[str] = []
    assert mnist_data.load("auto", progress=False, log=logs.append).name == "digits"
    assert "offline" not in logs[0]
    folder = isolated / "a-file" / "cache" / "jaxloss" / "mnist"
    assert f"cannot write to the download folder {folder}: Not a directory" in logs[0]


def test_demo_flag_defaults_and_explicit_flags_win():
    args = mnist_flags.parse_args(["--demo"])
    assert (args.dataset, args.epochs, args.train_subset) == ("auto", None, 12_000)
    args = mnist_flags.parse_args(["--demo", "--dataset", "digits", "--epochs", "5"])
    assert (args.dataset, args.epochs) == ("digits", 5)
    assert mnist_flags.parse_args(["--demo", "--dataset=digits"]).dataset == "digits"
    assert mnist_flags.parse_args([]).dataset == "mnist"
    epochs = {
        (tuple(demo), name): mnist_flags.default_epochs(mnist_flags.parse_args(demo), name)
        for demo in ([], ["--demo"])
        for name in ("digits", "fashion_mnist")
    }
    assert list(epochs.values()) == [30, 10, 15, 2]
    assert mnist_flags.default_epochs(mnist_flags.parse_args(["--epochs", "3"]), "digits") == 3


@pytest.mark.slow
def test_optax_loss_matches_jaxloss_with_label_smoothing():
    import jax

    logits = jax.random.normal(jax.random.key(0), (64, 10)) * 3
    labels = jax.random.randint(jax.random.key(1), (64,), 0, 10)
    for smoothing in (0.0, 0.1):
        ours = mnist.make_loss("jaxloss", smoothing)(logits, labels)
        ref = mnist.make_loss("optax", smoothing)(logits, labels)
        assert ours.shape == (64,)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(
        mnist.make_loss("jaxloss", 0.1)(logits, labels),
        mnist.make_loss("jaxloss", 0.0)(logits, labels),
    )


@pytest.mark.slow
def test_max_pool_matches_flax():
    import jax
    from flax import nnx

    x = jax.random.normal(jax.random.key(2), (3, 8, 6, 5))
    expected = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(mnist.max_pool_2x2(x), expected)


@pytest.mark.slow
def test_step_time_script_writes_both_medians(isolated, capsys):
    import mnist_step_time

    out_dir = isolated / "timing"
    status = mnist_step_time.main(
        [
            *["--dataset", "digits", "--model", "mlp", "--batch-size", "32"],
            *["--rounds", "2", "--steps", "1"],
            *["--no-progress", "--output-dir", str(out_dir)],
        ]
    )
    assert status == 0
    result = json.loads((out_dir / "loss_timing.json").read_text())
    for kind in ("jaxloss", "optax"):
        assert len(result["step_time"][kind]["runs_ms"]) == 2
        assert result["step_time"][kind]["median_ms"] > 0
    assert "ratio" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# The command line and the docs


def _flags(text: str) -> set[str]:
    """Every --flag in `text` (not XLA's --xla_... flags)."""
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z](?![\w-])", text))


def test_help_explains_every_flag_it_mentions(monkeypatch):
    # --help pointed to --time-steps and the README to --num-processes, both hidden.
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside "(default: ...)"
    parser = mnist_flags.build_parser(mnist.__doc__)  # what --help prints
    text = " ".join(parser.format_help().split())
    listed = {o for a in parser._actions for o in a.option_strings}
    assert _flags(text) <= listed
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        if action.default is not None and action.default is not False and action.dest != "help":
            assert f"(default: {action.default})" in text, action.option_strings


def test_docs_page_mentions_only_real_flags():
    import mnist_step_time  # noqa: F401  (its own flags are --rounds and --steps)

    page = (Path(__file__).resolve().parents[1] / "docs" / "mnist.md").read_text()
    listed = {o for a in mnist_flags.build_parser()._actions for o in a.option_strings}
    assert _flags(page) - {"--rounds", "--steps"} <= listed
    for flag in listed - {"-h", "--help"}:
        assert f"`{flag}" in page, f"docs/mnist.md does not document {flag}"


# --------------------------------------------------------------------------------------------
# Outputs: faults found by injection, each test fails without its fix


@pytest.mark.slow
def test_unusable_output_dir_fails_before_training(isolated, capsys):
    # The folder was first touched after training: a bad one lost the whole run.
    (isolated / "a-file").write_text("")
    out_dir = isolated / "a-file" / "out"
    status = mnist.main(["--dataset", "digits", "--output-dir", str(out_dir), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2
    assert f"error: cannot write to the output folder {out_dir}: Not a directory" in captured.err
    assert "Training" not in captured.out


@pytest.mark.slow
@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes into a read-only folder anyway (CI runs as root); the test above "
    "covers the same check with a folder under a regular file",
)
def test_read_only_output_dir_fails_before_training(isolated, capsys):
    out_dir = isolated / "ro"
    out_dir.mkdir(mode=0o555)
    try:
        status = mnist.main(["--dataset", "digits", "--output-dir", str(out_dir)])
    finally:
        out_dir.chmod(0o755)
    assert status == 2
    assert "Permission denied" in capsys.readouterr().err


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / "metrics.json"
    nan, inf = float("nan"), float("inf")
    mnist_support.write_json(path, {"a": nan, "b": [1.5, inf], "c": {"d": -inf, "e": 2}})
    assert _strict_json(path) == {"a": None, "b": [1.5, None], "c": {"d": None, "e": 2}}


@pytest.mark.slow
def test_diverged_run_writes_valid_json(isolated, capsys):
    out_dir = isolated / "out"
    status, _, _ = _run(
        capsys,
        *["--dataset", "digits", "--model", "mlp", "--learning-rate", "1e30", "--epochs", "1"],
        *["--max-steps", "3", "--schedule", "constant", "--output-dir", str(out_dir)],
    )
    assert status == 0
    (epoch,) = _strict_json(out_dir / "metrics.json")["epochs"]
    assert epoch["test_loss"] is None  # NaN, written as null


@pytest.mark.slow
def test_concurrent_writers_never_leave_a_broken_file(tmp_path):
    # A fixed temporary name made two runs into one folder corrupt metrics.json and crash.
    path = tmp_path / "metrics.json"
    payloads = [{"writer": i, "rows": [i] * 20_000} for i in range(4)]
    mnist_support.write_json(path, payloads[0])
    failures: list[BaseException] = []

    def write(i):
        try:
            for _ in range(40):
                mnist_support.write_json(path, payloads[i])
        except BaseException as err:  # reported by the main thread
            failures.append(err)

    def read():
        try:
            for _ in range(200):
                assert _strict_json(path) in payloads
        except BaseException as err:  # reported by the main thread
            failures.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [], failures[:3]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary files left


def _tiny_metrics(test_accuracy: float) -> dict:
    config = {"label_smoothing": 0.1, "model": "cnn", "loss": "jaxloss", "learning_rate": 1e-3}
    config |= {"schedule": "cosine", "batch_size": 128}
    dataset = {"title": "Fashion-MNIST", "train_examples": 60000, "test_examples": 10000}
    row = {"epoch": 1}
    for kind, acc in (("running", 0.5), ("train", 0.86), ("test", test_accuracy)):
        row |= {f"{kind}_loss": 1 - acc, f"{kind}_accuracy": acc}
    steps = {"steps_per_epoch": 4, "loss": [2.0, 1.5, 1.0, 0.5], "accuracy": [0.1, 0.4, 0.6, 0.8]}
    return {
        "config": config,
        "dataset": dataset | {"train_eval_examples": 10000},
        "train_steps": steps,
        "epochs": [row],
    }


def test_running_mean():
    np.testing.assert_allclose(
        mnist_plot.running_mean([4.0, 2.0, 0.0, 6.0], 2), [4.0, 3.0, 1.0, 3.0]
    )
    np.testing.assert_allclose(mnist_plot.running_mean([1.0, 3.0], 1), [1.0, 3.0])


@pytest.mark.slow  # matplotlib's import: over a second
def test_curves_show_learning_within_one_epoch():
    # A one-epoch curves.png was three dots: one per measurement, at epoch 1.
    import matplotlib.pyplot as plt

    metrics = _tiny_metrics(0.8)
    losses = list(np.linspace(2.3, 0.4, 400))
    metrics["train_steps"] = {"steps_per_epoch": 400, "loss": losses, "accuracy": [0.5] * 400}
    fig = mnist_plot.figure(metrics)
    try:
        ax_loss = fig.axes[0]
        (curve,) = [
            line for line in ax_loss.get_lines() if line.get_label().startswith("train: each")
        ]
        x, y = curve.get_data()
        assert len(x) == 400 and x[0] == 1 / 400 and x[-1] == 1.0  # in epochs
        np.testing.assert_allclose(y, mnist_plot.running_mean(losses, 20))
        assert "mean of the last 20 steps" in curve.get_label()
    finally:
        plt.close(fig)


@pytest.mark.slow
def test_curves_png_is_replaced_not_rewritten_in_place(tmp_path):
    # A reader that has the old file (here: a hard link to it) must never see it change.
    png = tmp_path / "curves.png"
    outputs = mnist_support.Outputs(tmp_path)
    assert outputs.save(_tiny_metrics(0.8)) is None
    old = png.read_bytes()
    os.link(png, tmp_path / "old.png")
    assert outputs.save(_tiny_metrics(0.9)) is None
    assert (tmp_path / "old.png").read_bytes() == old
    assert png.read_bytes() != old and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.json", "old.png"]
    assert png.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------
# Reliability: each test failed before its fix


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--learning-rate", "nan", "argument --learning-rate: nan is not a finite number > 0"),
        ("--learning-rate", "inf", "argument --learning-rate: inf is not a finite number > 0"),
        ("--learning-rate", "0", "argument --learning-rate: 0 is not a finite number > 0"),
        (
            "--learning-rate",
            "-0.001",
            "argument --learning-rate: -0.001 is not a finite number > 0",
        ),
        ("--seed", "-1", "argument --seed: -1 is not an integer from 0 to 4294967295"),
        ("--seed", str(2**32), f"argument --seed: {2**32} is not an integer from 0 to 4294967295"),
        ("--seed", str(2**64), f"argument --seed: {2**64} is not an integer from 0 to"),
        (
            "--min-test-accuracy",
            "1.5",
            "argument --min-test-accuracy: 1.5 is not a number in [0, 1]",
        ),
        ("--min-test-accuracy", "-0.1", "argument --min-test-accuracy: -0.1 is not a number in"),
        ("--min-test-accuracy", "nan", "argument --min-test-accuracy: nan is not a number in"),
        ("--min-test-accuracy", "87", "(a fraction: 0.87 for 87%)"),
    ],
)
def test_bad_values_are_refused_at_parsing(capsys, flag, value, message):
    # They trained and exited 0 (a NaN rate reported 10% and a null loss), failed after the data
    # had loaded with a raw traceback (seeds), or made the accuracy gate meaningless.
    with pytest.raises(SystemExit) as exc:
        mnist_flags.parse_args([flag, value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_good_values_at_the_edges_are_accepted():
    args = mnist_flags.parse_args(["--seed", str(2**32 - 1), "--min-test-accuracy", "1"])
    assert (args.seed, args.min_test_accuracy) == (2**32 - 1, 1.0)
    args = mnist_flags.parse_args(["--learning-rate", "1e-9", "--min-test-accuracy", "0"])
    assert (args.learning_rate, args.min_test_accuracy) == (1e-9, 0.0)


_SHORT = ["--dataset", "digits", "--model", "mlp", "--train-subset", "256", "--batch-size", "32"]


@pytest.mark.slow
def test_ctrl_c_keeps_the_metrics_so_far(isolated, capsys, monkeypatch):
    # Ctrl-C printed a traceback and wrote nothing.
    calls = []
    feed = mnist_support.global_arrays

    def interrupting(sharding, *local):
        if len(local) == 2:  # a training batch (evaluation passes a mask too)
            calls.append(1)
            if len(calls) == 12:  # the 4th step of epoch 2 (8 steps per epoch)
                raise KeyboardInterrupt
        return feed(sharding, *local)

    monkeypatch.setattr(mnist_support, "global_arrays", interrupting)
    out_dir = isolated / "out"
    try:
        status = mnist.main(
            [*_SHORT, "--epochs", "3", "--no-progress", "--output-dir", str(out_dir)]
        )
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a traceback")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 130
    assert err == [f"interrupted after 11 training steps; the metrics so far are in {out_dir}"]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1]
    assert len(metrics["train_steps"]["loss"]) == 11  # epoch 1's 8 and the 3 run in epoch 2
    assert (out_dir / "curves.png").exists()


@pytest.mark.slow
def test_metrics_are_written_at_the_next_chance(isolated, capsys, monkeypatch):
    # The output folder was written once, at the end: a failure there lost the whole run.
    failures = [OSError(errno.ENOSPC, "No space left on device")]
    write = mnist_support.write_atomic

    def flaky(path, data):
        if failures:
            raise failures.pop()
        write(path, data)

    monkeypatch.setattr(mnist_support, "write_atomic", flaky)
    out_dir = isolated / "out"
    status = mnist.main([*_SHORT, "--epochs", "2", "--no-progress", "--output-dir", str(out_dir)])
    out = capsys.readouterr().out
    assert status == 0
    assert f"warning: cannot write into {out_dir}: No space left on device" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]


@pytest.mark.slow
def test_metrics_that_could_never_be_written_fail_the_run(isolated, capsys, monkeypatch):
    def broken(path, data):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(mnist_support, "write_atomic", broken)
    out_dir = isolated / "out"
    status = mnist.main([*_SHORT, "--epochs", "2", "--no-progress", "--output-dir", str(out_dir)])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.strip().splitlines()[-1] == (
        f"error: metrics.json and curves.png were never written: cannot write into {out_dir}: "
        "Permission denied"
    )
    assert "Metrics: " not in captured.out and not (out_dir / "metrics.json").exists()


# --------------------------------------------------------------------------------------------
# make demo


def _make_dry_run(tmp_path: Path, target: str, *stamps: str) -> str:
    """`make -n target` against a venv in tmp_path holding `stamps` (files newer than pyproject)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    for stamp in stamps:
        (venv / stamp).touch()
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _pip_installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line and " -e " in line]


def test_make_demo_installs_only_the_examples_extra_and_shows_progress(tmp_path):
    # It installed the test and docs extras too (torch, playwright: 2.2 GB), quietly.
    commands = _make_dry_run(tmp_path, "demo")
    (install,) = _pip_installs(commands)
    assert install.endswith("-e '.[examples]'")
    assert " -q" not in install  # pip's own progress: what is downloaded, and how much
    assert "Installing jaxloss and the examples' dependencies" in commands


def test_make_test_still_installs_everything_after_make_demo(tmp_path):
    (install,) = _pip_installs(_make_dry_run(tmp_path, "install", ".installed-examples"))
    assert install.endswith("-e '.[test,examples,docs]'")
    assert _pip_installs(_make_dry_run(tmp_path / "full", "demo", ".installed")) == []


# --------------------------------------------------------------------------------------------
# docs/mnist.md's sample output is what its command prints

PAGE = ROOT / "docs" / "mnist.md"


def _sample() -> tuple[list[str], str]:
    """The page's CI command (the bash block with the accuracy gate) and the text block after it."""
    page = PAGE.read_text()
    match = re.search(
        r"```bash\n([^`]*--min-test-accuracy[^`]*)```.*?```text\n(.*?)```", page, re.S
    )
    assert match, "docs/mnist.md: no bash block with --min-test-accuracy followed by a text block"
    return shlex.split(match[1].replace("\\\n", " ")), match[2]


# What truly varies between runs of the same command: the timings (masked), and the last digits
# of losses and accuracies across machines (XLA:CPU's kernels and thread counts round
# differently, and 468 steps of Adam carry the difference on). Everything else must be the same.
_TIME = re.compile(r"\d+\.\d s\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?%?")
ACCURACY_POINTS, LOSS_NATS = 0.5, 0.02


def _compare_runs(printed: str, shown: str) -> list[str]:
    """The differences between two outputs of the command, beyond what truly varies."""
    printed_lines, shown_lines = printed.strip().splitlines(), shown.strip().splitlines()
    if len(printed_lines) != len(shown_lines):
        return [f"{len(printed_lines)} lines printed, {len(shown_lines)} shown"]
    problems = []
    for got, want in zip(printed_lines, shown_lines, strict=True):
        got, want = _TIME.sub("<time>", got), _TIME.sub("<time>", want)
        if _NUMBER.sub("#", got) != _NUMBER.sub("#", want):
            problems.append(f"printed {got!r}\n  shown {want!r}")
            continue
        for a, b in zip(_NUMBER.findall(got), _NUMBER.findall(want), strict=True):
            if a.endswith("%"):
                close = abs(float(a[:-1]) - float(b[:-1])) <= ACCURACY_POINTS
            elif len(a.partition(".")[2]) == 4:  # a loss
                close = abs(float(a) - float(b)) <= LOSS_NATS
            else:  # counts, epochs, steps
                close = a == b
            if not close:
                problems.append(f"{a} printed, {b} shown, in {want!r}")
    return problems


def test_sample_comparison_masks_only_what_varies():
    shown = "epoch 1/1 | 0.3577 87.21% | 201.5 s (74.6 s CPU)\nsteps 468"
    assert _compare_runs("epoch 1/1 | 0.3601 87.60% | 99.0 s (12.1 s CPU)\nsteps 468", shown) == []
    assert _compare_runs("epoch 1/1 | 0.3577 87.21% | 1.0 s (1.0 s CPU)\nsteps 469", shown)
    assert _compare_runs("epoch 1/1 | 0.3577 86.50% | 1.0 s (1.0 s CPU)\nsteps 468", shown)
    assert _compare_runs("epoch 1/1 | 0.4000 87.21% | 1.0 s (1.0 s CPU)\nsteps 468", shown)
    assert _compare_runs("epoch 1/2 | 0.3577 87.21% | 1.0 s (1.0 s CPU)\nsteps 468", shown)
    assert _compare_runs("epoch 1/1 | 0.3577 87.21% | 1.0 s\nsteps 468", shown)


@pytest.mark.slow
def test_docs_sample_output_is_what_the_command_prints(tmp_path, monkeypatch):
    # The page showed 87.21% where the command printed 87.30%. This runs the page's own command:
    # one epoch of the CNN on Debian's Fashion-MNIST, a few minutes of CPU (CI installs it).
    monkeypatch.delenv("JAXLOSS_DATA_DIR", raising=False)
    if mnist_data.find_local("fashion_mnist", cache_dir=tmp_path / "no-cache")[0] is None:
        pytest.skip("Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist`")
    command, shown = _sample()
    assert command[:2] == ["python", "examples/mnist.py"]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXLOSS_DATA_DIR")}
    env |= {"JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's jaxloss
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "mnist.py"), *command[2:]],
        cwd=tmp_path,  # the relative --output-dir lands here, as the page prints it
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # as a terminal shows them: the data line is on stderr
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout
    assert _compare_runs(result.stdout, shown) == [], result.stdout
