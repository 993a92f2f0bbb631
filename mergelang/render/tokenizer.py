"""CLIP's tokenizer without a download: the BPE table that open_clip ships in its wheel.

SD1's text encoder uses OpenAI CLIP's byte-level BPE (49,408 tokens). open_clip_torch ships
that table as ``open_clip/bpe_simple_vocab_16e6.txt.gz``; :func:`clip_tokenizer` builds the
``vocab.json`` and ``merges.txt`` that transformers' ``CLIPTokenizer`` reads from it, exactly
as OpenAI's ``SimpleTokenizer`` builds its vocabulary (the 256 byte symbols, the same with
``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``). The file is
found without importing open_clip (whose import pulls in torchvision).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

from mergelang.errors import UsageError

__all__ = ["bpe_path", "clip_tokenizer", "clip_vocabulary"]

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2
"""How many merges of the file CLIP uses (its vocabulary is 49,408 tokens)."""


def bpe_path() -> Path:
    """The BPE table inside the installed open_clip package."""
    spec = importlib.util.find_spec("open_clip")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / BPE_FILE
        if path.is_file():
            return path
    raise UsageError(
        f"CLIP's tokenizer table ({BPE_FILE}) was not found: install mergelang[render] "
        "(it comes with open_clip_torch)"
    )


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map of the 256 bytes to printable characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def clip_vocabulary(path: Path) -> tuple[dict[str, int], list[str]]:
    """``(vocab, merges)`` of CLIP's tokenizer from the BPE table at ``path``."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """transformers' ``CLIPTokenizer`` with CLIP's vocabulary, built locally. OpenAI's CLIP
    (SD1, SDXL's first encoder) pads with ``<|endoftext|>``; OpenCLIP's encoders (SD2,
    SDXL's second) pad with token 0, ``!``, as diffusers' own SD2 and SDXL tokenizers do."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary(bpe_path())
    with tempfile.TemporaryDirectory(prefix="mergelang-clip-") as folder:
        vocab_file = Path(folder) / "vocab.json"
        merges_file = Path(folder) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            model_max_length=77,
            pad_token=pad_token,
        )
