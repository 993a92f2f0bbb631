#!/usr/bin/env bash
# The main job on built-in demo data: set up, generate real-layout demo checkpoints (small
# widths, every real key name), inspect them, then check and run every example recipe on them
# and show what was made. Works offline; run it again and every output is up to date.
#
# DEMO_DIR picks the folder (default demo/). MERGELANG_DEMO_SETUP=0 skips the set-up step and
# uses the mergelang already on PATH (the test suite runs the script that way).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MERGELANG_DEMO_SETUP:-1}" != 0 ]; then
    bash scripts/setup.sh
    export PATH="$PWD/.venv/bin:$PATH"
fi
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
# The listing is written whole before any of it is printed: a pipe into `head` would close
# early and kill the writer with SIGPIPE, which `pipefail` turns into a failed demo.
listing=$(find "$DEMO/out" -name '*.safetensors' | LC_ALL=C sort)
count=$(printf '%s\n' "$listing" | grep -c . || true)
echo "Made from examples/ into $DEMO/out/: $count checkpoints"
printf '%s\n' "$listing" | awk 'NR <= 40'
if [ "$count" -gt 40 ]; then
    echo "... and $((count - 40)) more"
fi
mergelang show "$DEMO/out/weighted-sum/out/sd15-anime-gradv.safetensors" --no-hashes
