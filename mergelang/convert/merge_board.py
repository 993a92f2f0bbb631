"""Merge Board recipes to native mergelang statements.

The recipe is lowered as the checker lowers it (:mod:`mergelang.lang.merge_board`), and the
lowering is printed: each Merge Board merge line ``OUT = A + B[ + C], M[, BASE][, fp16][,
safetensors]`` becomes a named step (``weighted_sum`` for two models, ``add_difference`` for
three) and a ``save`` to the same file Merge Board writes (``OUT.ckpt`` or
``OUT.safetensors``, ``as fp16`` or ``as fp32``). Then the names are made native: an output
that is no plain name (``SD-WD Fix``) gets a step name derived from it, ``__On__`` becomes
the name of the n-th line's step, ``__NAME__`` operands become ``model name = $NAME``
declarations and literal checkpoint names ``model name = "SD1.5"`` declarations (a quoted
path that is not a file is looked up by name, as a literal is). Native statements already
in the recipe are kept, with ``__On__`` in them replaced.

The converted recipe makes the same files with the same tensors as the original. A problem
the lowering finds (a bad ``__On__``, a line with four models...) is raised at its line and
column.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from mergelang.convert.recipe_writer import RecipeWriter
from mergelang.errors import Diagnostic, RecipeError, Span, source_lines
from mergelang.lang import ast
from mergelang.lang.formatter import INDENT, format_statement, format_string
from mergelang.lang.merge_board import LoweredLine, MergeBoardLowering, is_plain_name
from mergelang.lang.parser import parse

__all__ = ["convert_merge_board"]

_N = TypeVar("_N", bound=ast.Node)

_OPERAND_HINT = "__On__ is the output of the n-th Merge Board merge line (1-based)"


def _defined_names(statements: tuple[ast.Statement, ...], into: set[str]) -> None:
    for stmt in statements:
        if isinstance(stmt, ast.ModelDecl | ast.Assign):
            into.add(stmt.name)
        elif isinstance(stmt, ast.For):
            into.add(stmt.var)
            _defined_names(stmt.body, into)
        elif isinstance(stmt, ast.MergeBoard) and is_plain_name(stmt.output):
            into.add(stmt.output)


class _Converter:
    def __init__(self, recipe: ast.Recipe, path: str | None) -> None:
        self.recipe = recipe
        self.path = path
        self.lines = source_lines(recipe.source or "")
        self.lowering = MergeBoardLowering(recipe)
        taken: set[str] = set()
        _defined_names(recipe.statements, taken)
        self.writer = RecipeWriter(sorted(taken))
        self.step_of: dict[int, str] = {}  # a line's number -> its step's name
        self.steps: dict[str, str] = {}  # an output -> its step's name
        self.variables: dict[str, str] = {}  # variable name -> model name
        self.literals: dict[str, str] = {}  # checkpoint name -> model name
        self.var_docs: dict[str, str | None] = {}  # variable -> its comment
        trailing = {c.span.line: c.text for c in recipe.comments if c.trailing}
        self.trailing = trailing
        self.full = sorted(
            (c for c in recipe.comments if not c.trailing), key=lambda c: c.span.line
        )
        self.next_comment = 0
        self.last_line = 0

    # -- problems

    def _error(
        self, message: str, span: Span, *, code: str = "merge-board", hint: str | None = None
    ) -> RecipeError:
        length = span.end_column - span.column if span.end_line == span.line else 1
        where = Span(span.line, span.column, span.line, span.column + max(length, 1))
        shown = self.lines[span.line - 1] if 0 < span.line <= len(self.lines) else None
        return RecipeError([Diagnostic(message, code, self.path, where, hint, "error", shown)])

    def _problem(self, problem: ast.Invalid) -> RecipeError:
        """The error for a problem the lowering found outside a line's models."""
        message = problem.message or "this refers to a Merge Board line that is wrong"
        if problem.code == "output-ref":
            return self._error(message, problem.span)
        return self._error(message, problem.span, code=problem.code, hint=problem.hint)

    def _operand_problem(self, problem: ast.Invalid, line: LoweredLine) -> RecipeError:
        """The error for a bad ``__On__`` among a line's models."""
        ref = problem.replaced
        assert isinstance(ref, ast.OutputRef)
        where = "its own line" if ref.index == line.number else "a later line"
        return self._error(
            f"{ref.text} refers to {where}; __On__ names the output of an earlier Merge Board line",
            problem.span,
            hint=_OPERAND_HINT,
        )

    # -- names

    def _collect_models(self) -> None:
        for stmt in self.recipe.statements:
            if isinstance(stmt, ast.VarDoc):
                self.var_docs.setdefault(stmt.name, self.trailing.pop(stmt.span.line, None))
        for line in self.lowering.lines:
            output = line.source.output
            step = output if is_plain_name(output) else self.writer.new_name(output)
            self.step_of[line.number] = step
            self.steps.setdefault(output, step)
            if line.call is None:
                assert line.problem is not None
                raise self._problem(line.problem)
            for operand in line.operands:
                if isinstance(operand, ast.Invalid) and operand.message is not None:
                    raise self._operand_problem(operand, line)
        # Variables documented by a line, then the others, in order of first use.
        for name in self.var_docs:
            self._variable_model(name)
        for line in self.lowering.lines:
            for operand in line.operands:
                if isinstance(operand, ast.Variable):
                    self._variable_model(operand.name)
                elif isinstance(operand, ast.ModelLiteral) and operand.text not in self.literals:
                    self.literals[operand.text] = self.writer.new_name(operand.text)

    def _variable_model(self, name: str) -> str:
        found = self.variables.get(name)
        if found is None:
            found = self.writer.new_name(name.lower())
            self.variables[name] = found
        return found

    # -- native names in the lowered statements

    def _operand(self, operand: ast.Expr) -> ast.Expr:
        if isinstance(operand, ast.Variable):
            return ast.Name(self.variables[operand.name], span=operand.span)
        if isinstance(operand, ast.ModelLiteral):
            return ast.Name(self.literals[operand.text], span=operand.span)
        return self._native(operand)

    def _native(self, node: _N) -> _N:
        """``node`` with every lowered ``__On__`` named by its step's native name; a problem
        the lowering left in it is raised."""
        if isinstance(node, ast.Invalid):
            if node.message is None and isinstance(node.replaced, ast.OutputRef):
                name = self.step_of[node.replaced.index]
                return ast.Name(name, span=node.span)  # type: ignore[return-value]
            raise self._problem(node)
        if isinstance(node, ast.Name) and node.written is not None:
            return ast.Name(self.steps[node.name], span=node.span)  # type: ignore[return-value]
        changes: dict[str, object] = {}
        for field in dataclasses.fields(node):
            value = getattr(node, field.name)
            if isinstance(value, ast.Node):
                changes[field.name] = self._native(value)
            elif isinstance(value, tuple) and any(isinstance(v, ast.Node) for v in value):
                changes[field.name] = tuple(
                    self._native(v) if isinstance(v, ast.Node) else v for v in value
                )
        return dataclasses.replace(node, **changes) if changes else node  # type: ignore[arg-type]

    # -- output

    def _comments_before(self, line: int | None, depth: int) -> None:
        while self.next_comment < len(self.full):
            comment = self.full[self.next_comment]
            if line is not None and comment.span.line >= line:
                return
            self._gap(comment.span.line)
            self.writer.raw(INDENT * depth + comment.text)
            self.next_comment += 1

    def _gap(self, line: int) -> None:
        """Keep one blank line where the source had one or more."""
        if self.last_line and line - self.last_line > 1:
            self.writer.blank()
        self.last_line = line

    def convert(self) -> str:
        self._collect_models()
        writer = self.writer
        if self.variables:
            sets = " ".join(f"--set {name}=PATH" for name in self.variables)
            writer.comment(f"run with: {sets}")
        for name, model in self.variables.items():
            writer.statement(f"model {model} = ${name}", self.var_docs.get(name))
        for text, model in self.literals.items():
            writer.statement(f"model {model} = {format_string(text)}")
        writer.blank()
        self._statements(self.recipe.statements, 0)
        self._comments_before(None, 0)
        for text in self.trailing.values():
            writer.raw(text)
        return writer.text()

    def _statements(self, statements: tuple[ast.Statement, ...], depth: int) -> None:
        """Write ``statements``: the recipe's own at depth 0, lowered ones in a loop body."""
        for stmt in statements:
            self._comments_before(stmt.span.line, depth)
            if isinstance(stmt, ast.VarDoc):
                self._gap(stmt.span.line)
                continue
            trailing = self.trailing.pop(stmt.span.line, None)
            if depth == 0:
                self._gap(stmt.span.line)
            self.last_line = stmt.span.end_line
            if isinstance(stmt, ast.MergeBoard):
                self._merge_board_line(self.lowering.line(stmt), trailing)
                continue
            (lowered,) = self.lowering.statement(stmt) if depth == 0 else (stmt,)
            native = self._native(lowered)
            text = format_statement(native)
            self.writer.raw(INDENT * depth + text + (f"  {trailing}" if trailing else ""))
            if isinstance(native, ast.For):
                self._statements(native.body, depth + 1)

    def _merge_board_line(self, line: LoweredLine, trailing: str | None) -> None:
        if line.problem is not None:
            raise self._problem(line.problem)
        call = line.call
        assert call is not None
        operands = tuple(self._operand(op) for op in line.operands)
        keywords = tuple(self._native(kw) for kw in call.keywords)
        step = self.step_of[line.number]
        merge = ast.Assign(step, dataclasses.replace(call, args=(*operands, *keywords)))
        save = dataclasses.replace(line.save, value=ast.Name(step))
        if not is_plain_name(line.source.output):
            self.writer.comment(f"Merge Board output: {line.source.output}")
        self.writer.statement(format_statement(merge), trailing)
        self.writer.statement(format_statement(save))


def convert_merge_board(text: str, path: str | None = None) -> str:
    """The native form of a Merge Board recipe (canonical text); raises ``RecipeError`` with
    the line and column of the first problem."""
    return _Converter(parse(text, path=path), path).convert()
