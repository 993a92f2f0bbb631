"""Writing real PNG files with the standard library, with the text chunks web UIs write."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def text_chunk(keyword: str, text: str, kind: str = "tEXt") -> bytes:
    key = keyword.encode("latin-1")
    if kind == "tEXt":
        return chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    if kind == "zTXt":
        return chunk(b"zTXt", key + b"\0\0" + zlib.compress(text.encode("latin-1")))
    compressed = kind == "iTXt-z"
    data = zlib.compress(text.encode("utf-8")) if compressed else text.encode("utf-8")
    return chunk(b"iTXt", key + b"\0" + bytes([int(compressed), 0]) + b"\0\0" + data)


def write_png(
    path: Path,
    *,
    text: dict[str, str] | None = None,
    kind: str = "tEXt",
    colour: tuple[int, int, int] = (90, 120, 200),
    size: int = 8,
) -> Path:
    """An RGB image of one colour, with ``text`` as chunks of ``kind``."""
    row = b"\0" + bytes(colour) * size
    pixels = zlib.compress(row * size)
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    chunks = [chunk(b"IHDR", header)]
    chunks += [text_chunk(k, v, kind) for k, v in (text or {}).items()]
    chunks += [chunk(b"IDAT", pixels), chunk(b"IEND", b"")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SIGNATURE + b"".join(chunks))
    return path


def a1111_parameters(*, seed: int, model_hash: str | None, model: str | None) -> str:
    pairs = ["Steps: 20", "Sampler: Euler a", "CFG scale: 7", f"Seed: {seed}", "Size: 8x8"]
    if model_hash is not None:
        pairs.append(f"Model hash: {model_hash}")
    if model is not None:
        pairs.append(f"Model: {model}")
    pairs.append("Version: v1.10.1")
    return "a photo of a cat\nNegative prompt: blurry\n" + ", ".join(pairs)


def comfyui_text(ckpt_name: str, seed: int) -> dict[str, str]:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 20, "model": ["4", 0]}},
    }
    workflow = {
        "nodes": [
            {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": [ckpt_name]},
            {"id": 3, "type": "KSampler", "widgets_values": [seed, "fixed", 20]},
        ]
    }
    return {"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)}


SEEDS = (1, 2)


def make_study(folder: Path, models: Path) -> Path:
    """The layer study of ``models/a.safetensors`` run in ``folder`` (25 SD1 outputs, each
    with one block at 0.75), with A1111-style renders of each output (seeds 1 and 2, matched
    by AutoV2 hash) and of the reference ``a`` (legacy hash) in ``folder/renders``; returns
    the recipe."""
    import mergelang
    from mergelang.io.hashing import file_hashes

    recipe = folder / "study.merge"
    recipe.write_text(
        f'model a = "{models / "a.safetensors"}"\n'
        "for blk in IN00..OUT11:\n"
        '    save a * {blk: 0.75, default: 1} to "out/a-{blk}.safetensors"\n',
        encoding="utf-8",
    )
    cache = folder / "cache"
    mergelang.run(recipe, cache_dir=cache)
    for index, output in enumerate(sorted((folder / "out").glob("*.safetensors"))):
        hashes = file_hashes(output, cache_dir=cache)
        for seed in SEEDS:
            text = a1111_parameters(seed=seed, model_hash=hashes.autov2, model=None)
            write_png(
                folder / "renders" / f"{index:03d}-{seed}.png",
                text={"parameters": text},
                colour=(index * 10, seed * 100, 90),
                size=32,
            )
    legacy = file_hashes(models / "a.safetensors", cache_dir=cache).legacy
    for seed in SEEDS:
        text = a1111_parameters(seed=seed, model_hash=legacy, model=None)
        write_png(folder / "renders" / f"ref-{seed}.png", text={"parameters": text}, size=32)
    return recipe
