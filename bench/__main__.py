"""`python -m bench [--quick] [--linear-ce] [--out DIR] ...`: time on this machine
(`bench/runner.py`). `python -m bench --target tpu-v5e|tpu-v6e|h100 ...`: compile for an
accelerator without one and report the compiler's figures (`bench/aot.py`)."""

import sys

if __name__ == "__main__":
    if any(a == "--target" or a.startswith("--target=") for a in sys.argv[1:]):
        from bench.aot import main
    else:
        from bench.runner import main
    raise SystemExit(main())
