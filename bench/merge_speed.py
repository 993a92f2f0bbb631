"""End-to-end merge speed and memory: mergelang against a whole-model merge and a hand loop.

Generates full-size synthetic checkpoints (SD1.5 layout, fp16, 2.13 GB each at ``--scale 1``;
SDXL layout with ``--sdxl``) in a temporary folder and times the same merge three ways, each in
its own process: naive (every input loaded whole with ``safetensors.torch.load_file``, each key
merged in float32, the whole dict saved: what the web-UI merge extensions do); reference (the
minimal streaming loop by hand, one torch thread: ``SafetensorsReader`` inputs read chunk by
chunk with ``read_into`` (the fp16 keys it merges; the few keys it copies are read whole), a
``SafetensorsWriter`` output with its header laid out first, elementwise methods in chunks of
2**18 elements through preallocated float32 buffers); mergelang (``python -m mergelang run
RECIPE --quiet --cache-dir DIR``). Per run the parent records the wall time, the peak anonymous
memory (RssAnon, polled from /proc every 5 ms) and VmHWM, and a SHA-256 of each output tensor,
to check that every method wrote byte-equal tensor data.

The merge (``--method``; keys with no block and integer keys are copied from ``a``):

- ``weighted_sum(a, b, alpha = [25 or 19 values], base = 0.3)``, the default for SD1;
- ``add_difference(a, b, c, alpha = [25 or 19 values], base = 0.5)``, the default for SDXL;
- ``ties(a, b, c, density = 0.2, alpha = 1)``: TIES-merging of ``b`` and ``c`` onto the base
  ``a``. It is not elementwise (each key keeps the largest entries of its task vectors), so
  the reference loop merges key by key on whole float32 tensors, with the formula of
  ``mergelang.methods.sparse.ties`` written out here.

Usage: ``python bench/merge_speed.py [--scale 1.0] [--dir DIR] [--repeat 2] [--sdxl]
[--method {weighted_sum,add_difference,ties}] [--keep] [--no-naive]``.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from process_stats import Run, run_process

from mergelang.arch import checkpoint_layout, get_architecture, key_dtype
from mergelang.io.dtypes import code_for_torch, is_float_code, item_size, torch_dtype
from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import OutputEntry, SafetensorsWriter, build_header
from mergelang.testing import make_checkpoint

CHUNK = 1 << 18
SD1_ALPHA = [f"{0.10 + 0.03 * i:.2f}" for i in range(25)]
SDXL_ALPHA = [f"{0.10 + 0.04 * i:.2f}" for i in range(19)]
MODEL_COUNT = {"weighted_sum": 2, "add_difference": 3, "ties": 3}
"""Each method's models; ties takes the base (a) and two fine-tunes."""
HAS_NUMPY = importlib.util.find_spec("numpy") is not None
NAIVE_SAVE = (
    "safetensors.torch.save_file"
    if HAS_NUMPY
    else "one write() per tensor of the whole in-memory dict "
    "(safetensors.torch.save_file and save need numpy, which is not installed)"
)
Digests = dict[str, tuple[str, tuple[int, ...], str]]
"""Key -> (dtype, shape, SHA-256 of the tensor's bytes)."""


# ---------------------------------------------------------------- the two hand-written merges


def key_weight(spec: dict[str, Any]) -> Callable[[str, str], float | None]:
    """A key's alpha (its block's value, else the base value), or None when mergelang does not
    merge the key (no block, or an integer dtype): it is then copied from A."""
    arch = get_architecture(spec["arch"])
    arguments = spec["arguments"]
    alpha = arguments["alpha"]
    values = alpha if isinstance(alpha, list) else [alpha] * len(arch.blocks)
    by_block = dict(zip(arch.blocks, (float(v) for v in values), strict=True))
    base = float(arguments.get("base", alpha))

    def weight(key: str, dtype: str) -> float | None:
        block = arch.block_of(key)
        if block is None or not is_float_code(dtype):
            return None
        return by_block.get(block, base)

    return weight


def ties_merge(
    base: torch.Tensor, models: list[torch.Tensor], density: float, alpha: float
) -> torch.Tensor:
    """TIES on whole float32 tensors, operation for operation as ``sparse.ties`` defines it:
    each task vector ``X_i - B`` keeps the entries at least as large in magnitude as its
    ``k``-th largest (``k = density * numel`` rounded half up, clamped to 1..numel; ties at the
    threshold kept); the elected sign is that of the trimmed vectors' sum; the merged delta is
    the mean of the trimmed entries of that sign (0 where none or the sum is 0)."""
    numel = base.numel()
    keep = max(1, min(numel, math.floor(density * numel + 0.5)))
    trimmed = []
    for model in models:
        delta = model - base
        if keep < numel:
            magnitude = delta.abs()
            threshold = torch.kthvalue(magnitude.reshape(-1), numel - keep + 1).values
            delta = torch.where(magnitude >= threshold, delta, 0.0)
        trimmed.append(delta)
    total = trimmed[0].clone()
    for delta in trimmed[1:]:
        total.add_(delta)
    elected = torch.sign(total)
    agreeing = torch.zeros_like(base)
    count = torch.zeros_like(base)
    for delta in trimmed:
        agrees = (torch.sign(delta) == elected) & (elected != 0)
        agreeing.add_(torch.where(agrees, delta, 0.0))
        count.add_(agrees)
    return base + alpha * (agreeing / count.clamp(min=1.0))


def merge_whole(spec: dict[str, Any], x: list[torch.Tensor], w: float) -> torch.Tensor:
    """The merge of one key's whole float32 tensors (A first) at alpha ``w``."""
    if spec["method"] == "weighted_sum":
        return (1 - w) * x[0] + w * x[1]
    if spec["method"] == "add_difference":
        return x[0] + w * (x[1] - x[2])
    return ties_merge(x[0], x[1:], float(spec["arguments"]["density"]), w)


def save_whole(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Save a whole in-memory dict as safetensors (``save_file`` where numpy allows it)."""
    if HAS_NUMPY:
        from safetensors.torch import save_file

        save_file(tensors, path)
        return
    codes = {key: code_for_torch(t.dtype) for key, t in tensors.items()}
    entries = [OutputEntry(k, str(codes[k]), tuple(t.shape)) for k, t in tensors.items()]
    header, offsets = build_header(entries)
    with open(path, "wb") as out:
        out.write(len(header).to_bytes(8, "little") + header)
        for key in sorted(offsets, key=lambda k: offsets[k][0]):
            data = tensors[key].contiguous()
            nbytes = data.numel() * data.element_size()
            if nbytes:
                out.write(memoryview((ctypes.c_char * nbytes).from_address(data.data_ptr())))


def naive_worker(spec: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    weight = key_weight(spec)
    models = [load_file(path) for path in spec["inputs"]]
    merged = models[0]
    for key in list(merged):
        w = weight(key, str(code_for_torch(merged[key].dtype)))
        if w is None:
            continue
        x = [model[key].to(torch.float32) for model in models]
        merged[key] = merge_whole(spec, x, w).to(torch.float16)
    save_whole(merged, spec["output"])
    # The same durability as the other two (which fsync before renaming into place), so the
    # comparison is of getting the merged model safely onto the disk.
    descriptor = os.open(spec["output"], os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def reference_worker(spec: dict[str, Any]) -> None:
    # One thread: OpenMP gains little on 1 MB chunks and, when another process holds a core,
    # its barriers made this loop several times slower (53 s instead of 15 s on 2 cores). The
    # whole-key loop (ties) keeps one thread too, as each of mergelang's CPU workers does.
    torch.set_num_threads(1)
    weight = key_weight(spec)
    readers = [SafetensorsReader(path) for path in spec["inputs"]]
    first = readers[0]
    weights = {key: weight(key, first.info(key).dtype) for key in first}
    entries = [
        OutputEntry(key, first.info(key).dtype if w is None else "F16", first.info(key).shape)
        for key, w in weights.items()
    ]
    with SafetensorsWriter(spec["output"], entries, overwrite=True) as writer:
        if spec["method"] == "ties":
            merge_keys_whole(spec, readers, weights, writer)
        else:
            merge_chunks(spec["method"] == "weighted_sum", readers, weights, writer)


def merge_keys_whole(
    spec: dict[str, Any],
    readers: list[SafetensorsReader],
    weights: dict[str, float | None],
    writer: SafetensorsWriter,
) -> None:
    """A method that is not elementwise: key by key, each input's whole tensor in float32."""
    for key, w in weights.items():
        if w is None:
            writer.write(key, readers[0].get(key))
            continue
        x = [reader.get(key).to(torch.float32) for reader in readers]
        writer.write(key, merge_whole(spec, x, w).to(torch.float16))


def merge_chunks(
    summing: bool,
    readers: list[SafetensorsReader],
    weights: dict[str, float | None],
    writer: SafetensorsWriter,
) -> None:
    """An elementwise method: chunks of each key through preallocated float32 buffers."""
    buffers = [torch.empty(CHUNK, dtype=torch.float32) for _ in readers]
    raw: dict[str, list[torch.Tensor]] = {}
    out = torch.empty(CHUNK, dtype=torch.float32)
    spare = torch.empty(CHUNK, dtype=torch.float32)
    half = torch.empty(CHUNK, dtype=torch.float16)
    for key, w in weights.items():
        if w is None:
            writer.write(key, readers[0].get(key))
            continue
        info = readers[0].info(key)
        total = info.numel
        if info.dtype not in raw:
            raw[info.dtype] = [torch.empty(CHUNK, dtype=torch_dtype(info.dtype)) for _ in readers]
        for start in range(0, total, CHUNK):
            n = min(CHUNK, total - start)
            x = [
                b[:n].copy_(reader.read_into(key, start, r[:n]))
                for b, r, reader in zip(buffers, raw[info.dtype], readers, strict=True)
            ]
            o = out[:n]
            if summing:  # (1 - w) * a + w * b
                torch.mul(x[0], 1 - w, out=o)
                o.add_(torch.mul(x[1], w, out=spare[:n]))
            else:  # a + w * (b - c)
                torch.sub(x[1], x[2], out=o)
                o.mul_(w).add_(x[0])
            writer.write_part(key, start, half[:n].copy_(o))


# ---------------------------------------------------------------- measuring a process


@dataclass
class Method:
    name: str
    command: list[str]
    output: Path
    runs: list[Run] = field(default_factory=list)
    failed: str | None = None
    fresh: Path | None = None
    """A cache folder removed before each run (a first run: the inputs are hashed)."""


def measure(method: Method) -> Run | None:
    """Run the method's process once; its figures, or None (and ``method.failed``) on failure."""
    finished = run_process(method.command)
    if finished.returncode != 0:
        lines = "\n    ".join(finished.output.strip().splitlines()[-8:])
        method.failed = f"exit status {finished.returncode}:\n    {lines}"
        if "invalid choice: 'run'" in finished.output:
            method.failed += "\n    (this mergelang has no `run` verb yet)"
        return None
    return finished.run


def tensor_digests(path: Path) -> Digests:
    """Each tensor's dtype, shape and SHA-256, its bytes located through the file's header."""
    digests = {}
    with SafetensorsReader(path) as reader, path.open("rb") as handle:
        for key in reader:
            info = reader.info(key)
            handle.seek(reader.header.data_offset + info.start)
            data = handle.read(info.end - info.start)
            digests[key] = (info.dtype, tuple(info.shape), hashlib.sha256(data).hexdigest())
    return digests


# ---------------------------------------------------------------- the benchmark


def checkpoint_bytes(arch: str, scale: float) -> int:
    layout = checkpoint_layout(arch, scale=scale)
    return sum(math.prod(s) * item_size(key_dtype(k, "F16")) for k, s in layout.items())


def available_memory() -> int:
    lines = Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
    return next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))


def choose_scale(arch: str, asked: float | None, folder: Path, models: int) -> float:
    """The width scale: as asked, else the largest of 1, 0.75, 0.5, 0.25 that fits the disk."""
    free = shutil.disk_usage(folder).free
    for scale in [asked] if asked is not None else [1.0, 0.75, 0.5, 0.25]:
        need = (models + 1) * checkpoint_bytes(arch, scale) * 1.05 + (1 << 29)
        if need <= free:
            return scale
        print(f"scale {scale}: needs {need / 1e9:.1f} GB in {folder}, {free / 1e9:.1f} GB free")
    sys.exit(f"not enough free disk space in {folder}: pass --dir or a smaller --scale")


def merge_spec(arch: str, method: str) -> dict[str, Any]:
    """The merge to time: its architecture, method, and recipe arguments (as recipe text)."""
    arguments: dict[str, Any]
    if method == "ties":
        arguments = {"density": "0.2", "alpha": "1"}
    else:
        alpha = SDXL_ALPHA if arch == "sdxl" else SD1_ALPHA
        arguments = {"alpha": alpha, "base": "0.3" if method == "weighted_sum" else "0.5"}
    return {"arch": arch, "method": method, "arguments": arguments}


def recipe_text(spec: dict[str, Any], names: list[str]) -> str:
    models = "".join(f'model {name} = "{name}.safetensors"\n' for name in names)
    arguments = [
        f"{name} = [{', '.join(value)}]" if isinstance(value, list) else f"{name} = {value}"
        for name, value in spec["arguments"].items()
    ]
    call = f"{spec['method']}({', '.join(names + arguments)})"
    return f'{models}save {call} to "out-mergelang.safetensors" as fp16\n'


def run_benchmark(
    root: Path, arch: str, method: str, scale: float, repeat: int, naive: bool = True
) -> None:
    names = ["a", "b", "c"][: MODEL_COUNT[method]]
    start = time.perf_counter()
    inputs = [
        make_checkpoint(root / f"{name}.safetensors", arch, scale=scale, seed=seed)
        for seed, name in enumerate(names, start=1)
    ]
    os.sync()
    size = inputs[0].stat().st_size
    made = time.perf_counter() - start
    print(
        f"inputs: {len(inputs)} x {size / 1e9:.2f} GB ({arch}, fp16, scale {scale}) in {made:.0f} s"
    )
    print("  they stay in the page cache (dropping it needs root): reads come from memory")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores before the runs")
    recipe = root / "merge.merge"
    spec = merge_spec(arch, method)
    recipe.write_text(recipe_text(spec, names), encoding="utf-8")
    print(f"merge: {recipe.read_text(encoding='utf-8').splitlines()[-1]}")
    print(f"naive saves with {NAIVE_SAVE}, then fsyncs, as the other two do")
    print(
        "mergelang hashes the inputs in its first run only (cached in its --cache-dir), "
        "while the merge streams"
    )
    spec["inputs"] = [str(path) for path in inputs]
    script = str(Path(__file__).resolve())
    methods: dict[str, Method] = {}
    for kind in ("naive", "reference"):
        output = root / f"out-{kind}.safetensors"
        job = json.dumps({**spec, "output": str(output)})
        command = [sys.executable, "-W", "ignore", script, "--worker", kind, job]
        methods[kind] = Method(kind, command, output)
    command = [sys.executable, "-m", "mergelang", "run", str(recipe), "--quiet"]
    command += ["--cache-dir", str(root / "cache")]
    # Each round: the reference loop, mergelang on a fresh cache (a first run: it hashes the
    # inputs during the merge), then mergelang again on that cache (the hashes warm).
    output = root / "out-mergelang.safetensors"
    methods["first"] = Method("first", command, output, fresh=root / "cache")
    methods["mergelang"] = Method("mergelang", command, output)
    need, available = len(inputs) * size * 1.1 + (1 << 30), available_memory()
    if not naive:
        methods["naive"].failed = "skipped"
    elif need > available:
        methods["naive"].failed = "skipped"
        print(
            f"naive: skipped, needs ~{need / 1e9:.1f} GB of memory, {available / 1e9:.1f} GB free"
        )
    digests: dict[str, Digests] = {}
    order = ["naive"] + ["reference", "first", "mergelang"] * repeat
    for name in order:
        current = methods[name]
        if current.failed is not None:
            continue
        if current.fresh is not None:
            shutil.rmtree(current.fresh, ignore_errors=True)  # the inputs never seen
        result = measure(current)
        if result is None:
            print(f"{name}: failed, {current.failed}")
        else:
            current.runs.append(result)
            r = result
            print(
                f"  {name:<10} {r.wall:6.2f} s  cpu {r.cpu:6.2f} s  anon {r.anon_mb:5.0f} MB"
                f"  VmHWM {r.hwm_mb:5.0f} MB"
            )
            found = tensor_digests(current.output)
            if digests.setdefault(name, found) != found:
                print(f"  {name}: this run's output differs from its first run's")
        current.output.unlink(missing_ok=True)
        os.sync()
    report(methods, elementwise=method != "ties")
    compare_outputs(digests)


def report(methods: dict[str, Method], elementwise: bool) -> None:
    print(f"\n{'method':<11}{'wall s':>8}{'peak anon MB':>14}{'VmHWM MB':>10}  runs")
    best: dict[str, Run] = {}
    for name, method in methods.items():
        if not method.runs:
            print(f"{name:<11}{'failed' if method.failed != 'skipped' else 'skipped':>8}")
            continue
        walls, anon, hwm = zip(*((r.wall, r.anon_mb, r.hwm_mb) for r in method.runs), strict=True)
        best[name] = run = Run(min(walls), max(anon), max(hwm))
        print(f"{name:<11}{run.wall:>8.2f}{run.anon_mb:>14.0f}{run.hwm_mb:>10.0f}  {len(walls)}")
    print("(wall time: the best run; memory: the highest of the runs)")
    ours, ref, naive = best.get("mergelang"), best.get("reference"), best.get("naive")
    ratio = f"{ours.wall / ref.wall:.2f}" if ours and ref else "n/a"
    target = "target <= 1.15" if elementwise else "the 1.15 target is for elementwise methods"
    print(f"mergelang / reference wall: {ratio:>6}   ({target})")
    ratio = f"{naive.wall / ours.wall:.2f}" if ours and naive else "n/a"
    print(f"naive / mergelang wall:     {ratio:>6}   (target >= 2)")
    figure = f"{ours.anon_mb:.0f}" if ours else "n/a"
    print(f"mergelang peak anon MB:     {figure:>6}   (target <= 400)")
    first = best.get("first")
    if first and ref and ours:
        print(f"mergelang first run:        {first.wall:6.2f} s (fresh cache: hashed in the merge)")
        print(f"first / reference wall:     {first.wall / ref.wall:6.2f}   (target <= 1.15)")
        print(f"first / warm-hash run wall: {first.wall / ours.wall:6.2f}   (target <= 1.05)")
        rounds = zip(
            methods["reference"].runs,
            methods["first"].runs,
            methods["mergelang"].runs,
            strict=False,
        )
        per_round = [(f.wall / r.wall, f.wall / w.wall) for r, f, w in rounds]
        if per_round:
            to_ref = sorted(a for a, _ in per_round)[len(per_round) // 2]
            to_warm = sorted(b for _, b in per_round)[len(per_round) // 2]
            print(f"per round, median: first / reference {to_ref:.2f}, first / warm {to_warm:.2f}")


def compare_outputs(digests: dict[str, Digests]) -> None:
    """Compare every method's output with the reference loop's, tensor by tensor."""
    expected = digests.get("reference")
    if expected is None or len(digests) < 2:
        print("outputs: not compared (the reference or every other method failed)")
        return
    for name, found in digests.items():
        if name == "reference":
            continue
        keys = expected.keys() | found.keys()
        differing = sorted(key for key in keys if expected.get(key) != found.get(key))
        if differing:
            shown = ", ".join(differing[:3]) + (" ..." if len(differing) > 3 else "")
            print(f"outputs: {name} DIFFERS from reference in {len(differing)} keys ({shown})")
        else:
            print(f"outputs: {name} matches reference (byte-equal data, all {len(keys)} keys)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=None, help="width scale (1 = full size)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp folder")
    parser.add_argument("--repeat", type=int, default=2, help="runs of reference and mergelang")
    parser.add_argument("--sdxl", action="store_true", help="SDXL-layout checkpoints")
    parser.add_argument(
        "--method",
        choices=list(MODEL_COUNT),
        default=None,
        help="the merge (default: weighted_sum for SD1, add_difference for SDXL)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder with the inputs")
    parser.add_argument(
        "--no-naive", action="store_true", help="leave out the naive whole-model merge"
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec = args.worker
        (naive_worker if kind == "naive" else reference_worker)(json.loads(spec))
        return
    parent = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    arch = "sdxl" if args.sdxl else "sd1"
    method = args.method or ("add_difference" if args.sdxl else "weighted_sum")
    scale = choose_scale(arch, args.scale, parent, MODEL_COUNT[method])
    root = Path(tempfile.mkdtemp(prefix="mergelang-bench-", dir=parent))
    try:
        run_benchmark(root, arch, method, scale, max(1, args.repeat), not args.no_naive)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
