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
