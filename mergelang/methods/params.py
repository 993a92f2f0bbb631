"""A merge method's parameters: :class:`Param`, and the ``Annotated`` metadata a kernel's
signature states them with.

A kernel's typed signature is its method's parameter list (see
:mod:`mergelang.methods.signature`). The type says the kind: ``Tensor`` a model, ``Weights``
block weights, ``float`` a number, ``int`` an int, ``str`` a string. What a type cannot say
comes as ``typing.Annotated`` metadata::

    alpha: Annotated[Weights, Doc("B's share per block"), Range(0.0, 1.0), BaseDefault(0.0),
                     BaseNumber("B's share for BASE")] = 0.5

Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final, Literal, TypeAlias

from mergelang.block_weights import BlockWeights

__all__ = [
    "PARAM_KINDS",
    "REQUIRED",
    "BaseDefault",
    "BaseNumber",
    "Choices",
    "Doc",
    "Param",
    "ParamKind",
    "Range",
    "RegistrationError",
    "Weights",
]

ParamKind = Literal["model", "weights", "number", "int", "string"]
PARAM_KINDS: Final[tuple[str, ...]] = ("model", "weights", "number", "int", "string")


class RegistrationError(ValueError):
    """A method definition that cannot be registered (a name taken twice, bad parameters)."""


class _Required:
    """The type of :data:`REQUIRED`."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a parameter that has none: the recipe must give it."""


@dataclass(frozen=True)
class Param:
    """One parameter of a merge method.

    ``kind``: ``model`` (a checkpoint), ``weights`` (block weights: scalar, vector, map,
    preset), ``number``, ``int`` or ``string``. ``minimum``/``maximum`` bound numbers and
    every block of weights (inclusive, unless ``open_minimum``/``open_maximum`` exclude the
    bound itself; ``None`` = unbounded). ``variadic`` (models only): the parameter takes one
    or more models. ``base_of`` (numbers only): the parameter is the BASE weight of the named
    weights parameter, overriding whatever BASE that value sets; it is not passed to the
    kernel. ``base_default`` (weights only): the BASE used when neither the value nor the
    ``base_of`` parameter gives one; ``None`` makes a missing BASE an error.
    """

    name: str
    kind: ParamKind
    default: object = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    variadic: bool = False
    base_of: str | None = None
    base_default: float | None = None
    doc: str = ""
    open_minimum: bool = False
    open_maximum: bool = False
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise RegistrationError(f"parameter name {self.name!r} is not an identifier")
        if self.kind not in PARAM_KINDS:
            raise RegistrationError(
                f"parameter {self.name}: kind {self.kind!r} is not one of {', '.join(PARAM_KINDS)}"
            )
        if self.variadic and self.kind != "model":
            raise RegistrationError(f"parameter {self.name}: only model parameters are variadic")
        if self.base_of is not None and self.kind != "number":
            raise RegistrationError(f"parameter {self.name}: base_of is for number parameters")
        if self.base_default is not None and self.kind != "weights":
            raise RegistrationError(
                f"parameter {self.name}: base_default is for weights parameters"
            )
        if self.kind == "model" and not self.required:
            raise RegistrationError(f"parameter {self.name}: model parameters have no default")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise RegistrationError(f"parameter {self.name}: minimum is above maximum")
        if (self.open_minimum and self.minimum is None) or (
            self.open_maximum and self.maximum is None
        ):
            raise RegistrationError(f"parameter {self.name}: an open bound needs a value")
        if self.choices is not None:
            if self.kind != "string" or not self.choices:
                raise RegistrationError(
                    f"parameter {self.name}: choices are a non-empty set of strings for a "
                    "string parameter"
                )
            if isinstance(self.default, str) and self.default not in self.choices:
                raise RegistrationError(
                    f"parameter {self.name}: the default {self.default!r} is not one of its choices"
                )

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def range_error(self, value: float) -> str | None:
        """Why ``value`` is out of this parameter's range, or ``None`` if it is in range."""
        if self.open_minimum and self.minimum is not None and value <= self.minimum:
            return f"{self.name} is more than {float(self.minimum)!r}, not {value!r}"
        if self.open_maximum and self.maximum is not None and value >= self.maximum:
            return f"{self.name} is less than {float(self.maximum)!r}, not {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"{self.name} is at least {_number_text(self.minimum)}, not {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"{self.name} is at most {_number_text(self.maximum)}, not {value!r}"
        return None

    def choice_error(self, value: str) -> str | None:
        """Why ``value`` is not one of this parameter's choices, or ``None`` if it is (or the
        parameter takes any string)."""
        if self.choices is None or value in self.choices:
            return None
        listed = ", ".join(_default_text(choice) for choice in self.choices)
        return f"{self.name} is one of {listed}, not {_default_text(value)}"

    def signature(self) -> str:
        """How the parameter reads in a method signature: ``a``, ``*models``, ``alpha=0.5``."""
        if self.variadic:
            return f"*{self.name}"
        if self.required:
            return self.name
        return f"{self.name}={_default_text(self.default)}"


def _number_text(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else repr(value)


def _default_text(value: object) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, BlockWeights):
        return value.to_text()
    return repr(value)


# ---------------------------------------------------------------------------------------------
# Annotated metadata


class _WeightsKind:
    """The marker that makes ``Weights`` (a ``float`` to type checkers) a weights parameter."""

    def __repr__(self) -> str:
        return "WEIGHTS"


WEIGHTS: Final = _WeightsKind()

Weights: TypeAlias = Annotated[float, WEIGHTS]
"""A block weights parameter: the recipe gives a number, a vector, a map or a preset, and the
kernel receives the value of the key's block, a ``float``."""


@dataclass(frozen=True)
class Doc:
    """What a parameter means, as ``mergelang methods NAME`` prints it."""

    text: str


@dataclass(frozen=True)
class Range:
    """The values a ``float``, ``int`` or ``Weights`` parameter takes (each block, for
    weights): ``minimum`` to ``maximum``, inclusive unless ``open_minimum``/``open_maximum``
    exclude that bound; ``None`` leaves a side unbounded. The checker refuses anything else at
    its recipe line and column."""

    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    open_maximum: bool = False


@dataclass(frozen=True)
class Choices:
    """The values a ``str`` parameter takes: the checker refuses any other at its recipe line
    and column, naming the nearest choice."""

    values: tuple[str, ...]

    def __init__(self, *values: str) -> None:
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class BaseDefault:
    """The BASE of a ``Weights`` parameter when neither the recipe's value nor its
    :class:`BaseNumber` sets one (without it, a missing BASE is an error)."""

    value: float


@dataclass(frozen=True)
class BaseNumber:
    """A ``Weights`` parameter's companion number (``base=``, by default): the BASE weight,
    overriding whatever BASE the weights value sets. It is a parameter of the method, listed
    after the kernel's own parameters, defaulting to ``None`` (not given); the kernel does not
    receive it, since it is folded into the weights before they are resolved per block."""

    doc: str = ""
    name: str = "base"
    minimum: float | None = None
    maximum: float | None = None
