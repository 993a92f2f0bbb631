"""The README's first command: ``bash scripts/demo.sh``, run for real (set-up skipped).

It makes the demo models, shows them, format-checks, checks and runs every example, lists
what was made and shows one output. Run twice: the second run finds every output up to date.
Runs on a listing of 76 outputs have failed at random before (a pipe closed early under
``pipefail``); this test would catch that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(demo: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        DEMO_DIR=str(demo),
        MERGELANG_DEMO_SETUP="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        NO_COLOR="1",
    )
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_demo_script_runs_every_example_and_reruns_up_to_date(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    first = _run(demo)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    made = sorted(demo.glob("out/**/*.safetensors"))
    assert len(made) > 40
    assert f"Made from examples/ into {demo}/out/: {len(made)} checkpoints" in first.stdout
    assert f"... and {len(made) - 40} more" in first.stdout
    assert "sd15-anime-gradv" in first.stdout
    second = _run(demo)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "up to date" in second.stderr + second.stdout
    assert sorted(demo.glob("out/**/*.safetensors")) == made
