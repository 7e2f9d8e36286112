#!/usr/bin/env bash
# The main job: installs what iris needs, builds it, and answers a question about a bundled image.
# Until iris ships a trained model, the model is a small LLaVA-1.5-shaped folder with RANDOM weights and the real
# Mistral/Llama-2-style tokenizer from ../shared/tokenizers/mistral, so its answers are noise.
# Usage: scripts/demo.sh [extra iris run flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${IRIS_JOBS:-2}" --target iris
model=models/random-llava
if [[ ! -f $model/model.safetensors ]]; then
  tok=${IRIS_SHARED_DIR:-../shared}/tokenizers/mistral
  build/bin/iris init-model --preset tiny-llava --tokenizer "$tok" --seed 1 --out "$model"
fi
build/bin/iris run -m "$model" --image examples/scene1.png -p "What is in this image?" -n 32 --timings "$@"
