#!/usr/bin/env bash
# Creates .venv (if missing) and installs mergelang with its development tools.
# torch is pinned first to the CPU build this project is tested with; the project's own
# requirement is a range that build satisfies, so pip installs nothing heavier.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
