"""The canonical text of a recipe (``mergelang fmt``).

Rules, chosen so that a recipe has exactly one formatted text:

- one statement per line; a ``for`` body indented by 4 spaces per level;
- one space around ``=`` and around the binary operators ``+ - * /``; no space after a unary
  minus; ``, `` after every comma; ``key=value`` without spaces in calls and ``with`` options;
  ``KEY: value`` in weight maps; ranges as ``IN00..IN05``; an elemental entry as
  ``[not] "PATTERN" [[not] in BLOCKS]``, one block item bare and several as ``[A, B]``;
- parentheses only where precedence needs them (``(a + b) * 0.5``, ``a - (b - c)``);
- numbers in their shortest form: integral values without a fraction (``1``, ``0``, ``-2``),
  others as the shortest text that reads back as the same float (``0.5``, ``1e-05``);
- strings in double quotes; ``"`` is written ``\\"`` and a backslash is doubled only where it
  would otherwise start an escape (before ``"``, another backslash, or at the end);
- every call, list and map on one line, however long (no wrapping, so no diff noise from
  re-wrapping when one value changes);
- Merge Board lines stay Merge Board lines: ``OUTPUT = A + B, M[, BASE][, DTYPE][, FORMAT]``,
  the flags in that order;
- comments are kept: full-line comments on their own line, indented like the statement they
  precede (or like the end of the loop body they close); trailing comments after two spaces;
  comments inside a bracketed expression that spanned lines move above the statement;
- at most one blank line between statements, none after a ``for`` line, none at the start,
  and a single newline at the end.

``format_recipe(parse(text))`` is idempotent, and parsing its output gives a recipe equal to
the one formatted (spans aside).
"""

from __future__ import annotations

from mergelang.block_weights import format_number
from mergelang.lang import ast
from mergelang.lang.glued_names import glued_text
from mergelang.lang.parser import parse
from mergelang.presets import BUILTIN_PRESETS, preset_identifier

__all__ = [
    "format_expr",
    "format_iterable",
    "format_recipe",
    "format_statement",
    "format_string",
    "format_text",
]

INDENT = "    "

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_UNARY = 3
_ATOM = 4


def format_text(text: str, path: str | None = None) -> str:
    """Parse ``text`` and return its canonical form (raises RecipeError on bad syntax)."""
    return format_recipe(parse(text, path=path))


def format_string(value: str) -> str:
    """A string literal for ``value``: quotes escaped, backslashes doubled only if needed."""
    out = ['"']
    for index, char in enumerate(value):
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            following = value[index + 1] if index + 1 < len(value) else ""
            out.append("\\\\" if following in ("", "\\", '"') else "\\")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _precedence(expr: ast.Expr) -> int:
    if isinstance(expr, ast.BinaryOp):
        return _PRECEDENCE[expr.op]
    if isinstance(expr, ast.Negate):
        return _UNARY
    if isinstance(expr, ast.Number) and (expr.value < 0 or format_number(expr.value) == "-0"):
        return _UNARY
    return _ATOM


def format_expr(expr: ast.Expr) -> str:
    """The canonical text of an expression."""
    if isinstance(expr, ast.Number):
        return format_number(expr.value)
    if isinstance(expr, ast.String):
        return format_string(expr.value)
    if isinstance(expr, ast.Name):
        return expr.name
    if isinstance(expr, ast.Variable | ast.OutputRef | ast.ModelLiteral):
        return expr.text
    if isinstance(expr, ast.Call):
        args = ", ".join(
            f"{a.name}={format_expr(a.value)}" if isinstance(a, ast.Keyword) else format_expr(a)
            for a in expr.args
        )
        return f"{expr.func}({args})"
    if isinstance(expr, ast.BinaryOp):
        glued = glued_text(expr)
        if glued is not None and glued in BUILTIN_PRESETS:
            # a bare MBW preset name such as SMOOTHSTEP*2: its identifier spelling, never
            # spaced out into arithmetic
            return preset_identifier(glued)
        mine = _PRECEDENCE[expr.op]
        left = format_expr(expr.left)
        if _precedence(expr.left) < mine:
            left = f"({left})"
        right = format_expr(expr.right)
        if _precedence(expr.right) <= mine:
            right = f"({right})"
        return f"{left} {expr.op} {right}"
    if isinstance(expr, ast.Negate):
        inner = format_expr(expr.operand)
        if _precedence(expr.operand) < _UNARY or isinstance(expr.operand, ast.Number):
            inner = f"({inner})"
        return f"-{inner}"
    if isinstance(expr, ast.Vector):
        return "[" + ", ".join(format_expr(item) for item in expr.items) + "]"
    if isinstance(expr, ast.Invalid):
        raise ValueError(f"no text for a problem found in the recipe: {expr.message}")
    entries = ", ".join(f"{_map_key(e.key)}: {format_expr(e.value)}" for e in expr.entries)
    return "{" + entries + "}"


def _map_key(key: ast.MapKey) -> str:
    if isinstance(key, ast.BlockRange):
        return f"{key.start}..{key.end}"
    if isinstance(key, ast.KeyPattern):
        return _key_pattern(key)
    return key.name


def _key_pattern(key: ast.KeyPattern) -> str:
    """``[not] "PATTERN" [[not] in BLOCKS]``; one block item bare, several in brackets."""
    text = ("not " if key.negated else "") + format_string(key.pattern.value)
    if key.blocks is None:
        return text
    items = [_map_key(item) for item in key.blocks]
    blocks = items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
    return f"{text} {'not in' if key.exclude else 'in'} {blocks}"


def format_iterable(iterable: ast.Iterable) -> str:
    """The canonical text of what a ``for`` loop iterates."""
    if isinstance(iterable, ast.BlockRange):
        return _map_key(iterable)
    if isinstance(iterable, ast.NumberRange):
        text = f"{format_expr(iterable.start)}..{format_expr(iterable.end)}"
        if iterable.step is not None:
            text += f" step {format_expr(iterable.step)}"
        return text
    return format_expr(iterable)


def _save_value(value: ast.SaveValue) -> str:
    return format_expr(value)


def format_statement(stmt: ast.Statement) -> str:
    """The canonical text of one statement; for a ``for``, its header line only."""
    if isinstance(stmt, ast.ModelDecl):
        text = f"model {stmt.name} = {format_expr(stmt.source)}"
        if stmt.pin is not None:
            text += f" sha256 {format_expr(stmt.pin)}"
        return text
    if isinstance(stmt, ast.Assign):
        prefix = "cache " if stmt.cached else ""
        return f"{prefix}{stmt.name} = {format_expr(stmt.value)}"
    if isinstance(stmt, ast.Save):
        text = f"save {format_expr(stmt.value)} to {format_expr(stmt.path)}"
        if stmt.dtype is not None:
            text += f" as {stmt.dtype.name}"
        if stmt.options:
            text += " with " + ", ".join(f"{o.key}={_save_value(o.value)}" for o in stmt.options)
        return text
    if isinstance(stmt, ast.For):
        return f"for {stmt.var} in {format_iterable(stmt.iterable)}:"
    if isinstance(stmt, ast.PresetsImport):
        return f"presets {format_expr(stmt.path)}"
    if isinstance(stmt, ast.ConventionChoice):
        return f"convention {stmt.name.name}"
    if isinstance(stmt, ast.MergeBoard):
        parts = [format_expr(stmt.multiplier)]
        if stmt.base is not None:
            parts.append(format_expr(stmt.base))
        if stmt.dtype is not None:
            parts.append(stmt.dtype.name)
        if stmt.format is not None:
            parts.append(stmt.format.name)
        operands = " + ".join(op.text for op in stmt.operands)
        return f"{stmt.output} = {operands}, {', '.join(parts)}"
    if isinstance(stmt, ast.Invalid):
        raise ValueError(f"no text for a problem found in the recipe: {stmt.message}")
    return f"__{stmt.name}__"


class _Writer:
    """Lays statements and comments out line by line (see the module docstring)."""

    def __init__(self, recipe: ast.Recipe) -> None:
        self.full = sorted(
            (c for c in recipe.comments if not c.trailing),
            key=lambda c: (c.span.line, c.span.column),
        )
        self.trailing: dict[int, list[ast.Comment]] = {}
        for comment in recipe.comments:
            if comment.trailing:
                self.trailing.setdefault(comment.span.line, []).append(comment)
        self.next_full = 0
        self.lines: list[str] = []
        self.last_line: int | None = None
        self.after_header = False

    def write(self, statements: tuple[ast.Statement, ...]) -> str:
        self._block(statements, 0, None, None)
        self._comments_until(None, 0)
        for line_comments in self.trailing.values():  # comments that belong to no statement
            for comment in line_comments:
                self._emit(comment.text, 0, comment.span.line, comment.span.line)
        return "".join(line + "\n" for line in self.lines)

    def _emit(self, text: str, depth: int, first: int, last: int) -> None:
        blank = (
            self.last_line is not None
            and not self.after_header
            and first > 0
            and first - self.last_line > 1
            and bool(self.lines)
        )
        if blank:
            self.lines.append("")
        self.lines.append(INDENT * depth + text)
        self.last_line = last if last > 0 else self.last_line
        self.after_header = False

    def _comments_until(self, line: int | None, depth: int, *, column: int = 0) -> None:
        """Emit full-line comments before source ``line`` (all, if ``None``) whose column is
        beyond ``column``."""
        while self.next_full < len(self.full):
            comment = self.full[self.next_full]
            if line is not None and comment.span.line >= line:
                return
            if comment.span.column <= column:
                return
            self._emit(comment.text, depth, comment.span.line, comment.span.line)
            self.next_full += 1

    def _block(
        self,
        statements: tuple[ast.Statement, ...],
        depth: int,
        header: ast.For | None,
        limit: int | None,
    ) -> None:
        """Write ``statements`` at ``depth``. ``limit`` is the source line of the statement
        that follows this block (``None``: the end of the recipe)."""
        for index, stmt in enumerate(statements):
            span = stmt.span
            last_inner = _header_end(stmt)
            self._comments_until(span.line, depth)
            text = format_statement(stmt)
            inside = self._comments_inside(span.line, last_inner)
            if inside:
                # The statement spanned lines with comments among them; it is written on one
                # line, so they all go above it, in their order.
                for comment in inside:
                    self._emit(comment.text, depth, span.line, span.line)
            else:
                for comment in self.trailing.pop(span.line, []) if span.line else []:
                    text += "  " + comment.text
            self._emit(text, depth, span.line, last_inner)
            if isinstance(stmt, ast.For):
                following = (
                    statements[index + 1].span.line if index + 1 < len(statements) else limit
                )
                self.after_header = True
                self._block(stmt.body, depth + 1, stmt, following)
        if header is not None:
            # Comments after the last body statement that are indented deeper than the
            # ``for`` close the body; the first one that is not belongs outside.
            self._comments_until(limit, depth, column=header.span.column)

    def _comments_inside(self, first: int, last: int) -> list[ast.Comment]:
        """Every comment on the continuation lines of a statement spanning ``first`` to
        ``last`` (with the first line's trailing comment, if there are any), in order."""
        if last <= first:
            return []
        found: list[ast.Comment] = []
        while self.next_full < len(self.full) and self.full[self.next_full].span.line <= last:
            found.append(self.full[self.next_full])
            self.next_full += 1
        for line in range(first + 1, last + 1):
            found.extend(self.trailing.pop(line, []))
        if not found:
            return []
        found.extend(self.trailing.pop(first, []))
        return sorted(found, key=lambda c: (c.span.line, c.span.column))


def _header_end(stmt: ast.Statement) -> int:
    """The last source line of a statement, or of a ``for`` statement's header line(s)."""
    if isinstance(stmt, ast.For):
        return max(stmt.iterable.span.end_line, stmt.span.line)
    return stmt.span.end_line


def format_recipe(recipe: ast.Recipe) -> str:
    """The canonical text of ``recipe`` (see the module docstring for the rules)."""
    return _Writer(recipe).write(recipe.statements)
