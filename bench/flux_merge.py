"""Merging the transformer models: Flux.1 dev and SD3.5 Large, in bf16 and in fp8.

Generates diffusion-only files of the real key names (Black Forest Labs' release form, every
key, widths scaled by ``--scale``) and times the same merge, each in its own process, in one
run, alternating between the two sides:

- **reference**: the minimal streaming loop written by hand, one torch thread: each key
  read in chunks of 2**18 elements with ``SafetensorsReader.read_into`` into one reused
  buffer per input, converted to float32 buffers, merged, cast into the output dtype
  (``mergelang.io.fp8.saturating_cast`` for fp8) and written with
  ``SafetensorsWriter.write_part``; fsynced and renamed like mergelang's outputs;
- **mergelang**: ``python -m mergelang run RECIPE --quiet --cache-dir DIR`` (its first run
  hashes the new inputs while it merges; the later runs find the hashes cached);
- **sd-mecha** (``--mecha PYTHON``, the python of a separate environment with
  ``sd-mecha==1.1.8``): the same merge through its own recipe API (``bench/mecha_worker.py``).

Jobs (``--job``):

- ``flux``: two Flux.1 dev files in bf16, a per-block weighted sum (the blocks of
  ``examples/flux-blocks.merge``) saved as bf16 (default scale 0.5: about 6 GB a file);
- ``sd35``: three SD3.5 Large files in bf16, ``add_difference(a, b, c, alpha=0.5)`` as bf16;
- ``fp8``: two Flux.1 dev files in ``float8_e4m3fn``, the per-block weighted sum saved as
  fp8 (scale 1: about 11.9 GB a file).

Each run's wall time and peak anonymous memory (RssAnon, polled every 5 ms) are printed, and
every output's tensors are compared (SHA-256 of each tensor's bytes) with the reference's.

Usage: ``python bench/flux_merge.py --job flux [--scale 0.5] [--repeat 2] [--dir DIR]
[--mecha /path/to/python] [--keep]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from process_stats import Run, run_process

from mergelang.arch import checkpoint_layout, get_architecture, key_dtype
from mergelang.io.dtypes import is_float_code, item_size, torch_dtype
from mergelang.io.fp8 import saturating_cast
from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.testing import synthetic_tensor

CHUNK = 1 << 18
FLUX_ALPHA = "{D00..D09: 0.3, D10..D18: 0.6, S: 0.5, IN: 0, OUT: 0.2, BASE: 0}"


@dataclass(frozen=True)
class Job:
    arch: str
    models: int
    dtype: str
    """The inputs' float dtype (safetensors code)."""
    save: str
    """The output's ``as`` name; its code is :attr:`out_code`."""
    out_code: str
    method: str
    scale: float


JOBS = {
    "flux": Job("flux-dev", 2, "BF16", "bf16", "BF16", "weighted_sum", 0.5),
    "sd35": Job("sd35-large", 3, "BF16", "bf16", "BF16", "add_difference", 0.5),
    "fp8": Job("flux-dev", 2, "F8_E4M3", "fp8", "F8_E4M3", "weighted_sum", 1.0),
}


def flux_block_value(block: str) -> float:
    """The weight of a Flux block in :data:`FLUX_ALPHA`, written out independently."""
    if block.startswith("D"):
        return 0.3 if int(block[1:]) <= 9 else 0.6
    if block.startswith("S"):
        return 0.5
    return {"IN": 0.0, "OUT": 0.2}.get(block, 0.0)


def recipe_text(job: Job, names: list[str]) -> str:
    models = "".join(f'model {name} = "{name}.safetensors"\n' for name in names)
    if job.method == "weighted_sum":
        call = f"weighted_sum(a, b, alpha={FLUX_ALPHA})"
    else:
        call = "add_difference(a, b, c, alpha=0.5)"
    return f'{models}save {call} to "out-mergelang.safetensors" as {job.save}\n'


# ---------------------------------------------------------------- inputs


def input_layout(job: Job) -> dict[str, tuple[int, ...]]:
    return dict(checkpoint_layout(job.arch, scale=job.scale, bare=True))


def write_input(path: Path, job: Job, seed: int) -> None:
    """A synthetic diffusion-only file: each float key made in bf16 (the testing
    module's values) and stored in the job's dtype."""
    layout = input_layout(job)
    codes = {key: key_dtype(key, job.dtype) for key in layout}
    entries = [OutputEntry(key, codes[key], shape) for key, shape in layout.items()]
    with SafetensorsWriter(path, entries, overwrite=True) as writer:
        for key, shape in layout.items():
            tensor = synthetic_tensor(key, shape, seed=seed, dtype="BF16")
            writer.write(key, tensor.to(torch_dtype(codes[key])))


# ---------------------------------------------------------------- the reference loop


def reference_worker(spec: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    job = Job(**spec["job"])
    arch = get_architecture(job.arch)
    readers = [SafetensorsReader(path) for path in spec["inputs"]]
    first = readers[0]
    entries = []
    weights: dict[str, float | None] = {}
    for key in first:
        code = first.info(key).dtype
        block = arch.block_of(f"{arch.denoiser.prefix}{key}")
        merged = block is not None and is_float_code(code)
        if job.method == "weighted_sum":
            weights[key] = flux_block_value(block) if merged and block else None
        else:
            weights[key] = 0.5 if merged else None
        stored = key_dtype(key, job.out_code) if merged else code
        entries.append(OutputEntry(key, stored, first.info(key).shape))
    inputs = {
        code: [torch.empty(CHUNK, dtype=torch_dtype(code)) for _ in readers]
        for code in {first.info(k).dtype for k in first}
    }
    x = [torch.empty(CHUNK) for _ in readers]
    out, spare = torch.empty(CHUNK), torch.empty(CHUNK)
    cast = {
        code: torch.empty(CHUNK, dtype=torch_dtype(code)) for code in {e.dtype for e in entries}
    }
    with SafetensorsWriter(spec["output"], entries, overwrite=True) as writer:
        for entry in entries:
            key, w = entry.key, weights[entry.key]
            code = first.info(key).dtype
            total = math.prod(entry.shape)
            for start in range(0, total, CHUNK):
                n = min(CHUNK, total - start)
                if w is None:
                    writer.write_part(key, start, first.read_into(key, start, inputs[code][0][:n]))
                    continue
                for i, reader in enumerate(readers):
                    x[i][:n].copy_(reader.read_into(key, start, inputs[code][i][:n]))
                o = out[:n]
                if job.method == "weighted_sum":  # (1 - w) * a + w * b
                    torch.mul(x[0][:n], 1 - w, out=o)
                    o.add_(torch.mul(x[1][:n], w, out=spare[:n]))
                else:  # a + w * (b - c)
                    torch.sub(x[1][:n], x[2][:n], out=o)
                    o.mul_(w).add_(x[0][:n])
                target = cast[entry.dtype][:n]
                if entry.dtype.startswith("F8"):
                    value, _ = saturating_cast(o, entry.dtype, target)
                else:
                    value = target.copy_(o)
                writer.write_part(key, start, value)


# ---------------------------------------------------------------- measuring


def tensor_digests(path: Path) -> dict[str, str]:
    found = {}
    with SafetensorsReader(path) as reader, path.open("rb") as handle:
        for key in reader:
            info = reader.info(key)
            handle.seek(reader.header.data_offset + info.start)
            digest = hashlib.sha256()
            left = info.end - info.start
            while left:
                data = handle.read(min(left, 1 << 24))
                digest.update(data)
                left -= len(data)
            found[key] = f"{info.dtype}:{digest.hexdigest()}"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=list(JOBS), default="flux")
    parser.add_argument("--scale", type=float, default=None, help="width scale (1 = full size)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp folder")
    parser.add_argument("--mecha", default=None, help="python of an sd-mecha 1.1.8 environment")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _kind, spec = args.worker
        reference_worker(json.loads(spec))
        return
    base = JOBS[args.job]
    job = Job(**{**base.__dict__, "scale": args.scale if args.scale else base.scale})
    parent = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="mergelang-bench-", dir=parent))
    try:
        run_job(root, job, max(1, args.repeat), args.mecha)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_job(root: Path, job: Job, repeat: int, mecha: str | None) -> None:
    names = ["a", "b", "c"][: job.models]
    layout = input_layout(job)
    size = sum(math.prod(s) * item_size(key_dtype(k, job.dtype)) for k, s in layout.items())
    need = (job.models + 1) * size * 1.05
    if need > shutil.disk_usage(root).free:
        sys.exit(f"needs {need / 1e9:.1f} GB in {root}: pass --dir or a smaller --scale")
    start = time.perf_counter()
    inputs = []
    for seed, name in enumerate(names, start=1):
        path = root / f"{name}.safetensors"
        write_input(path, job, seed)
        inputs.append(path)
    os.sync()
    print(
        f"inputs: {job.models} x {size / 1e9:.2f} GB ({job.arch}, {len(layout)} keys, "
        f"{job.dtype}, scale {job.scale}) made in {time.perf_counter() - start:.0f} s"
    )
    recipe = root / "merge.merge"
    recipe.write_text(recipe_text(job, names), encoding="utf-8")
    print(f"merge: {recipe.read_text(encoding='utf-8').splitlines()[-1]}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores before the runs")
    script = str(Path(__file__).resolve())
    spec: dict[str, Any] = {"job": job.__dict__, "inputs": [str(p) for p in inputs]}
    commands: dict[str, tuple[list[str], Path]] = {}
    out = root / "out-reference.safetensors"
    job_text = json.dumps({**spec, "output": str(out)})
    commands["reference"] = (
        [sys.executable, "-W", "ignore", script, "--worker", "reference", job_text],
        out,
    )
    ml = [sys.executable, "-m", "mergelang", "run", str(recipe), "--quiet"]
    commands["mergelang"] = (
        [*ml, "--cache-dir", str(root / "cache")],
        root / "out-mergelang.safetensors",
    )
    if mecha:
        out = root / "out-mecha.safetensors"
        mecha_spec = {**spec, "output": str(out), "mecha_alpha": 0.5}
        worker = str(Path(__file__).with_name("mecha_worker.py"))
        commands["sd-mecha"] = ([mecha, "-W", "ignore", worker, json.dumps(mecha_spec)], out)
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    digests: dict[str, dict[str, str]] = {}
    order = [name for _ in range(repeat) for name in commands]
    for name in order:
        command, output = commands[name]
        finished = run_process(command)
        if finished.returncode != 0:
            tail = "\n    ".join(finished.output.strip().splitlines()[-6:])
            print(f"  {name}: failed, exit status {finished.returncode}\n    {tail}")
            output.unlink(missing_ok=True)
            continue
        r = finished.run
        runs[name].append(r)
        print(f"  {name:<10} {r.wall:7.2f} s  anon {r.anon_mb:5.0f} MB  VmHWM {r.hwm_mb:6.0f} MB")
        if name not in digests and output.exists():
            digests[name] = tensor_digests(output)
        output.unlink(missing_ok=True)
        os.sync()
    report(runs, digests)


def report(runs: dict[str, list[Run]], digests: dict[str, dict[str, str]]) -> None:
    print(f"\n{'side':<11}{'best s':>8}{'peak anon MB':>14}  runs")
    best = {}
    for name, found in runs.items():
        if not found:
            print(f"{name:<11}{'failed':>8}")
            continue
        best[name] = min(r.wall for r in found)
        print(f"{name:<11}{best[name]:>8.2f}{max(r.anon_mb for r in found):>14.0f}  {len(found)}")
    ref = best.get("reference")
    ml = runs.get("mergelang", [])
    # Each round's pair ran back to back: on a shared machine the per-round ratios compare,
    # the best times of each side need not come from the same minute.
    pairs = [m.wall / r.wall for r, m in zip(runs.get("reference", []), ml, strict=False)]
    for index, ratio in enumerate(pairs):
        kind = "first run, hashing the inputs" if index == 0 else "hashes cached"
        print(f"round {index}: mergelang / reference {ratio:.2f} ({kind})")
    if ref and "sd-mecha" in best:
        print(f"sd-mecha / reference: {best['sd-mecha'] / ref:.2f}")
    expected = digests.get("reference")
    for name, tensors in digests.items():
        if name in ("reference", "sd-mecha") or expected is None:
            continue
        keys = expected.keys() | tensors.keys()
        differing = [k for k in keys if expected.get(k) != tensors.get(k)]
        verdict = "matches" if not differing else f"DIFFERS in {len(differing)} keys"
        print(f"outputs: {name} {verdict} reference ({len(expected)} keys)")


if __name__ == "__main__":
    main()
