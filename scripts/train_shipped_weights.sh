#!/usr/bin/env bash
# Retrain every checkpoint shipped in edgegate/models/weights/ (CPU, 2 cores: about 65 min).
# Each checkpoint records this command, its test metrics and the torch version.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEGATE=${EDGEGATE:-.venv/bin/edgegate}
PY=${PY:-.venv/bin/python}

train() {  # train SPEC ARGS...: writes the shipped weights file of SPEC
  local spec=$1; shift
  local out
  out=$("$PY" -c "import sys; from edgegate.models.checkpoint import weights_file; import os; print(os.path.relpath(weights_file(sys.argv[1])))" "$spec")
  "$EDGEGATE" train "$spec" "$@" -o "$out"
}

train mobilenet-v3-se --epochs 30
train gc-mobilenet --epochs 30
train mobilenet-v3-large-se --epochs 20 --half  # 4.2 M params: float16 halves the file
for variant in softmax clipped gated; do
  train "qvit:attention=$variant" --epochs 60
done
for variant in softmax clipped gated; do
  train "qlm:attention=$variant" --epochs 8
done
for model in gla-lm hgrn-lm gdn-lm; do
  train "$model" --epochs 5
done
