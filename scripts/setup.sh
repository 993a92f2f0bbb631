#!/usr/bin/env bash
# Creates .venv (if missing) and installs mergelang with its development tools.
#
# torch is installed first, pinned to 2.13.0, the version this project is tested with; the
# project's own requirement is a range that version satisfies, so pip installs nothing
# heavier afterwards. Which build of torch 2.13.0 you get is pip's choice: a wheel already on
# this machine (a local file or cache) is taken as it is; otherwise pip downloads the build
# its index serves, which on Linux from PyPI is the CUDA build (several GB). For the CPU build
# on a machine without one at hand, point pip at PyTorch's CPU index:
#
#     TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
#
# (any index or mirror works; PYTHON picks the interpreter, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
else
    "${PIP[@]}" "torch==2.13.0"
fi
"${PIP[@]}" -e ".[dev]"
