"""The pre-commit formatter hook installs without torch: ``hooks/fmt`` is a distribution of
mergelang's package that depends on lark and rich alone, and the formatter's import closure
holds no torch, safetensors or numpy.

The install test builds the hook's wheel offline (hatchling from this environment), installs
it with ``--no-deps`` into a fresh virtual environment without system site packages, adds lark
and rich (copied from this environment's installed files, so no index is needed), and runs
the hook's command on a recipe there."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import mergelang

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "hooks" / "fmt"
UGLY = (
    'model   a="x.safetensors"\nmodel b = "y.safetensors"\n'
    'save weighted_sum( a,b,alpha=0.5 ) to "o"\n'
)
HEAVY = ("torch", "safetensors", "numpy")


def test_the_formatter_imports_no_torch(tmp_path: Path) -> None:
    recipe = tmp_path / "r.merge"
    recipe.write_text(UGLY)
    program = (
        "import sys, json\n"
        "sys.argv = ['mergelang-fmt', '--write', sys.argv[1]]\n"
        "from mergelang.cli.fmt import hook_main\n"
        "try:\n"
        "    hook_main()\n"
        "except SystemExit as done:\n"
        "    status = done.code\n"
        "print(json.dumps([status, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    status, modules = json.loads(done.stdout.splitlines()[-1])
    assert status == 0
    assert not [m for m in HEAVY if m in modules]
    assert {"lark", "rich"} <= set(modules)
    assert recipe.read_text() == mergelang.format_text(UGLY)


def test_the_hook_distribution_depends_on_lark_and_rich_only() -> None:
    text = (HOOK / "pyproject.toml").read_text()
    assert 'dependencies = ["lark>=1.1.9,<2", "rich>=13"]' in text
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "entry: mergelang-fmt --write" in hooks
    # Both distributions install the hook's command, so the repository's own hook works too.
    script = 'mergelang-fmt = "mergelang.cli.fmt:hook_main"'
    assert script in text
    assert script in (ROOT / "pyproject.toml").read_text()


def _copy_distribution(name: str, site: Path) -> None:
    """Install distribution ``name`` into ``site`` from this environment's installed files."""
    dist = importlib.metadata.distribution(name)
    for file in dist.files or ():
        source = Path(str(dist.locate_file(file)))
        if file.parts[0] == ".." or not source.is_file():
            continue  # scripts outside site-packages are not needed
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _requirements(name: str) -> list[str]:
    """``name`` and every distribution it requires (no extras), recursively."""
    found: list[str] = []
    todo = [name]
    while todo:
        current = todo.pop()
        if current.lower() in (f.lower() for f in found):
            continue
        found.append(current)
        for requirement in importlib.metadata.requires(current) or ():
            if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
                continue
            token = requirement.split(";")[0].strip()
            for stop in "<>=!~[ (":
                token = token.split(stop)[0]
            todo.append(token)
    return found


@pytest.mark.skipif(
    importlib.util.find_spec("hatchling") is None, reason="hatchling builds the hook's wheel"
)
def test_the_hook_installs_and_runs_without_torch(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(HOOK)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = wheels.glob("mergelang_fmt-*.whl")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run(
        [*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert purelib != sysconfig.get_paths()["purelib"]
    for name in {*_requirements("lark"), *_requirements("rich")}:
        _copy_distribution(name, Path(purelib))

    recipe = tmp_path / "r.merge"
    recipe.write_text(UGLY)
    script = venv / ("Scripts/mergelang-fmt.exe" if os.name == "nt" else "bin/mergelang-fmt")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    checked = subprocess.run(
        [str(script), "--check", str(recipe)], capture_output=True, text=True, env=env
    )
    assert checked.returncode == 1, checked.stderr
    assert "would reformat" in checked.stdout + checked.stderr
    written = subprocess.run(
        [str(script), "--write", str(recipe)], capture_output=True, text=True, env=env
    )
    assert written.returncode == 0, written.stderr
    assert recipe.read_text() == mergelang.format_text(UGLY)
    no_torch = subprocess.run(
        [str(python), "-c", "import torch"], capture_output=True, text=True, env=env
    )
    assert "No module named 'torch'" in no_torch.stderr
