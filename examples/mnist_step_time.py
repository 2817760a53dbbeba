"""Times the MNIST example's train step with jaxloss's cross-entropy and with optax's.

    python examples/mnist_step_time.py --dataset digits --model mlp --rounds 21

Both steps are compiled first, then timed in interleaved rounds (who goes first alternates)
of --steps steps each; round 0 only warms up. The medians are printed and written to
<--output-dir>/loss_timing.json. Every flag of examples/mnist.py is accepted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist
import mnist_data
import mnist_flags
import mnist_support as support


def time_steps(args: argparse.Namespace, ds, rounds: int, steps: int) -> dict:
    batch = args.batch_size
    rows = support.process_rows(batch)
    x, y = ds.x_train[:batch][rows], ds.y_train[:batch][rows]
    kinds = ("jaxloss", "optax")
    states = {}
    for kind in kinds:
        tr = mnist.build_trainer(args, 1000, kind)
        gx, gy = support.global_arrays(tr.batch_sharding, x, y)
        fn = tr.train_step.lower(tr.params, tr.opt_state, gx, gy, 0).compile()
        states[kind] = [fn, tr.params, tr.opt_state, gx, gy]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds + 1):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            fn, params, opt_state, gx, gy = states[kind]
            t0 = time.perf_counter()
            for s in range(steps):
                params, opt_state, loss, _ = fn(params, opt_state, gx, gy, s)
            jax.block_until_ready((params, loss))
            if r > 0:  # round 0 warms caches and thread pools
                times[kind].append((time.perf_counter() - t0) / steps)
            states[kind][1:3] = [params, opt_state]
    result = {
        k: {"median_ms": 1e3 * statistics.median(v), "runs_ms": [1e3 * t for t in v]}
        for k, v in times.items()
    }
    ratio = result["jaxloss"]["median_ms"] / result["optax"]["median_ms"]
    return {"step_time": result, "ratio_jaxloss_over_optax": ratio}


def main(argv: Sequence[str] | None = None) -> int:
    parser = mnist_flags.build_parser(__doc__)
    timing = parser.add_argument_group("step timing")
    timing.add_argument("--rounds", type=int, default=21, help="timed rounds per loss")
    timing.add_argument("--steps", type=int, default=10, help="train steps per round")
    args = mnist_flags.parse_args(argv, parser)
    output_dir = support.prepare_output_dir(args.output_dir)
    ds = mnist_data.load(
        args.dataset, args.data_dir, allow_download=not args.no_download, progress=False
    )
    result = time_steps(args, ds, args.rounds, args.steps)
    step = result["step_time"]
    print(
        f"train step ({args.model}, batch {args.batch_size}, {jax.device_count()} device(s), "
        f"{args.rounds} interleaved rounds of {args.steps} steps): jaxloss "
        f"{step['jaxloss']['median_ms']:.2f} ms, optax {step['optax']['median_ms']:.2f} ms, "
        f"ratio {result['ratio_jaxloss_over_optax']:.3f}"
    )
    support.write_json(output_dir / "loss_timing.json", result)
    print(f"Step times written to {output_dir / 'loss_timing.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
