#!/usr/bin/env bash
# Reproduces the results table of README.md: the same CNN, data and budget (4 epochs of
# Fashion-MNIST, 1,872 steps of 128), a small grid of constant learning rates against the
# cyclical schedules. Usage: bash examples/mnist/results.sh [OUTPUT_DIR] [SEED]
# A finished run in OUTPUT_DIR is not trained again: it resumes to its end and is evaluated.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/mnist_results}
seed=${2:-0}
python=${PYTHON:-.venv/bin/python}
run() {
  local name=$1
  shift
  local accuracy
  accuracy=$("$python" examples/mnist/main.py --workdir="$out/$name-seed$seed" \
    --config=examples/mnist/configs/default.py --config.progress=False --config.seed="$seed" "$@" \
    2>/dev/null | sed -n 's/^Test accuracy after [0-9]* steps: \([0-9.]*\).*/\1/p')
  echo "| $name | $* | $accuracy |"
}
echo "| run | flags | test accuracy (seed $seed) |"
echo "|---|---|---|"
run constant-0.01 --config.schedule=constant --config.learning_rate=0.01
run constant-0.03 --config.schedule=constant --config.learning_rate=0.03
run constant-0.1 --config.schedule=constant --config.learning_rate=0.1
run constant-0.2 --config.schedule=constant --config.learning_rate=0.2
run triangular --config.mode=triangular
run triangular2 --config.mode=triangular2
run exp_range --config.mode=exp_range
run onecycle --config.schedule=onecycle --config.max_lr=0.1
# The pair the LR range test recommends (--config.find_lr=True): (valley / 4, valley).
run triangular-range-test --config.base_lr=0.00215 --config.max_lr=0.0086
