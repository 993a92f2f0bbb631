"""What the plan can tell about an output once its keys are laid out: limits of its format
that a reader of the file may enforce although mergelang need not."""

from __future__ import annotations

from collections.abc import Iterable

from mergelang.check.checked_recipe import CheckedRecipe
from mergelang.errors import Diagnostic, source_lines
from mergelang.plan.plan import FileOutput, OutputPlan

__all__ = ["GGUF_NAME_BYTES", "output_warnings"]

GGUF_NAME_BYTES = 63
"""The longest tensor name ggml's C library reads: its ``GGML_MAX_NAME`` is 64 bytes with the
terminating NUL. The ``gguf`` package, and ComfyUI-GGUF's loader built on it, read longer
names, so a file with them is a warning (it loads in ComfyUI, llama.cpp's tools refuse it),
not an error."""


def output_warnings(checked: CheckedRecipe, outputs: Iterable[OutputPlan]) -> list[Diagnostic]:
    """A warning for each GGUF output with tensor names longer than ggml reads, at its save."""
    lines = source_lines(checked.recipe.source or "")
    found = []
    for output in outputs:
        if not isinstance(output, FileOutput) or output.options.format != "gguf":
            continue
        long = [k.key for k in output.layout if len(k.key.encode("utf-8")) > GGUF_NAME_BYTES]
        if not long:
            continue
        longest = max(long, key=lambda name: len(name.encode("utf-8")))
        span = output.save.span
        found.append(
            Diagnostic(
                f"{len(long)} of the {len(output.layout)} tensor names of {output.path.name} "
                f"are longer than the {GGUF_NAME_BYTES} bytes ggml reads (the longest, "
                f"{longest!r}, is {len(longest.encode('utf-8'))}): ComfyUI-GGUF loads the "
                "file, ggml's own tools (llama.cpp) refuse it",
                "gguf-long-names",
                checked.path,
                span,
                "save the diffusion model alone (layout=bare), whose names are shorter",
                source_line=lines[span.line - 1] if 0 < span.line <= len(lines) else None,
                severity="warning",
            )
        )
    return found
