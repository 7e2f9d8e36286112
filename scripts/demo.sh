#!/usr/bin/env bash
# The main job: installs what iris needs, builds it, and asks the built-in model (models/iris-shapes, trained by
# scripts/train-builtin.sh on the generated shapes world) a question about a bundled image.
# Usage: scripts/demo.sh [extra iris run flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${IRIS_JOBS:-2}" --target iris
build/bin/iris run --image examples/scene1.png -p "How many red circles are there?" --timings "$@"
