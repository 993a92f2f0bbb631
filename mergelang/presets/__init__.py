"""Named block-weight presets: the MBW table shipped with mergelang, and users' preset files.

A preset is a named block weight vector (usually 25 values, IN00..OUT11, BASE unset). The
38 presets of Merge Block Weighted ship in ``mbw.tsv`` beside this module, with BASE as
SuperMerger's copy of the table gives it where that differs from "unset": ``ALL_B`` sets
BASE to 1 (MBW's own table has no BASE column; its ``base_alpha`` slider decides). Users keep their
own files in the same tab-separated form, or as ``NAME: v, v, ...`` / ``NAME = v, ...`` lines
(the form many SuperMerger users keep); a recipe loads one with ``presets "file.tsv"``, and a
user preset overrides a built-in one of the same name.

Preset file syntax, one preset per line:

- ``NAME<TAB>v,v,...``, ``NAME: v,v,...`` or ``NAME = v,v,...``; spaces around values are
  ignored, as is one trailing comma;
- 25 or 26 values (SD1/SD2; 26 puts BASE first) or 19 or 20 (SDXL; 20 puts BASE first);
- ``#`` starts a comment, blank lines are ignored, and a ``preset_name<TAB>preset_weights``
  header line is skipped.

Every bad line is reported at once, with its line and column, as a :class:`RecipeError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from mergelang.block_weights import BASE, BlockWeights, vocabulary
from mergelang.errors import Diagnostic, DiagnosticSink, RecipeError, Span

__all__ = [
    "BUILTIN_PRESETS",
    "MAX_PRESET_FILE_SIZE",
    "PRESET_FILE_CODE",
    "PresetTable",
    "load_preset_file",
    "parse_preset_text",
    "preset_identifier",
]

PRESET_FILE_CODE = "preset-file"
"""The diagnostic code of every preset-file problem."""

MAX_PRESET_FILE_SIZE = 256 * 1024
"""The largest preset file read: the size of the largest recipe (presets sit below the
language in the package's layers, so the number is kept here; a test holds them equal)."""


_SEPARATORS = re.compile(r"[\t:=]")
_HEADER = ("preset_name", "preset_weights")


@dataclass(frozen=True)
class _Token:
    text: str
    start: int  # 0-based index in the line
    end: int  # exclusive


def _strip_token(line: str, start: int, end: int) -> _Token:
    """The token ``line[start:end]`` without surrounding whitespace (positions adjusted)."""
    while start < end and line[start].isspace():
        start += 1
    while end > start and line[end - 1].isspace():
        end -= 1
    return _Token(line[start:end], start, end)


def _span(line_no: int, token: _Token) -> Span:
    return Span(line_no, token.start + 1, line_no, max(token.end, token.start + 1) + 1)


def _split_values(line: str, start: int, end: int) -> list[_Token]:
    """Comma-separated tokens of ``line[start:end]``; a single trailing comma is dropped."""
    tokens: list[_Token] = []
    position = start
    while True:
        comma = line.find(",", position, end)
        stop = end if comma == -1 else comma
        tokens.append(_strip_token(line, position, stop))
        if comma == -1:
            break
        position = comma + 1
    if len(tokens) > 1 and tokens[-1].text == "":
        tokens.pop()
    return tokens


def _parse_value(token: _Token) -> float | str:
    """The number a token holds, or the reason it holds none."""
    if token.text == "":
        return "a value is missing here (two commas in a row?)"
    try:
        number = float(token.text)
    except ValueError:
        return f"{token.text!r} is not a number"
    if not math.isfinite(number):
        return f"{token.text!r} is not a finite number"
    return number


_SHORT_NAME = re.compile(r"\S{1,64}")


def _looks_like_a_preset(line: str, separator: re.Match[str]) -> bool:
    """Whether ``line`` already looks like a preset line, so that quoting it in a diagnostic
    reveals nothing a preset line would not: a short name and nothing after the separator, or
    two or more comma-separated values of which at least half are numbers."""
    values = _strip_token(line, separator.end(), len(line))
    if values.text == "":
        return _SHORT_NAME.fullmatch(line[: separator.start()].strip()) is not None
    tokens = [t.text for t in _split_values(line, values.start, values.end) if t.text]
    return len(tokens) >= 2 and 2 * sum(map(_is_float, tokens)) >= len(tokens)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_preset_text(text: str, path: str | None = None) -> dict[str, BlockWeights]:
    """Presets from the text of a preset file, in file order.

    Raises :class:`RecipeError` holding one diagnostic (code ``preset-file``, with line and
    column) for every bad line: unreadable line, bad number, wrong count, duplicate name.
    """
    sink = DiagnosticSink(path=path, source=text)
    presets: dict[str, BlockWeights] = {}
    first_line: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        hash_at = raw.find("#")
        line = raw if hash_at == -1 else raw[:hash_at]
        if line.strip() == "":
            continue
        if tuple(line.split()) == _HEADER:
            continue
        separator = _SEPARATORS.search(line)
        if separator is None or not _looks_like_a_preset(line, separator):
            # Nothing of such a line is echoed (message or source line): the file may be
            # one a recipe names to copy secrets into a log (``/etc/shadow``, a key file).
            whole = _strip_token(line, 0, len(line))
            sink.extend(
                [
                    Diagnostic(
                        "cannot read this line as a preset",
                        PRESET_FILE_CODE,
                        path,
                        _span(line_no, whole),
                        "write NAME<TAB>v,v,... or NAME: v,v,... (25/26 or 19/20 values)",
                    )
                ]
            )
            continue
        name = _strip_token(line, 0, separator.start())
        values_region = _strip_token(line, separator.end(), len(line))
        line_ok = True
        if name.text == "":
            sink.error(
                "a preset line needs a name before its values",
                Span.point(line_no, separator.start() + 1),
                code=PRESET_FILE_CODE,
            )
            line_ok = False
        elif any(c.isspace() for c in name.text):
            sink.error(
                f"preset name {name.text!r} contains a space",
                _span(line_no, name),
                code=PRESET_FILE_CODE,
                hint="preset names are single words such as GRAD_V or MY_PRESET",
            )
            line_ok = False
        elif name.text in first_line:
            sink.error(
                f"preset {name.text} is defined twice (first on line {first_line[name.text]})",
                _span(line_no, name),
                code=PRESET_FILE_CODE,
                hint="rename or remove one of them",
            )
            line_ok = False
        else:
            first_line[name.text] = line_no
        if values_region.text == "":
            sink.error(
                f"preset {name.text or '(unnamed)'} has no values",
                Span.point(line_no, separator.start() + 1),
                code=PRESET_FILE_CODE,
                hint="write 25 or 26 (SD1/SD2) or 19 or 20 (SDXL) comma-separated numbers",
            )
            continue
        numbers: list[float] = []
        for token in _split_values(line, values_region.start, values_region.end):
            parsed = _parse_value(token)
            if isinstance(parsed, str):
                sink.error(
                    parsed,
                    _span(line_no, token),
                    code=PRESET_FILE_CODE,
                    hint="values are numbers separated by commas",
                )
                line_ok = False
            else:
                numbers.append(parsed)
        if not line_ok:
            continue
        vocab = vocabulary()
        if not vocab.forms(len(numbers)):
            with_base = [str(f.length) for s in vocab.schemes for f in s.vectors if BASE in f.names]
            sink.error(
                f"preset {name.text} has {len(numbers)} values; a preset has "
                f"{vocab.lengths_text(unit='')}",
                _span(line_no, values_region),
                code=PRESET_FILE_CODE,
                hint=" and ".join(with_base) + " values put BASE first",
            )
            continue
        weights = BlockWeights.from_vector(numbers)
        presets[name.text] = dataclasses.replace(weights, origin=name.text)
    sink.raise_if_errors()
    return presets


def load_preset_file(path: Path) -> dict[str, BlockWeights]:
    """Presets from a user preset file (see the module docstring for the syntax).

    A missing, unreadable or non-UTF-8 file, like a bad line, raises :class:`RecipeError`
    (code ``preset-file``) naming the file. So does a folder, a FIFO or a device (reading
    one could wait forever or never end), a file under ``/proc`` or ``/sys`` and a file over
    the size of a recipe, checked before the file is opened, and a file holding control
    characters no text has (NUL...). A line that does not look like a preset line is
    reported by its line and column only: its text is never quoted.
    """
    problem = _not_a_preset_file(Path(path))
    if problem is not None:
        raise _file_error(path, problem)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"it is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        raise _file_error(path, reason) from None
    except OSError as exc:
        raise _file_error(path, exc.strerror or str(exc)) from None
    binary = _BINARY.search(text)
    if binary is not None:
        reason = (
            f"it is not a text file (control character {ord(binary.group()):#04x} "
            f"at offset {binary.start()})"
        )
        raise _file_error(path, reason)
    return parse_preset_text(text, str(path))


_BINARY = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
"""Control characters no text file holds (tab, newlines, vertical tab, form feed and
carriage return are text)."""

_SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"))
"""Kernel folders whose files are views of the system (``/proc/self/environ``), never
presets; their files also report a size of 0, which defeats the size check."""


def _not_a_preset_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a preset file, found without opening it; ``None`` when
    it may be read (a missing file is reported when it is opened)."""
    try:
        info = path.stat()
    except OSError:
        return None
    real = Path(os.path.realpath(path))
    if any(real == folder or folder in real.parents for folder in _SYSTEM_FOLDERS):
        return f"{real} is a system file under /proc or /sys, not a preset file"
    if stat.S_ISDIR(info.st_mode):
        return "this is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "this is not a regular file (a FIFO, socket or device)"
    if info.st_size > MAX_PRESET_FILE_SIZE:
        return f"the file is too large (over {MAX_PRESET_FILE_SIZE // 1024} KiB)"
    return None


def _file_error(path: Path, reason: str) -> RecipeError:
    return RecipeError(
        [Diagnostic(f"cannot read preset file: {reason}", PRESET_FILE_CODE, path=str(path))]
    )


_NOT_IN_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def preset_identifier(name: str) -> str:
    """The spelling of preset ``name`` that a recipe writes as one identifier.

    13 of MBW's presets have ``*``, ``/`` or ``-`` in their names, which a recipe would read
    as arithmetic (``SMOOTHSTEP*2`` is SMOOTHSTEP times 2). Their identifier spelling writes
    ``*`` as ``_X``, ``/`` as ``_DIV`` and any other character an identifier cannot hold as
    ``_``: ``SMOOTHSTEP_X2``, ``R_SMOOTHSTEP_DIV3``, ``REVERSE_SMOOTHSTEP``. A name that is
    already an identifier is its own spelling.
    """
    if _IDENTIFIER.fullmatch(name):
        return name
    spelled = _NOT_IN_IDENTIFIER.sub("_", name.replace("*", "_X").replace("/", "_DIV"))
    return spelled if _IDENTIFIER.fullmatch(spelled) else "_" + spelled


def _load_builtin() -> Mapping[str, BlockWeights]:
    text = resources.files(__name__).joinpath("mbw.tsv").read_text(encoding="utf-8")
    return MappingProxyType(parse_preset_text(text, "mergelang/presets/mbw.tsv"))


BUILTIN_PRESETS: Mapping[str, BlockWeights] = _load_builtin()
"""The 38 Merge Block Weighted presets (25 values each, BASE unset except ``ALL_B``'s 1, as
in SuperMerger's table), in the table's order."""


class PresetTable:
    """The presets a recipe can name: the built-ins plus any user files, later ones winning.

    Immutable: :meth:`with_file` returns a new table.
    """

    def __init__(
        self,
        presets: Mapping[str, BlockWeights] | None = None,
        *,
        files: Sequence[Path] = (),
    ) -> None:
        self._presets: Mapping[str, BlockWeights] = MappingProxyType(
            dict(BUILTIN_PRESETS if presets is None else presets)
        )
        self.files: tuple[Path, ...] = tuple(files)
        """The user preset files loaded into this table, in load order."""
        self._by_spelling: Mapping[str, str] = MappingProxyType(
            {
                spelled: name
                for name in self._presets
                if (spelled := preset_identifier(name)) != name and spelled not in self._presets
            }
        )

    def get(self, name: str) -> BlockWeights | None:
        """The preset called ``name``, or spelled ``name`` (:func:`preset_identifier`)."""
        found = self._presets.get(name)
        if found is None and name in self._by_spelling:
            found = self._presets[self._by_spelling[name]]
        return found

    def spelling(self, name: str) -> str:
        """How a recipe writes the preset called ``name``."""
        spelled = preset_identifier(name)
        return spelled if self._by_spelling.get(spelled) == name else name

    def spellings(self) -> list[str]:
        """Every preset as a recipe writes it, in :meth:`names` order."""
        return [self.spelling(name) for name in self._presets]

    def names(self) -> list[str]:
        """Every preset name: built-ins in table order, then user presets in file order."""
        return list(self._presets)

    def with_file(self, path: Path) -> PresetTable:
        """A new table with the presets of ``path`` added; they override same-named ones."""
        return self.with_presets(load_preset_file(path), file=path)

    def with_presets(
        self, presets: Mapping[str, BlockWeights], *, file: Path | None = None
    ) -> PresetTable:
        """A new table with ``presets`` added, overriding same-named ones."""
        merged = {**self._presets, **presets}
        files = self.files if file is None else (*self.files, file)
        return PresetTable(merged, files=files)

    def suggest(self, name: str) -> str | None:
        """The preset name closest to ``name`` (case-insensitive match first), or ``None``."""
        folded = {n.casefold(): n for n in self._presets}
        if name.casefold() in folded:
            return folded[name.casefold()]
        close = difflib.get_close_matches(name, list(self._presets), n=1, cutoff=0.6)
        if close:
            return close[0]
        close = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
        return folded[close[0]] if close else None

    def __contains__(self, name: object) -> bool:
        return name in self._presets

    def __len__(self) -> int:
        return len(self._presets)

    def __iter__(self) -> Iterator[str]:
        return iter(self._presets)

    def __repr__(self) -> str:
        return f"PresetTable({len(self)} presets, files={[str(f) for f in self.files]})"
