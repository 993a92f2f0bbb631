#!/usr/bin/env bash
# The main job on built-in demo data: set up, generate real-layout demo checkpoints
# (small widths, every real key name), inspect them, and check and format the example recipes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${DEMO_DIR:-demo}
python -m mergelang.testing demo "$DEMO/models"
for model in "$DEMO"/models/*.safetensors; do
    mergelang show "$model" --no-hashes
done
for recipe in examples/*.merge; do
    mergelang check "$recipe" --models-dir "$DEMO/models"
    mergelang fmt --check "$recipe"
done
