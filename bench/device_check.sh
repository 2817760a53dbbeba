#!/usr/bin/env bash
# Run the reduced benchmark set on whatever accelerator JAX sees (GPU, TPU, or the CPU if none),
# in under 5 minutes, and print the Markdown table last.
#
#   bench/device_check.sh [more `python -m bench` options]
#
# PYTHON picks the interpreter (default: .venv/bin/python if it imports jax, else python3).
# Results go to $OUT/device_check when OUT is set (the device runner fetches $OUT), else to
# bench/out/device_check.
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import jax" 2>/dev/null; then
      py="$candidate"
      break
    fi
  done
fi
if [ -z "$py" ]; then
  echo "device_check: no Python that can import jax (set PYTHON=...)" >&2
  exit 2
fi

out="${OUT:-bench/out}/device_check"
mkdir -p "$out"
# JAX would otherwise take 75% of GPU memory up front and leave none for torch.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"

command -v nvidia-smi >/dev/null 2>&1 \
  && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c "import jax; print('jax', jax.__version__, 'backend', jax.default_backend(), jax.devices())"
if [ "$("$py" -c 'import jax; print(jax.default_backend())')" = "cpu" ]; then
  echo "device_check: JAX sees no accelerator; running on the CPU instead" >&2
fi

status=0
# 270 s for the suite leaves room for interpreter start-up inside the 5 minutes.
timeout 270 "$py" -m bench --quick --out "$out" "$@" >"$out/run.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "device_check: python -m bench exited with $status; last lines of $out/run.log:" >&2
  tail -n 40 "$out/run.log" >&2
fi
if [ -f "$out/table.md" ]; then
  echo
  cat "$out/table.md"
fi
exit "$status"
