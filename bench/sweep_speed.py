"""Sweep speed: the 25-output layer study against just writing 25 outputs.

Generates one synthetic SD1.5-layout checkpoint (fp16; ``--scale`` shrinks the widths: 0.35
gives about 0.3 GB) and times, each in its own process, in the same run:

- study: ``python -m mergelang run layer-study.merge --quiet --no-cache``, the recipe of
  ``examples/layer-study.merge`` (25 outputs, ``sd15 * {blk: 0.75, default: 1}``, one
  streaming pass over the input);
- copy: the floor of any sweep, writing its 25 outputs with no computation: the input
  memory-mapped with ``SafetensorsReader`` and each key written to 25 ``SafetensorsWriter``
  outputs (header first, fsync and rename at commit), the same bytes per output.

For each it records the wall time and the peak anonymous memory (RssAnon polled from /proc,
and VmHWM), and prints the study/copy time ratio (the target is at most 1.3). Both sides are
bound by the disk's write speed, which on a shared virtual disk varies from one minute to the
next; so the pair is run ``--repeat`` times (default 3) in alternating order, and the median
of the per-pair ratios is the figure to record. Two study
outputs are then compared exactly with the formula: ``0.75 * A`` on the keys of the weakened
block, ``A`` elsewhere.

Usage: ``python bench/sweep_speed.py [--scale 0.35] [--dir DIR] [--repeat 3] [--keep]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from process_stats import Run, run_process

from mergelang.arch import get_architecture
from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.testing import make_checkpoint

RECIPE = """model sd15 = "input.safetensors"

for blk in IN00..OUT11:
    save sd15 * {blk: 0.75, default: 1} to "study/sd15-{blk}-075.safetensors"
"""
VERIFIED = ("IN04", "OUT11")


def measure(command: list[str]) -> Run:
    finished = run_process(command)
    if finished.returncode != 0:
        text = finished.output.strip().splitlines()[-8:]
        raise SystemExit(f"{command[:4]} failed ({finished.returncode}):\n" + "\n".join(text))
    return finished.run


def copy_outputs(source: Path, folder: Path, count: int) -> None:
    """The baseline, run in a child process: ``count`` plain copies through the writer."""
    folder.mkdir(parents=True, exist_ok=True)
    with SafetensorsReader(source) as reader:
        entries = [
            OutputEntry(key, reader.info(key).dtype, tuple(reader.info(key).shape))
            for key in reader
        ]
        writers = [
            SafetensorsWriter(folder / f"copy-{i:02d}.safetensors", entries, overwrite=True)
            for i in range(count)
        ]
        for key in reader:
            tensor = reader.get(key)
            for writer in writers:
                writer.write(key, tensor)
        for writer in writers:
            writer.commit()


def verify(source: Path, output: Path, block: str) -> tuple[int, int]:
    """(keys checked, keys differing) of ``output`` against 0.75 * A on ``block``, else A."""
    arch = get_architecture("sd1")
    differing = 0
    with SafetensorsReader(source) as a, SafetensorsReader(output) as out:
        assert set(out.keys()) <= set(a.keys()), "the output has keys the input lacks"
        for key in out:
            expected = a.get(key)
            if expected.is_floating_point() and arch.block_of(key) == block:
                expected = (expected.float() * 0.75).to(expected.dtype)
            if not torch.equal(out.get(key), expected):
                differing += 1
        return len(out.keys()), differing


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.35)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--copy-child", nargs=2, metavar=("INPUT", "FOLDER"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.copy_child:
        copy_outputs(Path(args.copy_child[0]), Path(args.copy_child[1]), len(SD_BLOCKS))
        return 0

    work = Path(tempfile.mkdtemp(prefix="sweep-speed-", dir=args.dir))
    try:
        source = make_checkpoint(work / "input.safetensors", "sd1", scale=args.scale, seed=1)
        size = source.stat().st_size
        need = 2 * len(SD_BLOCKS) * size + size
        free = shutil.disk_usage(work).free
        print(
            f"input: {size / 1e9:.3f} GB (scale {args.scale}); 25 outputs x 2 need "
            f"{need / 1e9:.2f} GB, free {free / 1e9:.2f} GB"
        )
        if free < need * 1.1:
            print("not enough free disk: lower --scale or pick --dir")
            return 1
        (work / "layer-study.merge").write_text(RECIPE, encoding="utf-8")
        study = [
            sys.executable,
            "-W",
            "ignore",
            "-m",
            "mergelang",
            "run",
            str(work / "layer-study.merge"),
            "--quiet",
            "--no-cache",
            "--cache-dir",
            str(work / "cache"),
        ]
        copy = [sys.executable, __file__, "--copy-child", str(source), str(work / "copy")]
        ratios: list[float] = []
        for attempt in range(1, args.repeat + 1):
            # Each side starts from an empty output folder and a synced disk; the order
            # alternates, so that neither always follows the other's write-back.
            timed: dict[str, Run] = {}
            for name in ("copy", "study") if attempt % 2 else ("study", "copy"):
                shutil.rmtree(work / name, ignore_errors=True)
                os.sync()
                timed[name] = measure(copy if name == "copy" else study)
            base, run = timed["copy"], timed["study"]
            print(
                f"run {attempt}: copy  {base.wall:7.2f} s  anon {base.anon_mb:7.1f} MB  "
                f"hwm {base.hwm_mb:7.1f} MB  ({folder_size(work / 'copy') / 1e9:.2f} GB)"
            )
            print(
                f"run {attempt}: study {run.wall:7.2f} s  anon {run.anon_mb:7.1f} MB  "
                f"hwm {run.hwm_mb:7.1f} MB  ({folder_size(work / 'study') / 1e9:.2f} GB)"
            )
            ratios.append(run.wall / base.wall)
            print(f"run {attempt}: study / copy = {ratios[-1]:.2f}")
        print(
            f"study / copy, median of {len(ratios)}: {statistics.median(ratios):.2f} "
            f"(target <= 1.3; runs {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        for block in VERIFIED:
            output = work / "study" / f"sd15-{block}-075.safetensors"
            checked, differing = verify(source, output, block)
            print(f"verify {block}: {checked} keys, {differing} differ from the formula")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
