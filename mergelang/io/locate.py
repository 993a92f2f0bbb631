"""Finding the checkpoint a recipe names.

A reference is tried, in order:

1. as a path: absolute, else relative to the recipe's folder, else to the working folder
   (also with each model extension appended when it has none);
2. by name in the model folders: those given on the command line (``--models-dir``,
   repeatable), then those in ``$MERGELANG_MODELS`` (``os.pathsep``-separated). Each folder is
   searched recursively, like A1111's ``Stable-diffusion`` folder with its sub-folders. A name
   may carry sub-folders (``sub/name``, ``sub\\name``), may omit the extension
   (``.safetensors``, ``.ckpt``, ``.pt``, ``.pth``, ``.bin``) and may end in an A1111 hash
   suffix (``name [abcdef1234]``), which is ignored for the lookup.

The first folder with a match decides (like ``PATH``); within it the shallowest matches win,
and more than one of those is an error (``model-ambiguous``) listing them. Nothing found is an
error (``model-not-found``) listing every place searched, unless a path names something that
is not a regular file (``is-directory``, ``not-a-file``: never opened, so a FIFO or a device
cannot block the lookup) or that a folder without search rights hides (``permission-denied``).
Only the given folders are scanned; hidden sub-folders and mergelang's partial output files
are skipped; each folder is scanned at most once per locator.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

from mergelang.errors import CheckpointError
from mergelang.io.file_formats import input_suffixes
from mergelang.io.writer import is_partial_name

MODEL_SUFFIXES = input_suffixes()
"""The suffixes of the files the locator finds by name: ``.safetensors``, ``.ckpt``..."""
MODELS_ENV = "MERGELANG_MODELS"
_HASH_SUFFIX = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]\s*$")


def strip_hash_suffix(ref: str) -> tuple[str, str | None]:
    """``"name [abcdef1234]"`` -> ``("name", "abcdef1234")``; other names are unchanged."""
    found = _HASH_SUFFIX.match(ref)
    if found is None or not found.group("name"):
        return ref, None
    return found.group("name"), found.group("hash").lower()


def has_model_suffix(name: str) -> bool:
    return name.lower().endswith(MODEL_SUFFIXES)


def _model_stem(name: str) -> str:
    lowered = name.lower()
    for suffix in MODEL_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


PathKind: TypeAlias = Literal["file", "directory", "other", "denied"]


def _kind(path: Path) -> PathKind | None:
    """What is at ``path`` (``None``: nothing), found with ``stat`` alone: nothing is opened,
    and a folder on the way that cannot be searched is ``"denied"``, not an exception."""
    try:
        mode = os.stat(path).st_mode
    except PermissionError:
        return "denied"
    except (OSError, ValueError):  # ValueError: a NUL character in the path
        return None
    if stat.S_ISREG(mode):
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "other"


def _not_a_file(path: Path, kind: PathKind) -> CheckpointError:
    """The error for a reference that names something other than a readable regular file."""
    if kind == "denied":
        return CheckpointError(
            str(path),
            f"{path}: permission denied (a folder on the way cannot be searched)",
            code="permission-denied",
            hint="check the rights of the file and of its folders",
        )
    if kind == "directory":
        return CheckpointError(
            str(path),
            f"{path} is a directory, not a checkpoint file",
            code="is-directory",
            hint="name the checkpoint file itself",
        )
    return CheckpointError(
        str(path),
        f"{path} is not a regular file (a device, FIFO or socket), not a checkpoint file",
        code="not-a-file",
    )


class ModelLocator:
    """Resolves model references to files (see the module docstring for the rules)."""

    def __init__(
        self,
        search_dirs: Sequence[str | os.PathLike[str]] = (),
        *,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        dirs = [Path(d).expanduser() for d in search_dirs]
        dirs += [Path(p).expanduser() for p in env.get(MODELS_ENV, "").split(os.pathsep) if p]
        unique: list[Path] = []
        for folder in dirs:
            absolute = Path(os.path.abspath(folder))
            if absolute not in unique:
                unique.append(absolute)
        self.search_dirs: tuple[Path, ...] = tuple(unique)
        self._index: dict[Path, list[tuple[str, ...]]] = {}

    def find(self, ref: str, *, relative_to: str | os.PathLike[str] | None = None) -> Path:
        """The file ``ref`` names; raises :class:`CheckpointError` if none or several match."""
        text = ref.strip()
        name, _ = strip_hash_suffix(text)
        tried: list[str] = []
        not_files: list[tuple[Path, PathKind]] = []
        for attempt in dict.fromkeys((text, name)):
            direct = self._direct(attempt, relative_to, tried, not_files)
            if direct is not None:
                return direct
        parts = self._name_parts(name)
        if parts:
            for folder in self.search_dirs:
                if _kind(folder) != "directory":
                    tried.append(f"{folder} (no such folder)")
                    continue
                tried.append(f"{folder} (and its sub-folders)")
                matches = self._matches(folder, parts)
                if len(matches) == 1:
                    return matches[0]
                if matches:
                    listed = "\n".join(f"  {m}" for m in matches)
                    raise CheckpointError(
                        ref,
                        f"the model name matches {len(matches)} files in {folder}:\n{listed}",
                        code="model-ambiguous",
                        hint="name the file with its sub-folder or extension",
                    )
        if not_files:
            raise _not_a_file(*not_files[0])
        listed = "\n".join(f"  {place}" for place in tried)
        hint = self._near_match(name, relative_to) if parts else None
        if hint is None and not self.search_dirs:
            hint = f"pass --models-dir or set {MODELS_ENV} to search model folders by name"
        raise CheckpointError(
            ref, f"cannot find this model; searched:\n{listed}", code="model-not-found", hint=hint
        )

    def _direct(
        self,
        ref: str,
        relative_to: str | os.PathLike[str] | None,
        tried: list[str],
        not_files: list[tuple[Path, PathKind]],
    ) -> Path | None:
        """The regular file ``ref`` names as a path; what exists there but is not a regular
        file (a folder, a device, a FIFO, or what a locked folder hides) is added to
        ``not_files``, never opened."""
        if not ref:
            return None
        given = Path(ref).expanduser()
        bases: list[Path | None]
        if given.is_absolute():
            bases = [None]
        else:
            # Absolute bases, so a recipe folder that is the working folder is tried once.
            bases = [Path(os.path.abspath(relative_to))] if relative_to is not None else []
            bases.append(Path.cwd())
        for base in dict.fromkeys(bases):
            path = given if base is None else base / given
            options = [path]
            if not has_model_suffix(path.name):
                options += [path.with_name(path.name + suffix) for suffix in MODEL_SUFFIXES]
            for option in options:
                kind = _kind(option)
                if kind == "file":
                    if not is_partial_name(option.name):
                        return Path(os.path.abspath(option))
                elif kind is not None:
                    not_files.append((Path(os.path.abspath(option)), kind))
            extra = "" if has_model_suffix(path.name) else " (with or without an extension)"
            tried.append(f"{os.path.abspath(path)}{extra}")
        return None

    @staticmethod
    def _name_parts(name: str) -> tuple[str, ...]:
        if not name or Path(name).expanduser().is_absolute():
            return ()
        parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
        if not parts or ".." in parts:
            return ()
        return parts

    def _matches(self, folder: Path, parts: tuple[str, ...]) -> list[Path]:
        wanted_last = parts[-1]
        exact = has_model_suffix(wanted_last)
        best: list[tuple[str, ...]] = []
        best_depth: int | None = None
        for rel in self._files(folder):
            if len(rel) < len(parts) or rel[len(rel) - len(parts) : -1] != parts[:-1]:
                continue
            last = rel[-1]
            if (last if exact else _model_stem(last)) != wanted_last:
                continue
            depth = len(rel) - len(parts)
            if best_depth is None or depth < best_depth:
                best, best_depth = [rel], depth
            elif depth == best_depth:
                best.append(rel)
        found: dict[str, Path] = {}
        for rel in best:
            path = folder.joinpath(*rel)
            found.setdefault(os.path.realpath(path), path)
        return sorted(found.values())

    def _files(self, folder: Path) -> list[tuple[str, ...]]:
        cached = self._index.get(folder)
        if cached is not None:
            return cached
        files: list[tuple[str, ...]] = []
        seen: set[str] = set()
        for root, dirnames, filenames in os.walk(folder, followlinks=True):
            real = os.path.realpath(root)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_root = Path(root).relative_to(folder).parts
            for filename in sorted(filenames):
                if has_model_suffix(filename) and not is_partial_name(filename):
                    files.append((*rel_root, filename))
        self._index[folder] = files
        return files

    def _near_match(
        self, name: str, relative_to: str | os.PathLike[str] | None = None
    ) -> str | None:
        """``did you mean 'sd15-anime'?`` for the model file among those searched (the
        search folders, and the folder the name points into) whose name is closest to
        ``name``, if one is close."""
        import difflib

        given = Path(name.replace("\\", "/"))
        wanted = _model_stem(given.name)
        by_stem: dict[str, Path] = {}
        folder = Path(relative_to or ".") / given.parent
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(folder)):
                if has_model_suffix(entry) and not is_partial_name(entry):
                    by_stem.setdefault(_model_stem(entry), folder / entry)
        for path in self.available():
            by_stem.setdefault(_model_stem(path.name), path)
        close = difflib.get_close_matches(wanted, list(by_stem), n=1, cutoff=0.75)
        if not close:
            return None
        return f"did you mean '{close[0]}'? ({by_stem[close[0]]})"

    def available(self) -> list[Path]:
        """Every model file in the search folders, folder by folder."""
        return [
            folder.joinpath(*rel)
            for folder in self.search_dirs
            if _kind(folder) == "directory"
            for rel in self._files(folder)
        ]
