"""What an image says about the model that made it, read with the standard library.

Web UIs write the generation parameters into their PNGs as text chunks:

- A1111/Forge: a ``parameters`` chunk, the prompt then a last line of ``Key: value`` pairs
  (``Steps: 20, Sampler: Euler a, Seed: 1, Model hash: 0123456789, Model: sd15-IN04``). The
  model hash is the AutoV2 hash (10 hex digits) or, from old versions, the legacy one (8).
- ComfyUI: a ``prompt`` chunk (the API graph, JSON ``{id: {"class_type", "inputs"}}``) and a
  ``workflow`` chunk (the editor graph, JSON ``{"nodes": [{"type", "widgets_values"}]}``);
  the checkpoint loader's ``ckpt_name`` names the model, the sampler's ``seed`` or
  ``noise_seed`` the seed.

Chunks are read as ``tEXt``, ``zTXt`` or ``iTXt`` (compressed or not); chunk data after the
first ``IDAT`` is read too, since some tools append their text there. Nothing is decoded
beyond the chunk headers: pixel data is skipped.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PNG_SIGNATURE",
    "ImageInfo",
    "NotAnImage",
    "image_info",
    "parse_a1111",
    "parse_comfyui",
    "read_png_text",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".avif", ".gif"})
MAX_TEXT = 16 * 1024 * 1024
"""Text chunks larger than this (after decompression) are ignored."""

_PAIR = re.compile(r'\s*([\w ./()\-]+?):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)')
_HASH = re.compile(r"^[0-9a-fA-F]{8}(?:[0-9a-fA-F]{2})?$")


class NotAnImage(ValueError):
    """The file is not a PNG (or its chunks are damaged); the message says which."""


@dataclass(frozen=True)
class ImageInfo:
    """The model information one image carries. ``source`` says where it came from:
    ``"a1111"``, ``"comfyui"`` or ``None`` (no model information in the image)."""

    source: str | None
    model_hash: str | None = None
    model_name: str | None = None
    seed: int | None = None


def read_png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG, keyword -> text (the first of a repeated keyword wins).

    Raises :class:`NotAnImage` for a file that is not a PNG or whose chunks are truncated.
    """
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise NotAnImage(f"{path.name} is not a PNG image")
    found: dict[str, str] = {}
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if len(body) != length:
            raise NotAnImage(f"{path.name}: a PNG chunk is cut short")
        at += 12 + length
        if kind == b"IEND":
            return found
        text = _chunk_text(kind, body)
        if text is not None and text[0] not in found:
            found[text[0]] = text[1]
    raise NotAnImage(f"{path.name}: a PNG chunk is cut short")


def _chunk_text(kind: bytes, body: bytes) -> tuple[str, str] | None:
    """``(keyword, text)`` of a text chunk, ``None`` for any other chunk or a bad one."""
    try:
        if kind == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            return keyword.decode("latin-1"), text.decode("latin-1")
        if kind == b"zTXt":
            keyword, _, rest = body.partition(b"\0")
            return keyword.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
        if kind == b"iTXt":
            keyword, _, rest = body.partition(b"\0")
            compressed, _method = rest[0], rest[1]
            _language, _, rest = rest[2:].partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            raw = _inflate(text) if compressed else text
            return keyword.decode("latin-1"), raw.decode("utf-8")
    except (IndexError, UnicodeDecodeError, zlib.error, ValueError):
        return None
    return None


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT)
    if inflater.unconsumed_tail:
        raise ValueError("text chunk too large")
    return out


def parse_a1111(parameters: str) -> ImageInfo:
    """The model hash, model name and seed of an A1111/Forge ``parameters`` text."""
    last = parameters.strip().splitlines()[-1] if parameters.strip() else ""
    pairs: dict[str, str] = {}
    for match in _PAIR.finditer(last):
        key, value = match.group(1).strip(), match.group(2).strip()
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        pairs.setdefault(key, value)
    model_hash = pairs.get("Model hash")
    if model_hash is not None and not _HASH.match(model_hash):
        model_hash = None
    return ImageInfo(
        source="a1111",
        model_hash=model_hash.lower() if model_hash else None,
        model_name=pairs.get("Model") or None,
        seed=_int(pairs.get("Seed")),
    )


def _int(text: object) -> int | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, str) and re.fullmatch(r"-?\d+", text.strip()):
        return int(text)
    return None


_LOADER_KEYS = ("ckpt_name", "unet_name", "model_name")
_SEED_KEYS = ("seed", "noise_seed")


def parse_comfyui(prompt: str | None, workflow: str | None) -> ImageInfo | None:
    """The checkpoint name and seed of a ComfyUI image, from its API graph (``prompt``) or,
    failing that, its editor graph (``workflow``); ``None`` when neither names a model."""
    name: str | None = None
    seed: int | None = None
    graph = _json(prompt)
    if isinstance(graph, dict):
        for node in graph.values():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if not isinstance(inputs, dict):
                continue
            for key in _LOADER_KEYS:
                if name is None and isinstance(inputs.get(key), str):
                    name = inputs[key]
            for key in _SEED_KEYS:
                if seed is None:
                    seed = _int(inputs.get(key))
    editor = _json(workflow)
    nodes = editor.get("nodes") if isinstance(editor, dict) else None
    if isinstance(nodes, list):
        for node in nodes:
            if not isinstance(node, dict):
                continue
            kind = str(node.get("type", ""))
            widgets = node.get("widgets_values")
            if not isinstance(widgets, list) or not widgets:
                continue
            if name is None and "Checkpoint" in kind and isinstance(widgets[0], str):
                name = widgets[0]
            if seed is None and "Sampler" in kind:
                seed = _int(widgets[1] if "Advanced" in kind and len(widgets) > 1 else widgets[0])
    if name is None:
        return None
    return ImageInfo(source="comfyui", model_name=name, seed=seed)


def _json(text: str | None) -> object:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def image_info(path: Path) -> ImageInfo:
    """What ``path`` says about its model. A PNG without model information gives
    ``ImageInfo(None)``; a file that is not a PNG raises :class:`NotAnImage` (JPEG and WebP
    images have no text chunks: they can still be matched by file name)."""
    if path.suffix.lower() != ".png":
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageInfo(None)
        raise NotAnImage(f"{path.name} is not an image")
    chunks = read_png_text(path)
    parameters = chunks.get("parameters")
    if parameters is not None:
        info = parse_a1111(parameters)
        if info.model_hash or info.model_name:
            return info
    comfy = parse_comfyui(chunks.get("prompt"), chunks.get("workflow"))
    if comfy is not None:
        return comfy
    if parameters is not None:
        return parse_a1111(parameters)
    return ImageInfo(None)
