from __future__ import annotations

from mergelang.errors import (
    CheckpointError,
    Diagnostic,
    DiagnosticSink,
    RecipeError,
    Span,
    UsageError,
    format_diagnostic,
)


def test_diagnostic_renders_location_source_and_caret() -> None:
    diag = Diagnostic(
        "undefined name 'wd'",
        "undefined-name",
        path="recipes/mix.merge",
        span=Span(3, 27, 3, 29),
        hint="did you mean 'wd13'?",
        source_line="mix = weighted_sum(sd15, wd, alpha=0.5)",
    )
    assert format_diagnostic(diag).splitlines() == [
        "recipes/mix.merge:3:27: error: undefined name 'wd'",
        "   3 | mix = weighted_sum(sd15, wd, alpha=0.5)",
        "     |                           ^^",
        "  hint: did you mean 'wd13'?",
    ]


def test_checkpoint_error_names_file_and_key() -> None:
    exc = CheckpointError("a.safetensors", "shape mismatch", key="model.x", code="shape")
    assert exc.exit_code == 1
    assert str(exc) == "a.safetensors: error: shape mismatch (key model.x)"
    assert exc.diagnostics[0].path == "a.safetensors"


def test_usage_error_exits_two_and_has_no_location() -> None:
    exc = UsageError("--set needs NAME=VALUE")
    assert exc.exit_code == 2
    assert str(exc) == "error: --set needs NAME=VALUE"


def test_sink_collects_sorted_and_raises_once() -> None:
    source = "a = b\nc = d\n"
    sink = DiagnosticSink(path="r.merge", source=source)
    sink.error("second", Span(2, 5, 2, 6), code="x")
    sink.warning("unused", Span(1, 1, 1, 2), code="unused")
    sink.error("first", Span(1, 5, 1, 6), code="x")
    try:
        sink.raise_if_errors()
    except RecipeError as exc:
        assert [d.message for d in exc.diagnostics] == ["unused", "first", "second"]
        assert [d.message for d in exc.errors] == ["first", "second"]
        assert exc.diagnostics[2].source_line == "c = d"
    else:
        raise AssertionError("expected RecipeError")


def test_sink_without_errors_does_not_raise() -> None:
    sink = DiagnosticSink()
    sink.warning("w", None, code="w")
    sink.raise_if_errors()
    assert not sink.has_errors
