#!/usr/bin/env bash
# Reproduces one seed's column of the results table of README.md: the same CNN, data and budget
# (4 epochs of Fashion-MNIST, 1,872 steps of 128): a grid of constant learning rates, the default
# cycle, and the LR range test of this seed with the two schedules that take its advice from its
# lr_find.json. Usage: bash examples/mnist/results.sh [OUTPUT_DIR] [SEED]; the table is seeds 0-2.
# A finished run in OUTPUT_DIR is not trained again: it resumes to its end and is evaluated.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/mnist_results}
seed=${2:-0}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
main() {
  "$python" examples/mnist/main.py --config=examples/mnist/configs/default.py \
    --config.progress=False --config.seed="$seed" "$@" 2>/dev/null
}
run() {
  local name=$1
  shift
  local start accuracy
  start=$(date +%s)
  accuracy=$(main --workdir="$out/$name-seed$seed" "$@" |
    sed -n 's/^Test accuracy after [0-9]* steps: \([0-9.]*\).*/\1/p')
  echo "| $name | $* | $accuracy | $(($(date +%s) - start)) s |"
}
echo "| run | flags | test accuracy (seed $seed) | time |"
echo "|---|---|---|---|"
run constant-0.01 --config.schedule=constant --config.learning_rate=0.01
run constant-0.03 --config.schedule=constant --config.learning_rate=0.03
run constant-0.1 --config.schedule=constant --config.learning_rate=0.1
run constant-0.2 --config.schedule=constant --config.learning_rate=0.2
run cyclic-default --config.mode=triangular
# The LR range test of this seed; it writes lr_find.json (and lr_find.png) into its workdir.
range_test="$out/lr-find-seed$seed"
start=$(date +%s)
main --workdir="$range_test" --config.find_lr=True >"$range_test.txt"
steps=$(sed -n 's/^LR range test: \([0-9]*\) steps.*/\1/p' "$range_test.txt")
pair=$(sed -n 's/^Suggested: \(.*\)/\1/p' "$range_test.txt")
echo "| range test | --config.find_lr=True | $steps steps: $pair | $(($(date +%s) - start)) s |"
run cyclic-range-test --config.lr_from="$range_test/lr_find.json"
run onecycle-range-test --config.schedule=onecycle --config.lr_from="$range_test/lr_find.json"
