"""Where the start-up time of ``mergelang run`` goes: everything before the first key is merged.

Makes two SD1-layout checkpoints with every key of the real model (1131) at a tiny width
(``--scale``, default 1/80: 2 MB files), so that merging costs next to nothing and what is
left is the start-up, which depends on the number of keys, not their size. Then:

- whole processes, each the best of ``--repeat`` runs: the interpreter alone
  (``python -c pass``), ``import torch``, ``mergelang check``, and ``mergelang run`` with the
  input hashes cached (a later run) and with a fresh cache (a first run);
- one process, phase by phase (each phase timed once, in the order a run does them, the
  best of ``--repeat`` processes): importing ``mergelang.api``; parsing and checking the
  recipe; planning (finding the inputs, reading and parsing their headers, the hash-cache
  and output-cache decisions, the layouts of the outputs); importing the executor (torch);
  the run itself; and, within planning, reading the two headers alone.

Usage: ``python bench/startup.py [--scale 0.0125] [--repeat 5] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = (
    'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
    'save weighted_sum(a, b, alpha=0.3) to "out.safetensors" as fp16\n'
)


def phases(folder: Path) -> dict[str, float]:
    """The phases of one run, timed in this process (a fresh interpreter per call)."""
    found: dict[str, float] = {}
    start = time.perf_counter()
    import mergelang.api as api

    found["import mergelang.api"] = time.perf_counter() - start
    assert "torch" not in sys.modules, "importing mergelang.api imported torch"
    mark = time.perf_counter()
    checked = api.load(folder / "recipe.merge")
    found["parse and check"] = time.perf_counter() - mark
    from mergelang.io.safetensors_header import open_regular, read_header_from

    mark = time.perf_counter()
    for name in ("a", "b"):
        path = folder / f"{name}.safetensors"
        file, size = open_regular(path)
        with file:
            read_header_from(file, size, path)
    found["  (reading the 2 headers alone)"] = time.perf_counter() - mark
    mark = time.perf_counter()
    plan = api._plan(
        checked,
        set=None,
        models_dir=(),
        out_dir=None,
        cache_dir=folder / "cache",
        use_cache=True,
        force=True,
        device="cpu",
        workers=None,
        hash_inputs=True,
        nan="error",
        hash_during_run=True,
    )
    found["planning (headers, hash and cache decisions)"] = time.perf_counter() - mark
    found["  torch imported by planning"] = float("torch" in sys.modules)
    mark = time.perf_counter()
    from mergelang.run.executor import execute

    found["import the executor (torch)"] = time.perf_counter() - mark
    mark = time.perf_counter()
    execute(plan)
    found["the run (2 MB merged, written, fsynced)"] = time.perf_counter() - mark
    found["total in process"] = time.perf_counter() - start
    return found


def wall(command: list[str], repeat: int, before: object = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if callable(before):
            before()
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1 / 80)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--phases", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases:
        print(json.dumps(phases(args.phases)))
        return
    from mergelang.testing import make_checkpoint

    root = Path(tempfile.mkdtemp(prefix="mergelang-startup-", dir=args.dir))
    try:
        for seed, name in enumerate("ab", start=1):
            make_checkpoint(root / f"{name}.safetensors", "sd1", scale=args.scale, seed=seed)
        recipe = root / "recipe.merge"
        recipe.write_text(RECIPE, encoding="utf-8")
        py = [sys.executable]
        cache = str(root / "cache")
        run = [*py, "-m", "mergelang", "run", str(recipe), "--quiet", "--force"]

        def fresh() -> None:
            shutil.rmtree(cache, ignore_errors=True)

        rows = {
            "python -c pass": wall([*py, "-c", "pass"], args.repeat),
            "python -c 'import torch'": wall([*py, "-c", "import torch"], args.repeat),
            "mergelang check": wall([*py, "-m", "mergelang", "check", str(recipe)], args.repeat),
            "mergelang run, fresh cache": wall([*run, "--cache-dir", cache], args.repeat, fresh),
            "mergelang run, hashes cached": wall([*run, "--cache-dir", cache], args.repeat),
        }
        for name, seconds in rows.items():
            print(f"{name:<46}{seconds:8.3f} s")
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            out = subprocess.run(
                [*py, str(Path(__file__).resolve()), "--phases", str(root)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for name, seconds in json.loads(out).items():
                best[name] = min(best.get(name, float("inf")), seconds)
        print("\nphases of one run, in one process (best of each):")
        for name, seconds in best.items():
            if name.startswith("  torch"):
                print(f"{name:<46}{'yes' if seconds else 'no':>8}")
            else:
                print(f"{name:<46}{seconds:8.3f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
