"""Matching rendered images to the models they were rendered from.

Each image is matched by what it says about its model, most certain first:

1. the model hash in A1111/Forge PNG info: the AutoV2 hash (10 hex digits) or the legacy one
   (8), compared with each model's own hashes;
2. the model name: A1111's ``Model:`` or ComfyUI's checkpoint name (folders and the file
   extension dropped), compared with each model's file name;
3. for an image that says nothing about its model, its file name: ``<model name>`` followed
   by a separator and the rest (``sd15-IN04-075-1.png``, ``sd15-IN04-075_seed2.png``).

The seed is the PNG info's, else the last number in what follows the model name in the file
name. An image whose information names no model on the page, two images of one model and
seed, a file that is not an image: each becomes an :class:`Unmatched` entry with the reason,
and the page lists them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mergelang.report.pnginfo import ImageInfo, NotAnImage, image_info

__all__ = [
    "Candidate",
    "ImageMatch",
    "Matches",
    "Unmatched",
    "image_files",
    "match_images",
    "model_stem",
]

_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
_SEED_AT_END = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class Candidate:
    """A model images may belong to: ``key`` is how the page refers to it, ``stem`` its
    file name without extension, ``autov2``/``legacy`` its hashes (``None`` if unknown)."""

    key: str
    stem: str
    autov2: str | None = None
    legacy: str | None = None


@dataclass(frozen=True)
class ImageMatch:
    """One image of one model: ``how`` says what matched it (``"model hash"``,
    ``"model name"``, ``"ComfyUI checkpoint"``, ``"file name"``)."""

    path: Path
    key: str
    seed: int | None
    how: str


@dataclass(frozen=True)
class Unmatched:
    path: Path
    reason: str


@dataclass
class Matches:
    """The images of each model by seed, and every file that found no place."""

    images: dict[str, dict[int | None, ImageMatch]] = field(default_factory=dict)
    unmatched: list[Unmatched] = field(default_factory=list)

    @property
    def seeds(self) -> list[int | None]:
        """Every seed any image has, in order (images without a seed last)."""
        found = {seed for by_seed in self.images.values() for seed in by_seed}
        numbered = sorted(s for s in found if s is not None)
        return [*numbered, *([None] if None in found else [])]

    def count(self) -> int:
        return sum(len(by_seed) for by_seed in self.images.values())


def model_stem(name: str) -> str:
    """``"models/sub\\sd15-IN04.safetensors"`` -> ``"sd15-IN04"``."""
    base = re.split(r"[\\/]", name)[-1]
    for suffix in _MODEL_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def image_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, in path order (hidden files and folders left out)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _by_hash(info: ImageInfo, candidates: Sequence[Candidate]) -> Candidate | None:
    wanted = info.model_hash
    if not wanted:
        return None
    for candidate in candidates:
        if len(wanted) == 10 and candidate.autov2 == wanted:
            return candidate
        if len(wanted) == 8 and candidate.legacy == wanted:
            return candidate
    return None


def _by_name(name: str | None, candidates: Sequence[Candidate]) -> Candidate | None:
    if not name:
        return None
    stem = model_stem(name)
    for candidate in candidates:
        if candidate.stem == stem:
            return candidate
    return None


def _by_file_name(path: Path, candidates: Sequence[Candidate]) -> tuple[Candidate, str] | None:
    """The candidate whose stem starts the image's file name (the longest such), and what
    follows it."""
    stem = path.stem
    best: tuple[Candidate, str] | None = None
    for candidate in candidates:
        starts = stem == candidate.stem or (
            stem.startswith(candidate.stem) and not stem[len(candidate.stem)].isalnum()
        )
        if starts and (best is None or len(candidate.stem) > len(best[0].stem)):
            best = (candidate, stem[len(candidate.stem) :])
    return best


def _describe(info: ImageInfo) -> str:
    said = []
    if info.model_hash:
        said.append(f"model hash {info.model_hash}")
    if info.model_name:
        said.append(f"model {info.model_name!r}")
    return " and ".join(said)


def match_images(files: Iterable[Path], candidates: Sequence[Candidate]) -> Matches:
    """Place each of ``files`` with one of ``candidates`` and a seed; see the module doc."""
    matches = Matches(images={c.key: {} for c in candidates})
    for path in files:
        try:
            info = image_info(path)
        except NotAnImage as exc:
            matches.unmatched.append(Unmatched(path, str(exc)))
            continue
        except OSError as exc:
            matches.unmatched.append(Unmatched(path, f"cannot be read ({exc.strerror or exc})"))
            continue
        found: Candidate | None = None
        how = ""
        seed = info.seed
        if info.model_hash or info.model_name:
            found, how = _by_hash(info, candidates), "model hash"
            if found is None:
                how = "ComfyUI checkpoint" if info.source == "comfyui" else "model name"
                found = _by_name(info.model_name, candidates)
            if found is None:
                matches.unmatched.append(
                    Unmatched(path, f"its PNG info names {_describe(info)}: none of the models")
                )
                continue
        else:
            by_file = _by_file_name(path, candidates)
            if by_file is None:
                matches.unmatched.append(
                    Unmatched(
                        path,
                        "no model information in the image, and its file name starts with "
                        "no model's name",
                    )
                )
                continue
            found, rest = by_file
            how = "file name"
            if seed is None:
                number = _SEED_AT_END.search(rest)
                seed = int(number.group(1)) if number else None
        by_seed = matches.images[found.key]
        if seed in by_seed:
            first = by_seed[seed].path.name
            which = "without a seed" if seed is None else f"seed {seed}"
            matches.unmatched.append(
                Unmatched(path, f"a second image of {found.stem}, {which} (the first is {first})")
            )
            continue
        by_seed[seed] = ImageMatch(path, found.key, seed, how)
    return matches
