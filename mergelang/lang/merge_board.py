"""Merge Board lines lowered to native statements.

A Merge Board line ``OUT = A + B[ + C], M[, BASE][, DTYPE][, FORMAT]`` means two native
statements::

    OUT = weighted_sum(A, B, alpha=M, base=BASE)    # three models: add_difference(A, B, C, ...)
    save OUT to "OUT.ckpt" as fp32                  # OUT.safetensors with the flag safetensors

:func:`lower_merge_board` rewrites a parsed recipe so, and the checker and the planner only
ever see native statements. The pieces:

- the operands: ``__NAME__`` and ``$NAME`` stay variables; a word that names a model or an
  intermediate defined at the top level of the recipe is that name; any other word
  (``SD1.5``, ``wd-1-3.ckpt``) is a checkpoint named literally (:class:`~ast.ModelLiteral`);
- the output names the step and the file whatever its text (``SD-WD Fix``, ``to``): the
  assignment's ``origin`` is ``merge_board``, and :func:`output_path` is the file it saves;
- ``__On__``, anywhere in the recipe, becomes the name of the n-th line's output (a
  :class:`~ast.Name` that messages show as ``__On__``).

Problems only Merge Board lines can have are found here, and left in the lowered recipe as
:class:`~ast.Invalid` nodes where they stand: the checker reports them in place, among all
the others, with the message, code and span they have always had. They are an ``__On__``
beyond the last line, at its own line or at a later one; a line merging other than 2 or 3
models; an output made twice, or that makes no file name; a line inside a ``for`` loop.
Every lowered node has the span of the Merge Board text it comes from.
:mod:`mergelang.convert.merge_board` prints the same lowering as native text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NamedTuple

from mergelang.io.file_formats import FILE_FORMATS
from mergelang.io.save_choices import SAVE_DTYPES
from mergelang.lang import ast
from mergelang.lang.syntax_errors import RESERVED_WORDS

__all__ = [
    "DTYPE_FLAGS",
    "FORMAT_FLAGS",
    "LoweredLine",
    "MergeBoardLowering",
    "is_plain_name",
    "lower_merge_board",
    "output_path",
]

DTYPE_FLAGS: tuple[str, ...] = tuple(SAVE_DTYPES)
"""Merge Board flags that pick the saved precision (Merge Board itself knows ``fp16``)."""

FORMAT_FLAGS: tuple[str, ...] = tuple(FILE_FORMATS)
"""Merge Board flags that pick the file format (without one, Merge Board writes ``.ckpt``)."""

DEFAULT_DTYPE: str | None = None
"""The precision a Merge Board line saves in without a flag: none, so every tensor keeps its
input precision, as Merge Board does (it halves only with ``fp16``; fp16 inputs give fp16
files)."""

METHODS = {2: "weighted_sum", 3: "add_difference"}
"""The method a Merge Board line merges with, by its number of models."""

OPERAND_LABEL = "a Merge Board operand"
"""How messages name a line's model that is no model (``w = 0.5`` then ``m = w + b, 0.5``)."""

_UNSAFE = re.compile(r'[\\|:?"<>*]')
_BEYOND_HINT = "__On__ is the output of the n-th Merge Board merge line (1-based)"
_EARLIER_HINT = "__On__ can only use earlier Merge Board lines"


def output_path(output: str, *, safetensors: bool) -> str:
    """The file a Merge Board line writes: ``\\ | : ? " < > *`` become ``-``, ``/`` makes
    sub-folders, and the extension is ``.safetensors`` or ``.ckpt``."""
    parts = [p.strip() for p in _UNSAFE.sub("-", output).split("/")]
    name = "/".join(p for p in parts if p and p != ".")
    return name + FILE_FORMATS["safetensors" if safetensors else "ckpt"].suffix


def is_plain_name(output: str) -> bool:
    """Whether a Merge Board output is also a name the recipe can write (an identifier that
    is no reserved word); any other output only names its step and its file."""
    return output.isidentifier() and output not in RESERVED_WORDS


def _usable(path: str) -> bool:
    parts = path.split("/")
    return ".." not in parts and bool(parts[0]) and not path.startswith(".")


def _template(text: str) -> str:
    """``text`` as a string literal's template value: braces doubled, so none is a
    placeholder."""
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class LoweredLine:
    """One Merge Board line as native statements.

    ``operands`` are the lowered models (variables, names, literal checkpoints, or
    :class:`~ast.Invalid` for a bad ``__On__``); ``call`` is the merge,
    ``method(A, B, ..., alpha=M[, base=BASE])`` (``None`` when the number of models is wrong:
    there is no method to call). ``assign`` is ``OUTPUT = call``, its value the
    :class:`~ast.Invalid` ``problem`` instead when the line as a whole is wrong (the models'
    count, an output made twice or that makes no file name); ``save`` writes the output as
    Merge Board does. ``name_taken`` is set when a model or intermediate defined above has
    the output's name: the line then defines nothing (the checker says why).
    """

    source: ast.MergeBoard
    number: int
    operands: tuple[ast.Expr, ...]
    call: ast.Call | None
    assign: ast.Assign
    save: ast.Save
    problem: ast.Invalid | None = None
    name_taken: bool = False

    @property
    def statements(self) -> tuple[ast.Statement, ...]:
        """What the line lowers to in the recipe: the merge, and its save when the merge can
        be made and named."""
        if self.problem is not None or self.name_taken:
            return (self.assign,)
        return (self.assign, self.save)


class _Place(NamedTuple):
    """Where an expression stands: the index of its top-level statement, and the number of
    the Merge Board line it is part of (``None`` outside one)."""

    position: int
    line: int | None


class MergeBoardLowering:
    """The lowering of one recipe's Merge Board lines (see the module docstring).

    Only top-level lines are numbered and lowered (:attr:`lines`); one inside a ``for`` loop
    lowers to an :class:`~ast.Invalid` statement saying it belongs at the top level.
    """

    def __init__(self, recipe: ast.Recipe) -> None:
        self.recipe = recipe
        top = recipe.statements
        self._position = {id(stmt): index for index, stmt in enumerate(top)}
        sources = [stmt for stmt in top if isinstance(stmt, ast.MergeBoard)]
        self._sources = tuple(sources)
        self._number = {id(stmt): number for number, stmt in enumerate(sources, start=1)}
        self._names: set[str] = set()
        """Names defined at the top level; an operand word that is one of them is a name."""
        self._earlier: dict[int, ast.MergeBoard] = {}
        """id(line) -> the earlier line that makes the same output."""
        self._name_taken: set[int] = set()
        """id() of the lines whose output names a model or intermediate defined above."""
        first: dict[str, ast.MergeBoard] = {}
        native: set[str] = set()
        for stmt in top:
            if isinstance(stmt, ast.ModelDecl | ast.Assign):
                self._names.add(stmt.name)
                native.add(stmt.name)
            elif isinstance(stmt, ast.MergeBoard):
                if stmt.output.isidentifier():
                    self._names.add(stmt.output)
                earlier = first.setdefault(stmt.output, stmt)
                if earlier is not stmt:
                    self._earlier[id(stmt)] = earlier
                elif is_plain_name(stmt.output) and stmt.output in native:
                    self._name_taken.add(id(stmt))
        self.lines: tuple[LoweredLine, ...] = tuple(self._line(stmt) for stmt in sources)
        """Every top-level Merge Board line, lowered, in order (``lines[n - 1]`` is
        ``__On__``'s)."""
        self._lowered = {id(line.source): line for line in self.lines}

    # -- the public entry points

    def line(self, stmt: ast.MergeBoard) -> LoweredLine:
        """The lowering of a top-level Merge Board line of the recipe."""
        return self._lowered[id(stmt)]

    def statement(self, stmt: ast.Statement) -> tuple[ast.Statement, ...]:
        """What a top-level statement of the recipe lowers to (itself when it holds no Merge
        Board line or ``__On__``)."""
        if isinstance(stmt, ast.MergeBoard):
            return self.line(stmt).statements
        return (self._native(stmt, _Place(self._position[id(stmt)], None)),)

    def lowered(self) -> ast.Recipe:
        """The recipe with every statement lowered (the recipe itself when there was nothing
        to lower)."""
        old = self.recipe.statements
        statements = tuple(s for stmt in old for s in self.statement(stmt))
        if len(statements) == len(old) and all(map(_same, statements, old)):
            return self.recipe
        return replace(self.recipe, statements=statements)

    # -- lines

    def _line(self, stmt: ast.MergeBoard) -> LoweredLine:
        number = self._number[id(stmt)]
        place = _Place(self._position[id(stmt)], number)
        operands = tuple(self._operand(op, place) for op in stmt.operands)
        output = stmt.output
        safetensors = stmt.format is not None and stmt.format.name == "safetensors"
        path = output_path(output, safetensors=safetensors)
        method = METHODS.get(len(operands))
        call = None if method is None else self._call(stmt, method, operands, place)
        problem = self._problem(stmt, operands, call, path)
        value: ast.Expr
        if problem is not None:
            value = problem
        else:
            assert call is not None  # without a call, the number of models is the problem
            value = call
        assign = ast.Assign(
            output,
            value,
            span=stmt.span,
            name_span=stmt.output_span,
            origin="merge_board",
        )
        save = ast.Save(
            ast.Name(output, span=stmt.output_span),
            ast.String(_template(path), span=stmt.output_span),
            stmt.dtype
            or (None if DEFAULT_DTYPE is None else ast.Name(DEFAULT_DTYPE, span=stmt.output_span)),
            span=stmt.span,
        )
        taken = id(stmt) in self._name_taken
        return LoweredLine(stmt, number, operands, call, assign, save, problem, taken)

    def _problem(
        self,
        stmt: ast.MergeBoard,
        operands: tuple[ast.Expr, ...],
        call: ast.Call | None,
        path: str,
    ) -> ast.Invalid | None:
        """What is wrong with the line as a whole, left standing over what can still be
        checked (the models, or the whole merge), in the order the checks have always run."""
        if call is None:
            count = len(operands)
            return ast.Invalid(
                f"a Merge Board line merges 2 models (weighted sum) or 3 (add difference), "
                f"not {count}",
                "merge-board",
                parts=operands,
                operand_label=OPERAND_LABEL,
                span=stmt.operands[min(count, 4) - 1].span,
            )
        earlier = self._earlier.get(id(stmt))
        if earlier is not None:
            return ast.Invalid(
                f"the output '{stmt.output}' is already made on line {earlier.span.line}",
                "duplicate-name",
                parts=(call,),
                span=stmt.output_span,
            )
        if not _usable(path):
            return ast.Invalid(
                f"the output name '{stmt.output}' makes no usable file name",
                "merge-board",
                "use letters, digits, spaces, - and _; / makes sub-folders",
                parts=(call,),
                span=stmt.output_span,
            )
        return None

    def _call(
        self, stmt: ast.MergeBoard, method: str, operands: tuple[ast.Expr, ...], place: _Place
    ) -> ast.Call:
        args: list[ast.Expr | ast.Keyword] = list(operands)
        for name, node in (("alpha", stmt.multiplier), ("base", stmt.base)):
            if node is not None:
                args.append(
                    ast.Keyword(name, self._expr(node, place), span=node.span, name_span=node.span)
                )
        return ast.Call(
            method,
            tuple(args),
            span=stmt.span,
            func_span=stmt.span,
            operand_label=OPERAND_LABEL,
        )

    def _operand(self, operand: ast.MergeBoardOperand, place: _Place) -> ast.Expr:
        if isinstance(operand, ast.OutputRef):
            return self._output_ref(operand, place)
        if (
            isinstance(operand, ast.ModelLiteral)
            and operand.text.isidentifier()
            and operand.text in self._names
        ):
            return ast.Name(operand.text, span=operand.span)
        return operand

    def _output_ref(self, ref: ast.OutputRef, place: _Place) -> ast.Expr:
        total = len(self._sources)
        n = ref.index
        if n > total:
            return ast.Invalid(
                f"{ref.text} refers to Merge Board line {n}, but the recipe has {total}",
                "output-ref",
                _BEYOND_HINT,
                span=ref.span,
                replaced=ref,
            )
        target = self._sources[n - 1]
        if n == place.line:
            return ast.Invalid(
                f"{ref.text} refers to this line's own output",
                "output-ref",
                _EARLIER_HINT,
                span=ref.span,
                replaced=ref,
            )
        if self._position[id(target)] >= place.position:
            return ast.Invalid(
                f"{ref.text} refers to a later line ({target.span.line})",
                "output-ref",
                _EARLIER_HINT,
                span=ref.span,
                replaced=ref,
            )
        if id(target) in self._earlier or id(target) in self._name_taken:
            # That line defines nothing, and its own error says why.
            return ast.Invalid(span=ref.span, replaced=ref)
        return ast.Name(target.output, span=ref.span, written=ref.text)

    # -- native statements and expressions

    def _native(self, stmt: ast.Statement, place: _Place) -> ast.Statement:
        if isinstance(stmt, ast.MergeBoard):  # inside a for loop: top-level ones are lines
            return ast.Invalid(
                "Merge Board lines belong at the top level, not inside a for loop",
                "not-in-loop",
                "move it above the for loop",
                span=stmt.span,
                replaced=stmt,
            )
        if isinstance(stmt, ast.Assign):
            operands = _board_sum(stmt.value)
            if operands is not None and not stmt.cached and stmt.origin != "merge_board":
                return ast.Invalid(
                    "a Merge Board line needs its multiplier after a comma",
                    "merge-board",
                    f"write {stmt.name} = {' + '.join(operands)}, 0.5 (a weighted sum, "
                    "0.5 of the second model); a plain + would add the models' weights",
                    span=stmt.value.span,
                    replaced=stmt,
                )
            value = self._expr(stmt.value, place)
            return stmt if value is stmt.value else replace(stmt, value=value)
        if isinstance(stmt, ast.Save):
            value = self._expr(stmt.value, place)
            return stmt if value is stmt.value else replace(stmt, value=value)
        if isinstance(stmt, ast.For):
            iterable = stmt.iterable
            if isinstance(iterable, ast.Vector):
                iterable = self._vector(iterable, place)
            body = tuple(self._native(s, place) for s in stmt.body)
            if iterable is stmt.iterable and all(map(_same, body, stmt.body)):
                return stmt
            return replace(stmt, iterable=iterable, body=body)
        return stmt

    def _expr(self, expr: ast.Expr, place: _Place) -> ast.Expr:
        """``expr`` with every ``__On__`` in it lowered (itself when it holds none)."""
        if isinstance(expr, ast.OutputRef):
            return self._output_ref(expr, place)
        if isinstance(expr, ast.Call):
            args = tuple(
                self._keyword(arg, place)
                if isinstance(arg, ast.Keyword)
                else self._expr(arg, place)
                for arg in expr.args
            )
            return expr if all(map(_same, args, expr.args)) else replace(expr, args=args)
        if isinstance(expr, ast.BinaryOp):
            left, right = self._expr(expr.left, place), self._expr(expr.right, place)
            if left is expr.left and right is expr.right:
                return expr
            return replace(expr, left=left, right=right)
        if isinstance(expr, ast.Negate):
            operand = self._expr(expr.operand, place)
            return expr if operand is expr.operand else replace(expr, operand=operand)
        if isinstance(expr, ast.Vector):
            return self._vector(expr, place)
        if isinstance(expr, ast.WeightMap):
            entries = tuple(self._entry(entry, place) for entry in expr.entries)
            return (
                expr if all(map(_same, entries, expr.entries)) else replace(expr, entries=entries)
            )
        return expr

    def _vector(self, vector: ast.Vector, place: _Place) -> ast.Vector:
        items = tuple(self._expr(item, place) for item in vector.items)
        return vector if all(map(_same, items, vector.items)) else replace(vector, items=items)

    def _keyword(self, keyword: ast.Keyword, place: _Place) -> ast.Keyword:
        value = self._expr(keyword.value, place)
        return keyword if value is keyword.value else replace(keyword, value=value)

    def _entry(self, entry: ast.MapEntry, place: _Place) -> ast.MapEntry:
        value = self._expr(entry.value, place)
        return entry if value is entry.value else replace(entry, value=value)


def _board_sum(expr: ast.Expr) -> tuple[str, ...] | None:
    """The operands of ``__A__ + __B__`` (two or three Merge Board operands added, no
    multiplier: a Merge Board line missing its ``, 0.5``), else ``None``."""
    leaves: list[str] = []
    pending: list[ast.Expr] = [expr]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.BinaryOp) and node.op == "+":
            pending += [node.right, node.left]
        elif isinstance(node, ast.Variable) and node.style == "dunder":
            leaves.append(f"__{node.name}__")
        elif isinstance(node, ast.OutputRef):
            leaves.append(node.text)
        else:
            return None
    return tuple(leaves) if 2 <= len(leaves) <= 3 else None


def _same(new: object, old: object) -> bool:
    return new is old


def lower_merge_board(recipe: ast.Recipe) -> ast.Recipe:
    """``recipe`` with its Merge Board lines and ``__On__`` references lowered to native
    statements (see the module docstring); a recipe without any is returned as it is."""
    return MergeBoardLowering(recipe).lowered()
