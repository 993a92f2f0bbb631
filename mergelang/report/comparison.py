"""The content of a comparison page: outputs placed in the U (or a grid), with their images.

:func:`build_comparison` reads the outputs (:func:`~mergelang.report.outputs.read_output`),
finds the reference model, matches the images (:func:`~mergelang.report.matching.match_images`)
and decides the arrangement:

- the **U** when the page's architecture has a U-Net scheme and every output belongs to a
  block of its own: a loop value that is a block name (``for blk in IN00..OUT11``), else the
  one block whose weight it changes. The reference model sits at the top of the U's middle.
- a **grid** otherwise: rows from the first loop variable's values, columns from the second
  (``for blk ... for w ...`` gives blocks x strengths); outputs without loop values go one per
  row, in the order given.

Nothing here raises for bad input: every problem (an unreadable output, outputs of another
architecture, a missing reference, images that match nothing) becomes a line in
:attr:`Comparison.problems` or :attr:`Comparison.unmatched`, and the page renders the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mergelang.arch import Architecture
from mergelang.arch.scheme import BlockScheme
from mergelang.errors import MergelangError
from mergelang.io.hashing import file_hashes
from mergelang.report.layout import u_layout
from mergelang.report.matching import (
    Candidate,
    ImageMatch,
    Matches,
    Unmatched,
    image_files,
    match_images,
)
from mergelang.report.outputs import OutputModel, read_output

__all__ = ["REFERENCE_KEY", "Cell", "Comparison", "build_comparison"]

REFERENCE_KEY = "\0reference"
"""The key of the reference model among the match candidates (no output can have it)."""


@dataclass(frozen=True)
class Cell:
    """One output in its place: ``row``/``column`` count from 0; ``block`` is the block it
    stands for in the U (or ``None``); ``order`` is its place for the arrow keys."""

    output: OutputModel
    row: int
    column: int
    order: int
    block: str | None
    images: dict[int | None, ImageMatch]


@dataclass
class Comparison:
    title: str
    architecture: Architecture | None
    shape: str
    """``"u"`` or ``"grid"``."""
    cells: list[Cell]
    rows: int
    columns: int
    row_labels: list[str] = field(default_factory=list)
    column_labels: list[str] = field(default_factory=list)
    reference: Candidate | None = None
    reference_images: dict[int | None, ImageMatch] = field(default_factory=dict)
    seeds: list[int | None] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)
    without_images: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def scheme(self) -> BlockScheme | None:
        return None if self.architecture is None else self.architecture.scheme

    def image_count(self) -> int:
        return sum(len(c.images) for c in self.cells) + len(self.reference_images)


def _read_outputs(
    paths: Sequence[Path], problems: list[str], *, hashes: bool, cache_dir: Path | None
) -> list[OutputModel]:
    outputs: list[OutputModel] = []
    for path in paths:
        try:
            output = read_output(path, hashes=hashes, cache_dir=cache_dir)
        except MergelangError as exc:
            problems.append(f"{path.name}: cannot be read ({exc.diagnostics[0].message})")
            continue
        except OSError as exc:
            problems.append(f"{path.name}: cannot be read ({exc.strerror or exc})")
            continue
        outputs.append(output)
    return outputs


def _one_architecture(
    outputs: list[OutputModel], problems: list[str]
) -> tuple[Architecture | None, list[OutputModel]]:
    """The architecture most outputs have, and those outputs; the others are reported."""
    counts = Counter(o.architecture.name for o in outputs if o.architecture is not None)
    if not counts:
        problems.extend(p for o in outputs for p in o.problems)
        return None, outputs
    name = counts.most_common(1)[0][0]
    kept = [o for o in outputs if o.architecture is None or o.architecture.name == name]
    chosen = next(o.architecture for o in kept if o.architecture is not None)
    for output in outputs:
        if output.architecture is not None and output.architecture.name != name:
            problems.append(
                f"{output.name} is a {output.architecture.title} model and the page shows "
                f"{chosen.title} outputs: left out (make one page per architecture)"
            )
        else:
            problems.extend(output.problems)
    return chosen, kept


def _reference(
    outputs: Sequence[OutputModel],
    given: Path | None,
    problems: list[str],
    *,
    hashes: bool,
    cache_dir: Path | None,
) -> Candidate | None:
    """The model the outputs are compared with: ``given``, else their common first input."""
    if given is not None:
        try:
            found = file_hashes(given, cache_dir=cache_dir) if hashes else None
        except OSError as exc:
            problems.append(f"reference {given}: cannot be read ({exc.strerror or exc})")
            return None
        return Candidate(
            REFERENCE_KEY,
            given.stem,
            None if found is None else found.autov2,
            None if found is None else found.legacy,
        )
    firsts = [o.inputs[0] for o in outputs if o.inputs]
    if not firsts:
        problems.append("no reference model: the outputs record no inputs (give --reference MODEL)")
        return None
    (sha, _), *_ = Counter(r.sha256 for r in firsts).most_common(1)
    record = next(r for r in firsts if r.sha256 == sha)
    stem = record.file_name.rsplit(".", 1)[0] if "." in record.file_name else record.file_name
    return Candidate(REFERENCE_KEY, stem, record.autov2 or None, record.legacy or None)


def _block_of(output: OutputModel, scheme: BlockScheme | None) -> str | None:
    if scheme is None:
        return None
    for value in output.bindings.values():
        if value in scheme.index:
            return value
    if len(output.changed) == 1:
        return next(iter(output.changed))
    return None


def build_comparison(
    outputs: Sequence[Path],
    images: Path | None,
    *,
    reference: Path | None = None,
    title: str | None = None,
    hashes: bool = True,
    cache_dir: Path | None = None,
) -> Comparison:
    """Everything a comparison page shows; see the module docstring."""
    problems: list[str] = []
    read = _read_outputs(outputs, problems, hashes=hashes, cache_dir=cache_dir)
    architecture, kept = _one_architecture(read, problems)
    scheme = None if architecture is None else architecture.scheme
    ref = _reference(kept, reference, problems, hashes=hashes, cache_dir=cache_dir)
    candidates = [
        Candidate(
            o.name,
            o.name,
            None if o.hashes is None else o.hashes.autov2,
            None if o.hashes is None else o.hashes.legacy,
        )
        for o in kept
    ]
    if ref is not None:
        candidates.append(ref)
    matches = Matches(images={c.key: {} for c in candidates})
    if images is not None:
        if images.is_dir():
            matches = match_images(image_files(images), candidates)
        else:
            problems.append(f"images: {images} is not a folder")
    comparison = _arrange(kept, scheme, matches)
    comparison.architecture = architecture
    comparison.title = title or _default_title(kept)
    comparison.reference = ref
    comparison.seeds = matches.seeds
    comparison.unmatched = list(matches.unmatched)
    comparison.problems = problems
    if ref is not None:
        comparison.reference_images = matches.images.get(REFERENCE_KEY, {})
        if images is not None and not comparison.reference_images:
            hash_text = f" (AutoV2 {ref.autov2})" if ref.autov2 else ""
            problems.append(f"no images of the reference model {ref.stem}{hash_text}")
    comparison.without_images = [c.output.name for c in comparison.cells if not c.images]
    return comparison


def _default_title(outputs: Sequence[OutputModel]) -> str:
    if not outputs:
        return "mergelang comparison"
    return f"{outputs[0].path.parent.name or 'outputs'}: {len(outputs)} outputs"


def _arrange(
    outputs: list[OutputModel], scheme: BlockScheme | None, matches: Matches
) -> Comparison:
    layout = None if scheme is None else u_layout(scheme)
    blocks = [_block_of(o, scheme) for o in outputs]
    cells: list[Cell] = []
    if layout is not None and outputs and None not in blocks and len(set(blocks)) == len(blocks):
        assert scheme is not None
        order = scheme.index
        for output, block in zip(outputs, blocks, strict=True):
            assert block is not None
            slot = layout.slot(block)
            cells.append(
                Cell(
                    output, slot.row, slot.column, order[block], block, matches.images[output.name]
                )
            )
        return Comparison("", None, "u", cells, layout.rows, 3)
    names = list(dict.fromkeys(k for o in outputs for k in o.bindings))
    row_var = names[0] if names else None
    column_var = names[1] if len(names) > 1 else None
    rows: list[str] = []
    columns: list[str] = []
    for output in outputs:
        row = output.bindings.get(row_var, output.name) if row_var else output.name
        if row not in rows:
            rows.append(row)
        if column_var is not None:
            column = output.bindings.get(column_var, "")
            if column not in columns:
                columns.append(column)
    placed: set[tuple[int, int]] = set()
    for index, output in enumerate(outputs):
        row_value = output.bindings.get(row_var, output.name) if row_var else output.name
        r = rows.index(row_value)
        c = columns.index(output.bindings.get(column_var, "")) if column_var is not None else 0
        while (r, c) in placed:  # two outputs with the same loop values: one more row
            rows.append(row_value)
            r = len(rows) - 1
        placed.add((r, c))
        cells.append(Cell(output, r, c, index, blocks[index], matches.images[output.name]))
    comparison = Comparison("", None, "grid", cells, len(rows), max(len(columns), 1))
    comparison.row_labels = [f"{row_var} = {r}" if row_var else r for r in rows]
    comparison.column_labels = [f"{column_var} = {c}" for c in columns] if column_var else []
    return comparison
