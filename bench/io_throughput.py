"""Checkpoint I/O throughput against the plain file operations it competes with.

Generates a synthetic SD1.5-layout fp16 checkpoint (2.13 GB at ``--scale 1``) in a temporary
folder, then measures in the same run:

- reading: ``SafetensorsReader`` handing out every tensor (memory-mapped, one key at a time)
  and copying each byte once, against reading the file with plain ``read()`` calls;
- writing: streaming every tensor through ``SafetensorsWriter`` (header first, temporary file,
  fsync, rename), against ``shutil.copyfile`` of the same file, both followed by ``sync``.

Prints each figure, the ratios, and the process's memory (from /proc).
Usage: ``python bench/io_throughput.py [--scale 1.0] [--dir /tmp]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.testing import make_checkpoint

COPY_BUFFER = 1 << 24


def memory_mb() -> tuple[float, float]:
    """(anonymous memory now, peak resident memory) in MB, from /proc/self/status.

    Anonymous memory is what the process owns; the peak resident figure also counts pages of
    memory-mapped inputs, which belong to the page cache and are dropped under pressure.
    """
    fields = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return int(fields["RssAnon"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def time_plain_read(path: Path) -> float:
    start = time.perf_counter()
    with path.open("rb", buffering=0) as handle:
        while handle.read(COPY_BUFFER):
            pass
    return time.perf_counter() - start


def time_reader(path: Path) -> tuple[float, int]:
    largest = 0
    with SafetensorsReader(path) as reader:
        for key in reader:
            largest = max(largest, reader.info(key).end - reader.info(key).start)
    sink = torch.empty(largest, dtype=torch.uint8)
    start = time.perf_counter()
    total = 0
    with SafetensorsReader(path) as reader:
        for key in reader:
            data = reader.get(key).reshape(-1).view(torch.uint8)
            sink[: data.numel()].copy_(data)
            total += data.numel()
    return time.perf_counter() - start, total


def time_copyfile(path: Path, target: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(path, target)
    os.sync()
    return time.perf_counter() - start


def time_writer(path: Path, target: Path) -> float:
    start = time.perf_counter()
    with SafetensorsReader(path) as reader:
        entries = [
            OutputEntry(key, reader.info(key).dtype, tuple(reader.info(key).shape))
            for key in reader
        ]
        with SafetensorsWriter(target, entries) as writer:
            for key in reader:
                writer.write(key, reader.get(key))
    os.sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="width scale (1 = full size)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mergelang-bench-") as folder:
        root = Path(folder)
        source = root / "sd15.safetensors"
        start = time.perf_counter()
        make_checkpoint(source, "sd1", scale=args.scale, seed=1)
        size = source.stat().st_size
        made = time.perf_counter() - start
        print(f"generated {size / 1e9:.2f} GB SD1-layout fp16 in {made:.1f} s")
        time_plain_read(source)  # both readers below start from a warm page cache
        plain = time_plain_read(source)
        mapped, total = time_reader(source)
        assert total <= size
        print(f"read   plain read():            {plain:6.2f} s  {size / plain / 1e9:5.2f} GB/s")
        print(f"read   SafetensorsReader:       {mapped:6.2f} s  {total / mapped / 1e9:5.2f} GB/s")
        print(f"       ratio reader / plain:    {mapped / plain:6.2f}")
        copied = time_copyfile(source, root / "copy.safetensors")
        (root / "copy.safetensors").unlink()
        written = time_writer(source, root / "written.safetensors")
        print(f"write  shutil.copyfile + sync:  {copied:6.2f} s  {size / copied / 1e9:5.2f} GB/s")
        print(f"write  SafetensorsWriter + sync:{written:6.2f} s  {size / written / 1e9:5.2f} GB/s")
        print(f"       ratio writer / copyfile: {written / copied:6.2f}")
        anonymous, peak = memory_mb()
        print(f"memory: anonymous {anonymous:.0f} MB at the end, peak resident {peak:.0f} MB")


if __name__ == "__main__":
    main()
