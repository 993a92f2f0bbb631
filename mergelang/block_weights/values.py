"""Plain numbers as block weights: validation, canonical text, the error type."""

from __future__ import annotations

import math

__all__ = ["WeightsError", "check_value", "format_number"]


class WeightsError(ValueError):
    """A block weight value that is malformed or cannot be used.

    ``index`` is the 0-based position of the vector element or map entry at fault, or ``None``
    when the value as a whole is wrong; the recipe checker turns it into a line and column.
    """

    def __init__(self, message: str, *, hint: str | None = None, index: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.index = index


def format_number(value: float) -> str:
    """The canonical text of a weight: integral values without a fraction (``1``, ``-2``,
    ``-0``), others as Python's shortest round-tripping repr (``0.5``, ``1e-05``).

    ``float(format_number(x)) == x`` always holds, signed zero included.
    """
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def check_value(value: object, index: int | None, where: str) -> float:
    """A weight as a float, or a WeightsError: numbers only (no bools), finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WeightsError(f"a block weight is a number, not {value!r} ({where})", index=index)
    number = float(value)
    if not math.isfinite(number):
        raise WeightsError(
            f"a block weight must be a finite number, not {number!r} ({where})", index=index
        )
    return number
