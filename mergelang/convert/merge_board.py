"""Merge Board recipes to native mergelang statements.

Each Merge Board merge line ``OUT = A + B[ + C], M[, BASE][, fp16][, safetensors]`` becomes
a named step (``weighted_sum`` for two models, ``add_difference`` for three) and a ``save``
to the same file Merge Board writes (``OUT.ckpt`` or ``OUT.safetensors``, ``as fp16`` or
``as fp32``). ``__On__`` becomes the name of the n-th line's step; ``__NAME__`` variables
become ``model name = $NAME`` declarations and literal checkpoint names ``model name =
"SD1.5"`` declarations (a quoted path that is not a file is looked up by name, as a literal
is). Native statements already in the recipe are kept, with ``__On__`` in them replaced.

The converted recipe makes the same files with the same tensors as the original.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from mergelang.check.checked_recipe import merge_board_output_path
from mergelang.convert.recipe_writer import RecipeWriter, convert_error
from mergelang.errors import Span
from mergelang.lang import ast
from mergelang.lang.formatter import INDENT, format_expr, format_statement, format_string
from mergelang.lang.parser import parse
from mergelang.lang.syntax_errors import RESERVED_WORDS

__all__ = ["convert_merge_board"]

_N = TypeVar("_N", bound=ast.Node)


def _defined_names(statements: tuple[ast.Statement, ...], into: set[str]) -> None:
    for stmt in statements:
        if isinstance(stmt, ast.ModelDecl | ast.Assign):
            into.add(stmt.name)
        elif isinstance(stmt, ast.For):
            into.add(stmt.var)
            _defined_names(stmt.body, into)
        elif isinstance(stmt, ast.MergeBoard) and _nameable(stmt.output):
            into.add(stmt.output)


def _nameable(output: str) -> bool:
    return output.isidentifier() and output not in RESERVED_WORDS


class _Converter:
    def __init__(self, recipe: ast.Recipe, path: str | None, source: str) -> None:
        self.recipe = recipe
        self.path = path
        self.source = source
        taken: set[str] = set()
        _defined_names(recipe.statements, taken)
        self.writer = RecipeWriter(sorted(taken))
        self.lines = [s for s in recipe.statements if isinstance(s, ast.MergeBoard)]
        self.step_names: list[str] = []
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

    def _error(self, message: str, span: Span, hint: str | None = None) -> None:
        raise convert_error(
            message,
            self.path,
            span.line,
            span.column,
            span.end_column - span.column if span.end_line == span.line else 1,
            source=self.source,
            code="merge-board",
            hint=hint,
        )

    # -- names

    def _collect_models(self) -> None:
        for stmt in self.recipe.statements:
            if isinstance(stmt, ast.VarDoc):
                self.var_docs.setdefault(stmt.name, self.trailing.pop(stmt.span.line, None))
        for index, line in enumerate(self.lines, start=1):
            step = line.output if _nameable(line.output) else self.writer.new_name(line.output)
            self.step_names.append(step)
            if len(line.operands) not in (2, 3):
                count = len(line.operands)
                self._error(
                    f"a Merge Board line merges 2 models (weighted sum) or 3 (add "
                    f"difference), not {count}",
                    line.operands[min(count, 4) - 1].span,
                )
            for operand in line.operands:
                self._check_operand(operand, index)
        # Variables documented by a line, then the others, in order of first use.
        for name in self.var_docs:
            self._variable_model(name)
        for line in self.lines:
            for operand in line.operands:
                if isinstance(operand, ast.Variable):
                    self._variable_model(operand.name)
                elif (
                    isinstance(operand, ast.ModelLiteral)
                    and not self._is_step(operand.text)
                    and operand.text not in self.literals
                ):
                    self.literals[operand.text] = self.writer.new_name(operand.text)

    def _is_step(self, text: str) -> bool:
        return text in self.step_names or text in self._native_names()

    def _native_names(self) -> set[str]:
        names: set[str] = set()
        stmts = tuple(s for s in self.recipe.statements if not isinstance(s, ast.MergeBoard))
        _defined_names(stmts, names)
        return names

    def _check_operand(self, operand: ast.MergeBoardOperand, index: int) -> None:
        if isinstance(operand, ast.OutputRef) and operand.index >= index:
            where = "its own line" if operand.index == index else "a later line"
            self._error(
                f"{operand.text} refers to {where}; __On__ names the output of an earlier "
                f"Merge Board line",
                operand.span,
                hint="__On__ is the output of the n-th Merge Board merge line (1-based)",
            )
        if isinstance(operand, ast.OutputRef) and operand.index < 1:
            self._error(f"{operand.text} names no line", operand.span)

    def _variable_model(self, name: str) -> str:
        found = self.variables.get(name)
        if found is None:
            found = self.writer.new_name(name.lower())
            self.variables[name] = found
        return found

    # -- expressions

    def _operand(self, operand: ast.MergeBoardOperand) -> str:
        if isinstance(operand, ast.OutputRef):
            return self.step_names[operand.index - 1]
        if isinstance(operand, ast.Variable):
            return self.variables[operand.name]
        if isinstance(operand, ast.ModelLiteral):
            return self.literals.get(operand.text, operand.text)
        return format_expr(self._rewrite(operand))

    def _rewrite(self, node: _N) -> _N:
        """``node`` with every ``__On__`` replaced by the name of that line's step."""
        if isinstance(node, ast.OutputRef):
            if not 1 <= node.index <= len(self.step_names):
                self._error(
                    f"{node.text} refers to Merge Board line {node.index}, but the recipe has "
                    f"{len(self.step_names)}",
                    node.span,
                )
            return ast.Name(self.step_names[node.index - 1], span=node.span)  # type: ignore[return-value]
        changes: dict[str, object] = {}
        for field in dataclasses.fields(node):
            value = getattr(node, field.name)
            if isinstance(value, ast.Node):
                changes[field.name] = self._rewrite(value)
            elif isinstance(value, tuple) and any(isinstance(v, ast.Node) for v in value):
                changes[field.name] = tuple(
                    self._rewrite(v) if isinstance(v, ast.Node) else v for v in value
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
                self._merge_board_line(stmt, trailing)
                continue
            text = format_statement(self._rewrite(stmt))
            self.writer.raw(INDENT * depth + text + (f"  {trailing}" if trailing else ""))
            if isinstance(stmt, ast.For):
                self._statements(self._rewrite(stmt).body, depth + 1)

    def _merge_board_line(self, line: ast.MergeBoard, trailing: str | None) -> None:
        index = self.lines.index(line)
        step = self.step_names[index]
        models = ", ".join(self._operand(op) for op in line.operands)
        method = "weighted_sum" if len(line.operands) == 2 else "add_difference"
        args = f"{models}, alpha={format_expr(self._rewrite(line.multiplier))}"
        if line.base is not None:
            args += f", base={format_expr(self._rewrite(line.base))}"
        safetensors = line.format is not None and line.format.name == "safetensors"
        target = merge_board_output_path(line.output, safetensors=safetensors)
        dtype = line.dtype.name if line.dtype is not None else "fp32"
        if not _nameable(line.output):
            self.writer.comment(f"Merge Board output: {line.output}")
        self.writer.statement(f"{step} = {method}({args})", trailing)
        self.writer.statement(f"save {step} to {format_string(target)} as {dtype}")


def convert_merge_board(text: str, path: str | None = None) -> str:
    """The native form of a Merge Board recipe (canonical text); raises ``RecipeError`` with
    the line and column of the first problem."""
    recipe = parse(text, path=path)
    return _Converter(recipe, path, text).convert()
