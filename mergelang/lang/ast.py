"""The recipe syntax tree: frozen dataclasses with source spans.

Every node carries a :class:`~mergelang.errors.Span` that takes no part in equality, so two
trees are equal when they mean the same thing, however they were spaced or commented. The
formatter relies on that: ``parse(format_recipe(r)) == r`` for every recipe ``r``.

Expressions are untyped here; the checker (:mod:`mergelang.check`) decides which values are
models, weights or strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Literal, TypeAlias

from mergelang.errors import Span

NO_SPAN = Span(0, 0, 0, 0)
"""The span of a node built in code rather than parsed from text."""


@dataclass(frozen=True)
class Node:
    """Base of every syntax node."""

    span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


# ---- expressions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Number(Node):
    """A numeric literal. A minus sign written before a literal is folded into it."""

    value: float


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


@dataclass(frozen=True)
class Placeholder(Node):
    """A ``{name}`` template placeholder inside a string literal."""

    name: str


@dataclass(frozen=True)
class String(Node):
    """A string literal. ``value`` is the template text: ``{name}`` is a placeholder filled
    from a loop variable, ``{{`` and ``}}`` stand for literal braces."""

    value: str
    placeholders: tuple[Placeholder, ...] = field(default=(), compare=False, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        """The placeholder names, in order of appearance (repeats kept)."""
        return tuple(m.group(1) for m in _PLACEHOLDER.finditer(self.value) if m.group(1))

    def render(self, values: Mapping[str, str] | None = None) -> str:
        """The text with placeholders replaced from ``values`` and ``{{``/``}}`` unescaped.

        A placeholder missing from ``values`` is left as written (the checker reports it).
        """
        bound = values or {}

        def substitute(match: re.Match[str]) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = match.group(1)
            if name is not None and name in bound:
                return bound[name]
            return token

        return _PLACEHOLDER.sub(substitute, self.value)


def template_problems(value: str) -> list[tuple[int, str]]:
    """Offsets (into ``value``) of braces that neither form a placeholder nor are doubled."""
    return [
        (m.start(), m.group(0)) for m in _PLACEHOLDER.finditer(value) if m.group(0) in ("{", "}")
    ]


@dataclass(frozen=True)
class Name(Node):
    """A bare identifier: a model, an intermediate, a preset, a block, a loop variable...

    ``written`` is set on a name a front-end pass put in place of other text (``__O2__``,
    lowered to the name of the second Merge Board line's output): messages show it as
    written.
    """

    name: str
    written: str | None = field(default=None, compare=False, repr=False, kw_only=True)


VariableStyle: TypeAlias = Literal["dollar", "dunder"]


@dataclass(frozen=True)
class Variable(Node):
    """A command-line variable: ``$NAME`` (style ``dollar``) or ``__NAME__`` (``dunder``).

    ``--set NAME=VALUE`` binds both spellings.
    """

    name: str
    style: VariableStyle = "dollar"

    @property
    def text(self) -> str:
        return f"${self.name}" if self.style == "dollar" else f"__{self.name}__"


@dataclass(frozen=True)
class OutputRef(Node):
    """``__On__``: the output of the n-th Merge Board merge line (1-based)."""

    index: int

    @property
    def text(self) -> str:
        return f"__O{self.index}__"


@dataclass(frozen=True)
class ModelLiteral(Node):
    """A checkpoint named literally in a Merge Board line (``SD1.5``, ``wd-1-3.ckpt``)."""

    text: str


@dataclass(frozen=True)
class Keyword(Node):
    """``name=value`` in a call."""

    name: str
    value: Expr
    name_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Call(Node):
    """``method(arg, ..., key=value, ...)``; ``args`` keeps positional and keyword arguments
    in the order written.

    ``operand_label`` is set on a call a front-end pass made of other text: messages name a
    model argument so (``a Merge Board operand``) rather than as the method's parameter.
    """

    func: str
    args: tuple[Expr | Keyword, ...] = ()
    func_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)
    operand_label: str | None = field(default=None, compare=False, repr=False, kw_only=True)

    @property
    def positional(self) -> tuple[Expr, ...]:
        return tuple(a for a in self.args if not isinstance(a, Keyword))

    @property
    def keywords(self) -> tuple[Keyword, ...]:
        return tuple(a for a in self.args if isinstance(a, Keyword))


BinaryOperator: TypeAlias = Literal["+", "-", "*", "/"]


@dataclass(frozen=True)
class BinaryOp(Node):
    op: BinaryOperator
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Negate(Node):
    """Unary minus of a non-literal (``-GRAD_V``); ``-0.5`` is a :class:`Number`."""

    operand: Expr


@dataclass(frozen=True)
class Vector(Node):
    """``[e, e, ...]``: a block weight vector, or a list a ``for`` loop iterates."""

    items: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class BlockRange(Node):
    """``IN00..IN05``: blocks from ``start`` to ``end`` inclusive, in IN..M..OUT order."""

    start: str
    end: str
    start_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)
    end_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


BlockItem: TypeAlias = Name | BlockRange
"""One item of a key pattern's block set: a block, group, ``BASE``, loop variable or range."""


@dataclass(frozen=True)
class KeyPattern(Node):
    """An elemental weight map key: ``[not] "PATTERN" [[not] in BLOCKS]``.

    ``pattern`` matches a key name by substring, or as a glob when it holds ``*``, ``?`` or
    ``[``; ``negated`` selects the keys it does not match. ``blocks`` (``None`` when no
    ``in`` clause is written) restricts the entry to keys of those blocks, or with
    ``exclude`` to keys of every other block.
    """

    pattern: String
    negated: bool = False
    blocks: tuple[BlockItem, ...] | None = None
    exclude: bool = False


MapKey: TypeAlias = Name | BlockRange | KeyPattern


@dataclass(frozen=True)
class MapEntry(Node):
    """``KEY: value`` in a weight map. ``key`` is a block, group, ``BASE``, ``default`` or a
    loop variable (a :class:`Name`), a :class:`BlockRange`, or a :class:`KeyPattern` (an
    elemental entry)."""

    key: MapKey
    value: Expr


@dataclass(frozen=True)
class WeightMap(Node):
    """``{KEY: value, ...}``: block weights by name."""

    entries: tuple[MapEntry, ...] = ()


@dataclass(frozen=True)
class Invalid(Node):
    """What a front-end pass put where it found a problem (:mod:`mergelang.lang.merge_board`:
    an ``__O9__`` beyond the last Merge Board line, a line with four models...). The parser
    never makes one.

    As an expression it has no value; as a statement it does nothing. Checking it checks
    ``parts`` first (the model expressions the problem leaves standing, so their own problems
    are found too; with ``operand_label``, one that is no model is reported, named so), then
    reports ``message`` with ``code`` and ``hint`` at its span; a ``message`` of ``None``
    reports nothing (the problem is reported where it lies: the line an ``__On__`` refers
    to). ``replaced`` is the node it stands for, for tools that show the recipe rather than
    check it.
    """

    message: str | None = None
    code: str = "syntax"
    hint: str | None = None
    parts: tuple[Expr, ...] = ()
    operand_label: str | None = None
    replaced: Node | None = field(default=None, compare=False, repr=False)


Expr: TypeAlias = (
    Number
    | String
    | Name
    | Variable
    | OutputRef
    | ModelLiteral
    | Call
    | BinaryOp
    | Negate
    | Vector
    | WeightMap
    | Invalid
)


@dataclass(frozen=True)
class NumberRange(Node):
    """``0.1..0.9 step 0.2``: numbers from ``start`` to ``end`` inclusive, ``step`` apart
    (``None`` when not written: a step of 1). Only a ``for`` loop iterates one."""

    start: Number
    end: Number
    step: Number | None = None


Iterable: TypeAlias = BlockRange | Name | Vector | NumberRange
"""What a ``for`` loop iterates: a block range, a group (``IN``, ``M``, ``OUT``), a list, or
a numeric range."""

MergeBoardOperand: TypeAlias = Variable | OutputRef | ModelLiteral


# ---- statements -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDecl(Node):
    """``model NAME = "path"`` / ``= $VAR`` / ``= __VAR__``: an input checkpoint;
    ``sha256 "HEX"`` after the source pins the file's content (``pin``)."""

    name: str
    source: String | Variable
    name_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)
    pin: String | None = field(default=None, kw_only=True)


AssignOrigin: TypeAlias = Literal["assign", "merge_board"]


@dataclass(frozen=True)
class Assign(Node):
    """``NAME = expr``; ``cache NAME = expr`` when ``cached``.

    ``origin`` is ``merge_board`` for the merge a Merge Board line is lowered to
    (:mod:`mergelang.lang.merge_board`): its name is the line's output, whatever its text
    (``SD-WD Fix``, ``to``), which names the step and the file.
    """

    name: str
    value: Expr
    cached: bool = False
    name_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)
    origin: AssignOrigin = field(default="assign", compare=False, repr=False, kw_only=True)


SaveValue: TypeAlias = Name | String | Number


@dataclass(frozen=True)
class SaveOption(Node):
    """``key=value`` after ``with`` in a save statement."""

    key: str
    value: SaveValue
    key_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Save(Node):
    """``save expr to "path" [as DTYPE] [with key=value, ...]``."""

    value: Expr
    path: String
    dtype: Name | None = None
    options: tuple[SaveOption, ...] = ()


@dataclass(frozen=True)
class For(Node):
    """``for VAR in ITERABLE:`` followed by an indented body."""

    var: str
    iterable: Iterable
    body: tuple[Statement, ...]
    var_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class PresetsImport(Node):
    """``presets "file.tsv"``: a user preset file, relative to the recipe."""

    path: String


@dataclass(frozen=True)
class ConventionChoice(Node):
    """``convention NAME``: which key->block convention the merge uses."""

    name: Name


@dataclass(frozen=True)
class MergeBoard(Node):
    """A Merge Board line: ``OUTPUT = A + B [+ C], M[, BASE][, fp16][, safetensors]``.

    Two operands make a weighted sum, three an add difference. ``output`` is the text left of
    ``=`` with surrounding spaces removed; ``dtype`` and ``format`` hold the flags as written
    (``fp16``/``bf16``/``fp32``, ``safetensors``/``ckpt``).
    """

    output: str
    operands: tuple[MergeBoardOperand, ...]
    multiplier: Expr
    base: Expr | None = None
    dtype: Name | None = None
    format: Name | None = None
    output_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class VarDoc(Node):
    """A line holding only ``__NAME__``: documents a variable (Merge Board convention)."""

    name: str


Statement: TypeAlias = (
    ModelDecl
    | Assign
    | Save
    | For
    | PresetsImport
    | ConventionChoice
    | MergeBoard
    | VarDoc
    | Invalid
)


@dataclass(frozen=True)
class Comment(Node):
    """A ``#`` comment. ``text`` starts with ``#``; ``trailing`` comments follow code on
    their line, the others stand on a line of their own. Like the span, ``trailing`` is
    layout: comments compare by text (and, in a recipe, by order)."""

    text: str
    trailing: bool = field(default=False, compare=False)

    @property
    def line(self) -> int:
        return self.span.line


@dataclass(frozen=True)
class Recipe(Node):
    """A parsed recipe: its statements and its comments (kept apart, in source order, so the
    formatter can put them back). ``path`` and ``source`` say where it came from."""

    statements: tuple[Statement, ...] = ()
    comments: tuple[Comment, ...] = ()
    path: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False, repr=False)


# ---- traversal and a readable dump ------------------------------------------------------


def iter_statements(statements: tuple[Statement, ...]) -> Iterator[Statement]:
    """Every statement, depth first, loop bodies included (after their ``for``)."""
    for stmt in statements:
        yield stmt
        if isinstance(stmt, For):
            yield from iter_statements(stmt.body)


def dump(node: Node, *, spans: bool = True) -> str:
    """A readable, indented tree of ``node`` (used by golden tests and for debugging).

    Each node is written as its class name and its scalar fields, with ``@line:col`` when
    ``spans`` is true; child nodes are indented below it.
    """
    lines: list[str] = []
    _dump(node, 0, "", lines, spans)
    return "\n".join(lines) + "\n"


def _dump(node: Node, depth: int, label: str, out: list[str], spans: bool) -> None:
    scalars: list[str] = []
    children: list[tuple[str, Node]] = []
    for f in fields(node):
        if not f.compare and f.name != "trailing":
            continue
        value = getattr(node, f.name)
        if isinstance(value, Node):
            children.append((f.name, value))
        elif isinstance(value, tuple) and value and all(isinstance(v, Node) for v in value):
            children.extend((f"{f.name}[{i}]", v) for i, v in enumerate(value))
        elif f.default is not MISSING and value == f.default:
            continue
        else:
            scalars.append(f"{f.name}={value!r}")
    where = ""
    if spans and node.span != NO_SPAN:
        where = f" @{node.span.line}:{node.span.column}"
    prefix = f"{label}: " if label else ""
    out.append("  " * depth + f"{prefix}{type(node).__name__}({', '.join(scalars)}){where}")
    for child_label, child in children:
        _dump(child, depth + 1, child_label, out, spans)
