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
  fp8 (scale 1: about 11.9 GB a file);
- ``gguf``: a Q8_0 GGUF Flux.1 dev (the bare diffusion model in ComfyUI-GGUF's key names,
  written by mergelang's GGUF writer) and an fp8 (``float8_e4m3fn``) one, the per-block
  weighted sum saved as Q8_0 GGUF (default scale 0.5). Its baseline is not the streaming
  loop but **dequantise-all**: both whole models dequantised to float32 in memory, merged,
  quantised with the ``gguf`` package and written with its ``GGUFWriter``. Where both float32
  models would not fit in the memory available, the fp8 model is held whole as stored (one
  byte a value) and each of its tensors dequantised when merged, which the output says. The
  outputs are compared tensor by tensor (GGML type and SHA-256 of the bytes; for tensors
  that differ, the largest difference of their dequantised values).

Each run's wall time and peak anonymous memory (RssAnon, polled every 5 ms) are printed, and
every output's tensors are compared (SHA-256 of each tensor's bytes) with the reference's.

Usage: ``python bench/flux_merge.py --job flux [--scale 0.5] [--repeat 2] [--dir DIR]
[--mecha /path/to/python] [--keep] [--mergelang-first]``.
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
    "gguf": Job("flux-dev", 2, "F8_E4M3", "q8_0", "Q8_0", "weighted_sum", 0.5),
}
GGUF_INPUT = "Q8_0"
"""The GGML type of the ``gguf`` job's first input (its large tensors)."""


def flux_block_value(block: str) -> float:
    """The weight of a Flux block in :data:`FLUX_ALPHA`, written out independently."""
    if block.startswith("D"):
        return 0.3 if int(block[1:]) <= 9 else 0.6
    if block.startswith("S"):
        return 0.5
    return {"IN": 0.0, "OUT": 0.2}.get(block, 0.0)


def input_name(job: Job, index: int) -> str:
    """The file name of the job's input ``index`` (the ``gguf`` job's first is a GGUF)."""
    name = "abc"[index]
    return f"{name}.gguf" if job.out_code == GGUF_INPUT and index == 0 else f"{name}.safetensors"


def output_name(job: Job, side: str) -> str:
    return f"out-{side}.gguf" if job.out_code == GGUF_INPUT else f"out-{side}.safetensors"


def recipe_text(job: Job, names: list[str]) -> str:
    models = "".join(f'model {name} = "{input_name(job, i)}"\n' for i, name in enumerate(names))
    if job.method == "weighted_sum":
        call = f"weighted_sum(a, b, alpha={FLUX_ALPHA})"
    else:
        call = "add_difference(a, b, c, alpha=0.5)"
    return f'{models}save {call} to "{output_name(job, "mergelang")}" as {job.save}\n'


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


def write_gguf_input(path: Path, job: Job, seed: int) -> None:
    """A synthetic Q8_0 GGUF of the bare diffusion model (the values :func:`write_input`
    makes), streamed a key at a time through mergelang's GGUF writer."""
    from mergelang.io.gguf_format import open_sink
    from mergelang.io.sinks import SinkTarget

    layout = input_layout(job)
    entries = tuple(OutputEntry(key, "F32", shape) for key, shape in layout.items())
    metadata = {"modelspec.architecture": "flux-1-dev"}
    sink = open_sink(SinkTarget(path, entries, metadata, overwrite=True), quant=GGUF_INPUT)
    try:
        for key, shape in layout.items():
            tensor = synthetic_tensor(key, shape, seed=seed, dtype="BF16")
            sink.write_part(key, 0, tensor.to(torch.float32).reshape(-1))
        sink.commit()
    except BaseException:
        sink.abort()
        raise


def merge_weights(job: Job, keys: list[str], is_float: dict[str, bool]) -> dict[str, float | None]:
    """The weight of each key in the job's merge (``None``: the first input's value kept)."""
    arch = get_architecture(job.arch)
    weights: dict[str, float | None] = {}
    for key in keys:
        block = arch.block_of(f"{arch.denoiser.prefix}{key}")
        merged = block is not None and is_float[key]
        if job.method == "weighted_sum":
            weights[key] = flux_block_value(block) if merged and block else None
        else:
            weights[key] = 0.5 if merged else None
    return weights


# ---------------------------------------------------------------- the reference loop


def reference_worker(spec: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    job = Job(**spec["job"])
    readers = [SafetensorsReader(path) for path in spec["inputs"]]
    first = readers[0]
    entries = []
    keys = list(first)
    weights = merge_weights(job, keys, {k: is_float_code(first.info(k).dtype) for k in keys})
    for key in first:
        code = first.info(key).dtype
        merged = weights[key] is not None
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


def dequantise_all_worker(spec: dict[str, Any]) -> None:
    """The ``gguf`` job's baseline: both models dequantised whole to float32, merged,
    quantised with the ``gguf`` package and written with its ``GGUFWriter``."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.quants import dequantize, quantize

    from mergelang.io.gguf_format import stored_type

    torch.set_num_threads(1)
    job = Job(**spec["job"])
    hold_stored = bool(spec["hold_stored"])
    first: dict[str, torch.Tensor] = {}
    for tensor in GGUFReader(spec["inputs"][0]).tensors:
        shape = tuple(reversed([int(d) for d in tensor.shape]))
        values = dequantize(np.asarray(tensor.data), tensor.tensor_type)
        first[tensor.name] = torch.from_numpy(np.ascontiguousarray(values, np.float32)).reshape(
            shape
        )
    second: dict[str, torch.Tensor] = {}
    with SafetensorsReader(Path(spec["inputs"][1])) as reader:
        for key in reader:
            info = reader.info(key)
            whole = torch.empty(math.prod(info.shape), dtype=torch_dtype(info.dtype))
            stored = reader.read_into(key, 0, whole).reshape(info.shape)
            second[key] = stored.clone() if hold_stored else stored.to(torch.float32)
    keys = list(first)
    weights = merge_weights(job, keys, dict.fromkeys(keys, True))
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        w = weights[key]
        a = first.pop(key)
        merged[key] = a if w is None else (1 - w) * a + w * second.pop(key).to(torch.float32)
    second.clear()
    writer = GGUFWriter(spec["output"], "flux")
    for key, result in merged.items():
        kind = stored_type(OutputEntry(key, "F32", tuple(result.shape)), job.out_code)
        array = result.numpy()
        if kind == "F32":
            writer.add_tensor(key, array)
        elif kind == "F16":
            writer.add_tensor(key, array.astype(np.float16))
        else:
            quant = GGMLQuantizationType[kind]
            writer.add_tensor(key, quantize(array, quant), raw_dtype=quant)
    merged.clear()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---------------------------------------------------------------- measuring


def gguf_digests(path: Path) -> dict[str, str]:
    """Each tensor's GGML type and the SHA-256 of its bytes, in a GGUF file."""
    from gguf import GGUFReader

    found = {}
    for tensor in GGUFReader(str(path)).tensors:
        digest = hashlib.sha256(bytes(tensor.data.tobytes())).hexdigest()
        found[tensor.name] = f"{tensor.tensor_type.name}:{digest}"
    return found


def gguf_largest_difference(first: Path, second: Path, keys: list[str]) -> float:
    """The largest difference of the dequantised values of ``keys`` in two GGUF files."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    def values(path: Path) -> dict[str, Any]:
        wanted = set(keys)
        found = {}
        for tensor in GGUFReader(str(path)).tensors:
            if tensor.name in wanted:
                found[tensor.name] = dequantize(np.asarray(tensor.data), tensor.tensor_type)
        return found

    mine, theirs = values(first), values(second)
    return max(
        (float(np.abs(mine[k].astype(np.float64) - theirs[k]).max()) for k in keys if k in mine),
        default=0.0,
    )


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
    parser.add_argument(
        "--mergelang-first", action="store_true", help="run mergelang first in each round"
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec = args.worker
        if kind == "dequantise-all":
            dequantise_all_worker(json.loads(spec))
        else:
            reference_worker(json.loads(spec))
        return
    base = JOBS[args.job]
    job = Job(**{**base.__dict__, "scale": args.scale if args.scale else base.scale})
    parent = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="mergelang-bench-", dir=parent))
    try:
        run_job(root, job, max(1, args.repeat), args.mecha, args.mergelang_first)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_job(
    root: Path, job: Job, repeat: int, mecha: str | None, mergelang_first: bool = False
) -> None:
    names = ["a", "b", "c"][: job.models]
    layout = input_layout(job)
    size = sum(math.prod(s) * item_size(key_dtype(k, job.dtype)) for k, s in layout.items())
    gguf_job = job.out_code == GGUF_INPUT
    # Q8_0 is 34 bytes a 32 values, a little over the fp8 inputs' one byte a value.
    need = (job.models + (2 if gguf_job else 1)) * size * (34 / 32 if gguf_job else 1) * 1.05
    if need > shutil.disk_usage(root).free:
        sys.exit(f"needs {need / 1e9:.1f} GB in {root}: pass --dir or a smaller --scale")
    start = time.perf_counter()
    inputs = []
    for seed in range(1, len(names) + 1):
        path = root / input_name(job, seed - 1)
        if path.suffix == ".gguf":
            write_gguf_input(path, job, seed)
        else:
            write_input(path, job, seed)
        inputs.append(path)
    os.sync()
    kinds = f"{GGUF_INPUT} GGUF + {job.dtype}" if gguf_job else job.dtype
    sizes = " + ".join(f"{path.stat().st_size / 1e9:.2f}" for path in inputs)
    print(
        f"inputs: {sizes} GB ({job.arch}, {len(layout)} keys, "
        f"{kinds}, scale {job.scale}) made in {time.perf_counter() - start:.0f} s"
    )
    recipe = root / "merge.merge"
    recipe.write_text(recipe_text(job, names), encoding="utf-8")
    print(f"merge: {recipe.read_text(encoding='utf-8').splitlines()[-1]}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores before the runs")
    script = str(Path(__file__).resolve())
    spec: dict[str, Any] = {"job": job.__dict__, "inputs": [str(p) for p in inputs]}
    commands: dict[str, tuple[list[str], Path]] = {}
    if gguf_job:
        values = sum(math.prod(shape) for shape in layout.values())
        hold_stored = 2 * values * 4 > 0.85 * available_memory()
        if hold_stored:
            print(
                f"dequantise-all: two float32 models ({2 * values * 4 / 1e9:.1f} GB) do not fit "
                "in the memory available: the fp8 model is held as stored, dequantised a "
                "tensor at a time"
            )
        out = root / output_name(job, "reference")
        job_text = json.dumps({**spec, "output": str(out), "hold_stored": hold_stored})
        worker_kind = "dequantise-all"
    else:
        out = root / output_name(job, "reference")
        job_text = json.dumps({**spec, "output": str(out)})
        worker_kind = "reference"
    commands["reference"] = (
        [sys.executable, "-W", "ignore", script, "--worker", worker_kind, job_text],
        out,
    )
    ml = [sys.executable, "-m", "mergelang", "run", str(recipe), "--quiet"]
    commands["mergelang"] = (
        [*ml, "--cache-dir", str(root / "cache")],
        root / output_name(job, "mergelang"),
    )
    if gguf_job and mecha:
        print("sd-mecha: not run on the gguf job (it reads no GGUF)")
        mecha = None
    if mecha:
        out = root / "out-mecha.safetensors"
        mecha_spec = {**spec, "output": str(out), "mecha_alpha": 0.5}
        worker = str(Path(__file__).with_name("mecha_worker.py"))
        commands["sd-mecha"] = ([mecha, "-W", "ignore", worker, json.dumps(mecha_spec)], out)
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    digests: dict[str, dict[str, str]] = {}
    sides = sorted(commands, key=lambda name: name != "mergelang") if mergelang_first else commands
    order = [name for _ in range(repeat) for name in sides]
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
            digests[name] = gguf_digests(output) if gguf_job else tensor_digests(output)
            if gguf_job:
                kept = output.with_name(f"first-{output.name}")
                output.replace(kept)
        output.unlink(missing_ok=True)
        os.sync()
    report(runs, digests)
    if gguf_job:
        compare_gguf(root, digests)


def available_memory() -> int:
    """``MemAvailable`` of ``/proc/meminfo``, in bytes."""
    for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def compare_gguf(root: Path, digests: dict[str, dict[str, str]]) -> None:
    """For the tensors whose bytes differ in the two GGUF outputs: the largest difference of
    their dequantised values."""
    expected, found = digests.get("reference"), digests.get("mergelang")
    if expected is None or found is None:
        return
    differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if not differing:
        return
    types = {
        k: (expected.get(k, "-").split(":")[0], found.get(k, "-").split(":")[0]) for k in differing
    }
    print(
        f"  differing keys, e.g. {differing[:3]}"
        f" (types dequantise-all / mergelang: {types[differing[0]]})"
    )
    largest = gguf_largest_difference(
        root / f"first-{output_name(JOBS['gguf'], 'mergelang')}",
        root / f"first-{output_name(JOBS['gguf'], 'reference')}",
        differing,
    )
    print(f"  largest difference of their dequantised values: {largest:.3g}")


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
