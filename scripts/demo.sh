#!/usr/bin/env bash
# The main job on built-in demo data: set up, generate real-layout demo checkpoints (small
# widths, every real key name), inspect them, then check and run every example recipe on them
# and show what was made. Works offline; run it again and every output is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${DEMO_DIR:-demo}
python -W "ignore:Failed to initialize NumPy" -m mergelang.testing demo "$DEMO/models"
for model in "$DEMO"/models/*.safetensors; do
    mergelang show "$model" --no-hashes
done
for recipe in examples/*.merge; do
    mergelang fmt --check "$recipe"
    mergelang check "$recipe" --models-dir "$DEMO/models"
    name=$(basename "$recipe" .merge)
    mergelang run "$recipe" --models-dir "$DEMO/models" --out-dir "$DEMO/out/$name" \
        --cache-dir "$DEMO/cache"
done
echo
echo "Made from examples/ into $DEMO/out/:"
find "$DEMO/out" -name '*.safetensors' | sort | head -n 40
mergelang show "$DEMO/out/weighted-sum/out/sd15-anime-gradv.safetensors" --no-hashes
