"""The inputs of a recipe, each resolved once: found, opened, sniffed and read.

:func:`resolve_inputs` takes a checked recipe and, for every input model and every VAE or
text-encoder file a save names by path:

1. finds the file (:class:`~mergelang.io.locate.ModelLocator`: paths relative to the recipe's
   folder, ``--set`` values relative to the working folder, names in the model folders);
2. opens it, refusing anything but a regular file, and decides its format from its first
   bytes (:func:`~mergelang.io.formats.sniff_format_of`);
3. reads and validates a safetensors header; loads a pickle file with torch's weights-only
   loader when the inputs are resolved for a run (``load_pickles``: ``check --inputs`` only
   finds pickle files, and never imports torch).

A file reached by several names (or paths) is opened once. It stays open as an
:class:`InputFile`, and every later read goes through that descriptor: the architecture
detection, the executor's reads, the loading of a pickle and the content hashing. A file
replaced on disk after it was resolved is never mixed in, and one written to meanwhile
(:meth:`InputFile.check_unchanged`, its identity at opening against now) fails the run before
any output is committed. Tensors handed over in memory
(``mergelang.evaluate(..., inputs=...)``) take the place of a file for their model.

A problem does not stop the resolution: it is kept with the source it belongs to
(:attr:`ResolvedSource.problem`), for :func:`~mergelang.plan.input_checks.check_inputs` to
report at the source's place in the recipe. The planner turns each resolved input into an
:class:`InputHandle` of the plan.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Literal, TypeAlias

from mergelang.arch import Detected, detect
from mergelang.arch.layout import FileLayout
from mergelang.check.checked_recipe import CheckedRecipe, ModelSource
from mergelang.errors import CheckpointError, Span
from mergelang.io.formats import CheckpointFormat, sniff_format_of
from mergelang.io.hashing import (
    CachedHasher,
    FileHashes,
    FileIdentity,
    Progress,
    file_hashes,
    known_hashes,
)
from mergelang.io.locate import ModelLocator
from mergelang.io.memory_reader import KeyMeta, MemoryReader
from mergelang.io.safetensors_header import SafetensorsHeader, open_regular, read_header_from
from mergelang.io.scaled_fp8 import model_metas
from mergelang.io.weight_dtypes import check_float_weights
from mergelang.lang.ast import NO_SPAN

if TYPE_CHECKING:
    import torch

    from mergelang.io.ckpt import CkptReader
    from mergelang.io.gguf_format import GGUFCheckpoint
    from mergelang.io.readers import CheckpointReader

__all__ = [
    "InputFile",
    "InputHandle",
    "KeyMeta",
    "MemoryReader",
    "ResolvedInputs",
    "ResolvedSource",
    "resolve_inputs",
]

MemoryInput = Mapping[str, "torch.Tensor"]
InputFormat: TypeAlias = CheckpointFormat | Literal["memory"]
FileRole = Literal["model", "VAE", "text encoder"]
"""What a resolved file is to the recipe: an input model, or a file a save bakes in."""
Stage = Literal["locate", "open", "header", "load"]
"""Where resolving a source failed: finding its file, opening it (and telling its format),
reading its safetensors header, or loading its pickle (or its tensors in memory)."""


class InputFile:
    """One input file, opened once; see the module docstring.

    :meth:`open` opens and sniffs it; the header (:meth:`header`), a pickle's tensors
    (:meth:`load`) and the detected architecture (:meth:`detected`) are read on first use
    and kept, a failure included, so each is read once whoever asks.
    """

    def __init__(self, path: Path, file: BufferedReader, size: int, format: CheckpointFormat):
        self.path = path
        self.size = size
        self.format: CheckpointFormat = format
        self._file: BufferedReader | None = file
        opened = os.fstat(file.fileno())
        self.identity = FileIdentity.of(opened)
        """The file as it was opened; :meth:`check_unchanged` compares it with the file now."""
        self._links = opened.st_nlink
        self._header: SafetensorsHeader | CheckpointError | None = None
        self._loaded: CkptReader | GGUFCheckpoint | CheckpointError | None = None
        self._detected: Detected | CheckpointError | None = None
        self._metas: Mapping[str, KeyMeta] | None = None
        self._reader: CheckpointReader | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> InputFile:
        """Open ``path`` (a regular file only) and sniff its format; raises
        :class:`CheckpointError` for a file that cannot be opened or is no checkpoint."""
        file, size = open_regular(path)
        try:
            return cls(path, file, size, sniff_format_of(file, size, path))
        except BaseException:
            file.close()
            raise

    @property
    def file(self) -> BufferedReader:
        if self._file is None:
            raise ValueError(f"{self.path}: the input is closed")
        return self._file

    def header(self) -> SafetensorsHeader:
        """The validated safetensors header, read through the open descriptor."""
        if self._header is None:
            if self.format != "safetensors":
                raise ValueError(f"{self.path}: a {self.format} file has no safetensors header")
            try:
                self.file.seek(0)
                self._header = read_header_from(self.file, self.size, self.path)
            except CheckpointError as exc:
                self._header = exc
        if isinstance(self._header, CheckpointError):
            raise self._header
        return self._header

    def load(self) -> CkptReader | GGUFCheckpoint:
        """A pickle file's tensors, loaded weights-only through the open descriptor (a GGUF
        file's header, its tensors mapped through it)."""
        if self._loaded is None:
            try:
                if self.format == "gguf":
                    from mergelang.io.gguf_format import GGUFCheckpoint

                    self._loaded = GGUFCheckpoint(self.path, file=self.file)
                else:
                    from mergelang.io.ckpt import CkptReader

                    self._loaded = CkptReader(self.path, file=self.file)
            except CheckpointError as exc:
                self._loaded = exc
        if isinstance(self._loaded, CheckpointError):
            raise self._loaded
        return self._loaded

    @property
    def loaded(self) -> bool:
        """Whether the key names are known: a safetensors header, or a pickle loaded."""
        if self.format == "safetensors":
            return isinstance(self._header, SafetensorsHeader)
        return self._loaded is not None and not isinstance(self._loaded, CheckpointError)

    def metas(self) -> Mapping[str, KeyMeta]:
        """Each key's dtype and shape, in the file's order."""
        if self._metas is None:
            if self.format == "safetensors":
                found = model_metas(self.header().tensors, self.path)
            else:
                reader = self.load()
                found = {k: KeyMeta(reader.info(k).dtype, reader.info(k).shape) for k in reader}
            self._metas = MappingProxyType(found)
        return self._metas

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.header().metadata if self.format == "safetensors" else {}

    def detected(self) -> Detected:
        """The architecture the keys and shapes show (see :func:`mergelang.arch.detect`)."""
        if self._detected is None:
            metas = self.metas()
            shapes = {key: meta.shape for key, meta in metas.items()}
            try:
                self._detected = detect(shapes, path=str(self.path))
                dtypes = {key: meta.dtype for key, meta in metas.items()}
                check_float_weights(str(self.path), self._detected.arch, dtypes)
            except CheckpointError as exc:
                self._detected = exc
        if isinstance(self._detected, CheckpointError):
            raise self._detected
        return self._detected

    def reader(self) -> CheckpointReader:
        """The reader the executor takes tensors from (made on first call, through the open
        descriptor; safe from several threads)."""
        with self._lock:
            if self._reader is None:
                if self.format == "safetensors":
                    from mergelang.io.readers import SafetensorsReader
                    from mergelang.io.scaled_fp8 import scaled_view

                    self._reader = scaled_view(
                        SafetensorsReader(self.path, file=self.file, header=self.header())
                    )
                else:
                    self._reader = self.load()
            return self._reader

    def hashes(
        self, cache_dir: Path, *, compute: bool, progress: Progress | None = None
    ) -> FileHashes | None:
        """The file's content hashes: from the hash cache, else (``compute``) by reading the
        open file once (``progress`` told the bytes read); ``None`` when they are not known
        and not to be computed."""
        if compute:
            return file_hashes(self.path, cache_dir=cache_dir, file=self.file, progress=progress)
        return known_hashes(self.path, cache_dir=cache_dir, file=self.file)

    def hasher(self, cache_dir: Path) -> FileHashes | CachedHasher:
        """The file's hashes from the hash cache, else a hasher of the open file that stores
        them there when done (its work can be spread over the run, see
        :class:`~mergelang.io.hashing.CachedHasher`)."""
        known = known_hashes(self.path, cache_dir=cache_dir, file=self.file)
        return known if known is not None else CachedHasher(self.path, self.file, cache_dir)

    def check_unchanged(self) -> None:
        """Raise :class:`CheckpointError` (``input-changed``) if the open file is no longer
        as it was opened: written to, truncated or grown (its size, modification or change
        time differ; a change time moved with the link count alone is a rename or a delete,
        which leaves the open file's bytes as they were). A run checks every input so before
        it commits its outputs."""
        if self._file is None:
            return
        try:
            st = os.fstat(self._file.fileno())
        except OSError as exc:  # pragma: no cover - fstat of an open descriptor
            raise CheckpointError(
                str(self.path), f"cannot check the input: {exc.strerror}", code="input-changed"
            ) from None
        changes = self.identity.differences(FileIdentity.of(st))
        if [c.split()[0] for c in changes] == ["ctime_ns"] and st.st_nlink != self._links:
            # Only its links changed (renamed over by a new download, deleted): the bytes
            # read are still those of the file opened and hashed.
            return
        if changes:
            raise CheckpointError(
                str(self.path),
                f"input changed during the run ({', '.join(changes)}); no output was written",
                code="input-changed",
                hint="run again once the file is no longer being written",
            )

    def close(self) -> None:
        """Close the file; tensors already read stay valid."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if isinstance(self._loaded, CheckpointError) or self._loaded is None:
                return
            self._loaded.close()

    def __repr__(self) -> str:
        return f"InputFile({str(self.path)!r}, {self.format})"


InputSource: TypeAlias = InputFile | MemoryReader


@dataclass(frozen=True, eq=False)
class InputHandle:
    """One input of a plan, shared by every recipe name that refers to the same file.

    ``label`` names it in messages (the path as found, or ``<memory:NAME>``); ``header`` maps
    each key (its canonical name, see :attr:`file_keys`) to its :class:`KeyMeta`;
    ``architecture`` and ``variant`` are what detection found (``None`` for a VAE file).
    ``source`` is the open file (or the tensors in memory) every read goes through;
    :meth:`close` closes it.
    """

    name: str
    path: Path | None
    format: InputFormat
    header: Mapping[str, KeyMeta]
    metadata: Mapping[str, str]
    source: InputSource = field(repr=False)
    span: Span = field(default=NO_SPAN, repr=False)
    architecture: str | None = None
    variant: str = "normal"
    layout: FileLayout | None = None
    """How the file names its keys (``bare`` or ``all_in_one``; ``None`` for a VAE file)."""
    file_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Canonical key -> the name the file stores it under, where they differ: ``header``
    and every plan name a bare file's denoiser keys with the architecture's prefix."""

    def file_key(self, key: str) -> str:
        """The name ``key`` (a canonical name, as in :attr:`header`) has in the file."""
        return self.file_keys.get(key, key)

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"<memory:{self.name}>"

    @property
    def identity(self) -> str:
        """What makes two handles the same input: the real path, or the memory name."""
        return str(self.path) if self.path is not None else f"<memory:{self.name}>"

    @property
    def nbytes(self) -> int:
        return sum(meta.nbytes for meta in self.header.values())

    @property
    def file(self) -> InputFile | None:
        return self.source if isinstance(self.source, InputFile) else None

    def reader(self) -> CheckpointReader:
        """The reader of the input's tensors (safe from several threads)."""
        if isinstance(self.source, InputFile):
            return self.source.reader()
        return self.source

    def close(self) -> None:
        self.source.close()

    def __repr__(self) -> str:
        return f"InputHandle({self.label!r}, {len(self.header)} keys)"


@dataclass(frozen=True, eq=False)
class ResolvedSource:
    """One model or VAE of the recipe as :func:`resolve_inputs` found it: where its file is,
    the open file (or the tensors in memory), or the problem that stopped it and where."""

    source: ModelSource
    role: FileRole
    path: Path | None = None
    file: InputFile | None = None
    memory: MemoryReader | None = None
    problem: CheckpointError | None = None
    stage: Stage | None = None

    @property
    def label(self) -> str:
        """``model 'a'``, ``VAE 'vae.safetensors'``: how messages name the source."""
        return f"{self.role} '{self.source.name}'"

    @property
    def format(self) -> InputFormat | None:
        if self.memory is not None:
            return "memory"
        return None if self.file is None else self.file.format

    @property
    def inspectable(self) -> bool:
        """Whether its keys are known (a safetensors header, a loaded pickle, tensors)."""
        if self.problem is not None:
            return False
        return self.memory is not None or (self.file is not None and self.file.loaded)


@dataclass(eq=False)
class ResolvedInputs:
    """Every input of a recipe, resolved once (see the module docstring). ``models`` by
    name, in declaration order; ``vaes``, the files saves bake in by path (VAE and text
    encoder files), by that path as written. ``for_run``: pickle files were loaded (the
    inputs of a plan, not of ``check --inputs``). Closing it closes every file; a plan built
    from it takes them over instead."""

    models: Mapping[str, ResolvedSource]
    vaes: Mapping[str, ResolvedSource]
    for_run: bool = False
    _detected: dict[int, Detected | CheckpointError] = field(default_factory=dict, repr=False)

    def files(self) -> list[InputFile]:
        """The distinct files opened, first found first."""
        found: dict[int, InputFile] = {}
        for resolved in [*self.models.values(), *self.vaes.values()]:
            if resolved.file is not None:
                found.setdefault(id(resolved.file), resolved.file)
        return list(found.values())

    def detected(self, resolved: ResolvedSource) -> Detected:
        """The architecture of a resolved source whose keys are known (kept once found)."""
        if resolved.file is not None:
            return resolved.file.detected()
        assert resolved.memory is not None
        reader = resolved.memory
        found = self._detected.get(id(reader))
        if found is None:
            try:
                found = detect(reader.shapes(), path=str(reader.path))
                dtypes = {key: reader.info(key).dtype for key in reader}
                check_float_weights(str(reader.path), found.arch, dtypes)
            except CheckpointError as exc:
                found = exc
            self._detected[id(reader)] = found
        if isinstance(found, CheckpointError):
            raise found
        return found

    def close(self) -> None:
        for file in self.files():
            file.close()

    def __enter__(self) -> ResolvedInputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def resolve_inputs(
    checked: CheckedRecipe,
    locator: ModelLocator,
    *,
    memory: Mapping[str, MemoryInput] | None = None,
    load_pickles: bool = False,
) -> ResolvedInputs:
    """Resolve every input of ``checked`` (see the module docstring); ``memory`` gives
    tensors for some model names instead of their files."""
    resolver = _Resolver(checked, locator, load_pickles)
    try:
        models: dict[str, ResolvedSource] = {}
        given = memory or {}
        for name, source in checked.models.items():
            if name in given:
                models[name] = _in_memory(source, given[name], name)
            else:
                models[name] = resolver.resolve(source, "model")
        vaes: dict[str, ResolvedSource] = {}
        for save in checked.saves:
            for option, vae in save.baked:
                if checked.models.get(vae.name) == vae or vae.ref in vaes:
                    continue
                vaes[vae.ref] = resolver.resolve(vae, "VAE" if option == "vae" else "text encoder")
    except BaseException:
        resolver.close()
        raise
    return ResolvedInputs(MappingProxyType(models), MappingProxyType(vaes), load_pickles)


def _in_memory(source: ModelSource, tensors: MemoryInput, name: str) -> ResolvedSource:
    try:
        reader = MemoryReader(tensors, name)
    except CheckpointError as exc:
        return ResolvedSource(source, "model", problem=exc, stage="load")
    return ResolvedSource(source, "model", memory=reader)


class _Resolver:
    def __init__(self, checked: CheckedRecipe, locator: ModelLocator, load_pickles: bool):
        self.checked = checked
        self.locator = locator
        self.load_pickles = load_pickles
        self.opened: dict[str, InputFile | CheckpointError] = {}

    def resolve(self, source: ModelSource, role: FileRole) -> ResolvedSource:
        relative = Path.cwd() if source.kind == "variable" else self.checked.base_dir
        try:
            path = self.locator.find(source.ref, relative_to=relative or Path.cwd())
        except CheckpointError as exc:
            return ResolvedSource(source, role, problem=exc, stage="locate")
        identity = os.path.realpath(path)
        opened = self.opened.get(identity)
        if opened is None:
            try:
                opened = InputFile.open(path)
            except CheckpointError as exc:
                opened = exc
            self.opened[identity] = opened
        if isinstance(opened, CheckpointError):
            return ResolvedSource(source, role, path, problem=opened, stage="open")
        stage: Stage = "header" if opened.format == "safetensors" else "load"
        try:
            if opened.format == "safetensors":
                opened.header()
                opened.metas()
            elif self.load_pickles or opened.format == "gguf":
                opened.load()
        except CheckpointError as exc:
            return ResolvedSource(source, role, path, opened, problem=exc, stage=stage)
        return ResolvedSource(source, role, path, opened)

    def close(self) -> None:
        for opened in self.opened.values():
            if isinstance(opened, InputFile):
                opened.close()


def open_cached(path: Path) -> InputFile | None:
    """A cache object opened like an input (its header read), or ``None`` if it cannot be
    opened or is not a whole safetensors file."""
    try:
        opened = InputFile.open(path)
    except (CheckpointError, OSError):
        return None
    try:
        if opened.format != "safetensors":
            raise CheckpointError(str(path), "not a safetensors file")
        opened.header()
    except (CheckpointError, OSError):
        opened.close()
        return None
    return opened
