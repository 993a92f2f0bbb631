"""Checking ``save`` statements: the model, the path, the dtype and the ``with`` options.

Each save becomes a :class:`~mergelang.check.checked_recipe.SaveTarget` (one per loop
iteration, templates filled); two saves to the same file are an error, and so is a relative
path that climbs out of the output folder (``../x``; absolute paths may go anywhere).
:data:`SAVE_DTYPES` and :data:`SAVE_OPTIONS` say what ``save ... as DTYPE`` and
``save ... with KEY=VALUE`` accept, read from the table of save choices
(:mod:`mergelang.io.save_choices`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from types import MappingProxyType

from mergelang.block_weights import format_number
from mergelang.check.checked_recipe import ModelSource, SaveTarget
from mergelang.check.expressions import ExpressionChecker
from mergelang.check.scope import Scope
from mergelang.check.sink import CheckerSink
from mergelang.check.values import InvalidValue, ModelValue, describe, did_you_mean, template_text
from mergelang.errors import BIDI_CONTROLS, Span
from mergelang.io.file_formats import FILE_FORMATS, format_for_path, implied_format
from mergelang.io.save_choices import SAVE_CHOICES, listed
from mergelang.io.save_choices import SAVE_DTYPES as _SAVE_DTYPE_CODES
from mergelang.lang import ast

__all__ = ["SAVE_DTYPES", "SAVE_OPTIONS", "SaveChecker", "leaves_output_folder"]

SAVE_DTYPES: tuple[str, ...] = tuple(_SAVE_DTYPE_CODES)
"""What ``save ... as DTYPE`` accepts."""

SAVE_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType({**SAVE_CHOICES, "vae": ()})
"""``save ... with KEY=VALUE``: the keys and their allowed values (``vae`` takes a path in
quotes or a declared model's name). The first value listed is not always the default: see
:class:`SaveTarget`."""


class SaveChecker:
    """``save`` statements: each one checked, its :class:`SaveTarget` in ``saves``.

    ``expressions`` evaluates the saved model and fills the path's templates.
    """

    def __init__(self, scope: Scope, sink: CheckerSink, expressions: ExpressionChecker) -> None:
        self.scope = scope
        self.sink = sink
        self.expressions = expressions
        self.saves: list[SaveTarget] = []
        self._paths: dict[str, Span] = {}

    def save(self, stmt: ast.Save) -> None:
        value = self.expressions.eval(stmt.value, "model")
        model: ModelValue | None = None
        if isinstance(value, ModelValue):
            model = value
        elif not isinstance(value, InvalidValue):
            self.sink.error(
                f"save needs a model, but this is {describe(value)}",
                stmt.value.span,
                code="type",
            )
        path = self.expressions.render(stmt.path)
        if path is not None and _names_no_file(path):
            self.sink.error(
                f"the save path '{path}' names no file" if path else "the save path is empty",
                stmt.path.span,
                code="save-path",
                hint='give a file name: "out/mix.safetensors"',
            )
            path = None
        bidi = None if path is None else BIDI_CONTROLS.search(path)
        if bidi is not None:
            self.sink.error(
                f"the save path holds the bidirectional control U+{ord(bidi.group()):04X}, "
                "which makes the name show in another order than it has",
                stmt.path.span,
                code="save-path",
                hint="remove it from the path",
            )
            path = None
        if path is not None and leaves_output_folder(path):
            self._outside_folder(path, stmt.path.span)
            path = None
        dtype: str | None = None
        if stmt.dtype is not None:
            dtype = stmt.dtype.name
            if dtype not in SAVE_DTYPES:
                hint = did_you_mean(dtype, SAVE_DTYPES) or ""
                self.sink.error(
                    f"unknown dtype '{dtype}'",
                    stmt.dtype.span,
                    code="unknown-dtype",
                    hint=(hint + " " if hint else "") + "choose " + listed(SAVE_DTYPES),
                )
        options = self._save_options(stmt, path)
        if model is None or path is None or options is None:
            return
        chosen, vae = options
        if format_for_path(path) is None and not any(o.key == "format" for o in stmt.options):
            self._no_extension(path, chosen["format"], stmt.path.span)
        self._add(
            SaveTarget(
                model.expr,
                path,
                dtype,
                ema=chosen.get("ema", "drop"),
                schedule=chosen.get("schedule", "keep"),
                position_ids=chosen.get("position_ids", "keep"),
                format=chosen["format"],
                vae=vae,
                prediction=chosen.get("prediction", "auto"),
                bindings=tuple(
                    (v, template_text(self.scope.loop[v])) for v in self.scope.loop_names
                ),
                span=stmt.span,
            ),
            stmt.path.span,
        )

    def _outside_folder(self, path: str, span: Span) -> None:
        """A relative save path that climbs out of the output folder: once per path literal
        (a loop would report it at every iteration)."""
        code = "save-path-outside"
        if any(d.code == code and d.span == span for d in self.sink.items):
            return
        self.sink.error(
            f"the save path '{path}' leads out of the output folder",
            span,
            code=code,
            hint="relative paths stay inside the recipe's folder (or --out-dir); "
            "write an absolute path to save elsewhere",
        )

    def _no_extension(self, path: str, written: str, span: Span) -> None:
        """A save path whose extension names no model format (``x.safetensor``, ``noext``):
        written as ``written`` all the same, with a warning once per path literal."""
        code = "save-extension"
        if any(d.code == code and d.span == span for d in self.sink.items):
            return
        suffix = posixpath.splitext(path.replace("\\", "/"))[1]
        suffixes = [s for f in FILE_FORMATS.values() for s in f.suffixes]
        near = did_you_mean(suffix, suffixes) if suffix else None
        what = f"the extension '{suffix}'" if suffix else "no extension"
        self.sink.warning(
            f"the save path '{path}' has {what}, which names no model format; it is written "
            f"as {written}",
            span,
            code=code,
            hint=near or f"end the path with {FILE_FORMATS[written].suffixes[0]}",
        )

    def _add(self, target: SaveTarget, span: Span) -> None:
        key = posixpath.normpath(target.path.replace("\\", "/"))
        previous = self._paths.get(key)
        if previous is not None:
            where = (
                f"line {previous.line}"
                if previous.line != span.line
                else "an earlier iteration of this loop"
            )
            self.sink.error(
                f"'{target.path}' is already saved by {where}",
                span,
                code="duplicate-save",
                hint="each output needs its own path; in a loop, use {name} templates",
            )
            return
        self._paths[key] = span
        self.saves.append(target)

    def _save_options(
        self, stmt: ast.Save, path: str | None
    ) -> tuple[dict[str, str], ModelSource | None] | None:
        """The ``with`` options by key (``format`` always set), and the VAE to bake in."""
        chosen: dict[str, str] = {}
        vae: ModelSource | None = None
        seen: dict[str, ast.SaveOption] = {}
        ok = True
        for option in stmt.options:
            key = option.key
            if key not in SAVE_OPTIONS:
                hint = did_you_mean(key, list(SAVE_OPTIONS))
                self.sink.error(
                    f"unknown save option '{key}'",
                    option.key_span,
                    code="unknown-save-option",
                    hint=(hint + " " if hint else "") + "options: " + ", ".join(SAVE_OPTIONS),
                )
                ok = False
                continue
            if key in seen:
                self.sink.error(
                    f"save option '{key}' is given twice",
                    option.key_span,
                    code="duplicate-save-option",
                )
                ok = False
                continue
            seen[key] = option
            if key == "vae":
                vae = self._vae(option)
                ok = ok and vae is not None
                continue
            allowed = SAVE_OPTIONS[key]
            value = option.value
            if not isinstance(value, ast.Name) or value.name not in allowed:
                shown = value.name if isinstance(value, ast.Name) else _source_text(value)
                self.sink.error(
                    f"save option {key} is {' or '.join(allowed)}, not {shown}",
                    value.span,
                    code="bad-save-option",
                    hint=f"write {key}={allowed[0]}",
                )
                ok = False
                continue
            chosen[key] = value.name
        if path is not None:
            implied = implied_format(path)
            given = chosen.get("format")
            if given is not None and given != implied and format_for_path(path) is not None:
                self.sink.error(
                    f"format={given} does not match the file extension of '{path}'",
                    seen["format"].span,
                    code="format-conflict",
                    hint="change the extension or drop the format option",
                )
                ok = False
            chosen.setdefault("format", implied)
        return (chosen, vae) if ok else None

    def _vae(self, option: ast.SaveOption) -> ModelSource | None:
        value = option.value
        if isinstance(value, ast.String):
            path = self.expressions.render(value)
            if path is None:
                return None
            return ModelSource(path, "path", path, span=value.span)
        if isinstance(value, ast.Name):
            binding = self.scope.lookup(value.name)
            if binding is not None and binding.kind == "model":
                self.scope.mark_used(binding)
                return self.expressions.models.get(value.name)
            hint = did_you_mean(
                value.name, [n for n, b in self.scope.globals.items() if b.kind == "model"]
            )
            self.sink.error(
                f"vae= takes a path in quotes or a declared model, and '{value.name}' is not a "
                "declared model",
                value.span,
                code="bad-save-option",
                hint=hint or 'write vae="path/to/vae.safetensors"',
            )
            return None
        self.sink.error(
            "vae= takes a path in quotes or a declared model",
            value.span,
            code="bad-save-option",
        )
        return None


def leaves_output_folder(path: str) -> bool:
    """Whether a save path is relative and climbs above the folder it is relative to
    (``../x``, ``out/../../x``). Backslashes count as separators, so a recipe means the same
    on every system; an absolute path (also ``~/...``) never counts."""
    if os.path.isabs(os.path.expanduser(path)):
        return False
    normal = posixpath.normpath(path.replace("\\", "/"))
    return normal == ".." or normal.startswith("../")


def _names_no_file(path: str) -> bool:
    """Whether ``path`` is empty or a folder (``out/``, ``.``, ``..``) rather than a file."""
    last = path.replace("\\", "/").rsplit("/", 1)[-1]
    return last.strip() in ("", ".", "..")


def _source_text(node: ast.SaveValue) -> str:
    if isinstance(node, ast.String):
        return f'"{node.value}"'
    if isinstance(node, ast.Number):
        return format_number(node.value)
    return node.name
