"""The merge graph: the steps the planner builds and the executor runs.

A :class:`Node` is one model-valued step: reading an input (:class:`LoadNode`), a merge
method applied to other nodes (:class:`MethodNode`) or model arithmetic
(:class:`LinearNode`). Structurally equal expressions are one node: the planner interns
nodes by :attr:`Node.identity`, built from the step's parameters and its children's
identities, so ``weighted_sum(a, b, 0.3)`` written twice (or reached through two names) is
computed once.

Every node knows, per key, what its value is before any tensor is read (a :class:`KeySlot`):
its shape, its natural dtype (what a ``save`` without ``as`` writes) and how it is obtained:

``read``
    the tensor of an input file.
``compute``
    the node's formula applied to its children's values of the same key.
``pass``
    the value of one child, unchanged: keys only some inputs have, keys never merged
    (EMA copies, schedule buffers, ``position_ids``) and integer keys.
``channels``
    a normal U-Net's input convolution merged with an inpainting/pix2pix one: the first
    ``merged_channels`` channels of dim 1 are computed, the rest come from child ``source``.

The planner builds each node (interning it, filling its key table, binding the recipe names
to it), then seals it (:meth:`Node.seal`): from then on, in a finished plan, no attribute of
a node can be set and its names and key table are read-only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from mergelang.block_weights import ResolvedWeights, format_number
from mergelang.errors import Span
from mergelang.lang.ast import NO_SPAN

if TYPE_CHECKING:
    from mergelang.arch import Architecture
    from mergelang.methods.registry import MethodSpec
    from mergelang.plan.inputs import InputHandle

__all__ = [
    "KeyAction",
    "KeySlot",
    "LinearNode",
    "LoadNode",
    "MethodNode",
    "Node",
    "content_keys",
    "walk",
]

KeyAction = Literal["read", "compute", "pass", "channels"]


@dataclass(frozen=True, slots=True)
class KeySlot:
    """What a node's value is at one key (see the module docstring)."""

    shape: tuple[int, ...]
    dtype: str
    action: KeyAction
    block: str | None = None
    source: int = 0
    merged_channels: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(eq=False)
class Node(ABC):
    """A step of the merge graph. Nodes compare by identity; :attr:`identity` is the
    structural description the planner interns them by."""

    identity: str
    children: tuple[Node, ...]
    arch: Architecture
    keys: Mapping[str, KeySlot] = field(default_factory=dict, repr=False)
    names: Sequence[str] = field(default_factory=list)
    """The recipe names bound to this value (steps, inputs), first definition first."""
    span: Span = NO_SPAN
    cache_marked: bool = False
    """A step declared with ``cache``."""
    convention: str = "mbw"
    """The block convention the key -> block assignment follows (part of the address)."""
    sealed: bool = field(default=False, init=False, repr=False)
    """Whether the planner has finished the node (see :meth:`seal`)."""

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "sealed", False):
            raise dataclasses.FrozenInstanceError(
                f"cannot assign to field {name!r}: the node belongs to a finished plan"
            )
        object.__setattr__(self, name, value)

    def add_name(self, name: str) -> None:
        """Bind one more recipe name to the node, while the planner builds it."""
        if self.sealed or not isinstance(self.names, list):
            raise dataclasses.FrozenInstanceError("the node belongs to a finished plan")
        self.names.append(name)

    def seal(self) -> None:
        """Finish the node: its names and key table become read-only and no attribute can
        be set any more."""
        if not self.sealed:
            self.names = tuple(self.names)
            self.keys = MappingProxyType(dict(self.keys))
            self.sealed = True

    @property
    @abstractmethod
    def kind(self) -> str:
        """``load``, ``linear`` or ``method:NAME``."""

    @property
    def elementwise(self) -> bool:
        """Whether each output element depends only on the same element of the inputs, so
        the executor may split a key into chunks and fuse the node with its consumers."""
        return True

    @property
    def needs_stats(self) -> bool:
        return False

    @abstractmethod
    def describe(self) -> str:
        """A one-line description for plans and messages."""

    @property
    def label(self) -> str:
        """How messages name the node: its first recipe name, or its description."""
        return self.names[0] if self.names else self.describe()

    def content_key(self, input_keys: Mapping[int, str]) -> str | None:
        """A content address: a sha256 of the node's parameters and its children's keys.

        ``input_keys`` maps a :class:`LoadNode`'s ``id()`` to its input's content hash;
        ``None`` when an input under this node has none (tensors handed over in memory).
        """
        return content_keys([self], input_keys)[id(self)]

    def _own_content_key(
        self, input_keys: Mapping[int, str], known: Mapping[int, str | None]
    ) -> str | None:
        """This node's content key, its children's being in ``known``."""
        parts: list[str] = [self.kind, self.convention, self.parameters()]
        for child in self.children:
            key = known[id(child)]
            if key is None:
                return None
            parts.append(key)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    @abstractmethod
    def parameters(self) -> str:
        """The node's own parameters as canonical text (children excluded)."""


class LoadNode(Node):
    """The tensors of an input checkpoint."""

    def __init__(self, handle: InputHandle, arch: Architecture) -> None:
        super().__init__(f"load:{handle.identity}", (), arch, span=handle.span)
        self.handle = handle

    @property
    def kind(self) -> str:
        return "load"

    def describe(self) -> str:
        return f"load {self.handle.label}"

    def parameters(self) -> str:
        return ""

    def _own_content_key(
        self, input_keys: Mapping[int, str], known: Mapping[int, str | None]
    ) -> str | None:
        digest = input_keys.get(id(self))
        if digest is None:
            return None
        return hashlib.sha256(f"load\x1f{digest}".encode()).hexdigest()


def _weights_text(weights: ResolvedWeights) -> str:
    """A number when every block and BASE agree, else ``[BASE, blocks...]``; elemental
    entries follow in braces, in order (``0.5 {"attn2" in OUT03: 0.2}``)."""
    values = [format_number(weights.base), *(format_number(v) for v in weights.values.values())]
    text = values[0] if len(set(values)) == 1 else "[" + ", ".join(values) + "]"
    if weights.elemental:
        text += " {" + ", ".join(e.to_text() for e in weights.elemental) + "}"
    return text


def _value_text(value: object) -> str:
    if isinstance(value, ResolvedWeights):
        return _weights_text(value)
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


class MethodNode(Node):
    """A registered merge method applied to child nodes.

    ``weights`` holds each weights parameter resolved for the architecture; ``numbers`` the
    other non-model parameters passed to the kernel (``base_of`` parameters are already
    folded into their weights).
    """

    def __init__(
        self,
        spec: MethodSpec,
        children: tuple[Node, ...],
        arch: Architecture,
        weights: Mapping[str, ResolvedWeights],
        numbers: Mapping[str, object],
        span: Span = NO_SPAN,
    ) -> None:
        self.spec = spec
        self.weights: Mapping[str, ResolvedWeights] = MappingProxyType(dict(weights))
        self.numbers: Mapping[str, object] = MappingProxyType(dict(numbers))
        identity = f"{spec.name}({self.parameters()};{','.join(str(id(c)) for c in children)})"
        super().__init__(identity, children, arch, span=span)
        self._blocks: dict[str | None, dict[str, object]] = {}

    @property
    def kind(self) -> str:
        return f"method:{self.spec.name}"

    @property
    def elementwise(self) -> bool:
        return self.spec.elementwise

    @property
    def needs_stats(self) -> bool:
        return self.spec.needs_stats

    def parameters(self) -> str:
        items = [f"{k}={_value_text(v)}" for k, v in self.weights.items()]
        items += [f"{k}={_value_text(v)}" for k, v in self.numbers.items()]
        return ", ".join(items)

    def describe(self) -> str:
        args = [c.label for c in self.children] + [self.parameters()]
        return f"{self.spec.name}({', '.join(a for a in args if a)})"

    def scalars(self, block: str, key: str | None = None) -> dict[str, object]:
        """The kernel's keyword arguments for ``key``, a key of ``block`` (elemental entries
        make a weight depend on the key; without ``key`` only the block values are used)."""
        found = self._blocks.get(block)
        if found is None:
            found = {name: w[block] for name, w in self.weights.items()}
            found.update(self.numbers)
            self._blocks[block] = found
        if key is None:
            return found
        keyed = {name: w.value(block, key) for name, w in self.weights.items() if w.keyed(block)}
        return {**found, **keyed} if keyed else found


class LinearNode(Node):
    """Model arithmetic: ``sum(weight_i * child_i)`` per block, in the order written."""

    def __init__(
        self,
        children: tuple[Node, ...],
        weights: tuple[ResolvedWeights, ...],
        arch: Architecture,
        span: Span = NO_SPAN,
    ) -> None:
        self.weights = weights
        identity = f"linear({self.parameters()};{','.join(str(id(c)) for c in children)})"
        super().__init__(identity, children, arch, span=span)

    @property
    def kind(self) -> str:
        return "linear"

    def parameters(self) -> str:
        return ", ".join(_weights_text(w) for w in self.weights)

    def describe(self) -> str:
        terms = [
            f"{_weights_text(w)} * {c.label}"
            for w, c in zip(self.weights, self.children, strict=True)
        ]
        return " + ".join(terms)

    def coefficients(self, block: str, key: str | None = None) -> tuple[float, ...]:
        """Each term's weight at ``key`` (a key of ``block``); the block values alone
        without ``key``."""
        if key is None:
            return tuple(w[block] for w in self.weights)
        return tuple(w.value(block, key) for w in self.weights)


def content_keys(
    roots: Iterator[Node] | tuple[Node, ...] | list[Node], input_keys: Mapping[int, str]
) -> dict[int, str | None]:
    """:meth:`Node.content_key` of every node reachable from ``roots``, by ``id()``: one
    walk, children first, each node once and without recursion (a chain of steps is as deep
    as the recipe makes it, and asking each node of a chain on its own would walk it again
    for every step)."""
    known: dict[int, str | None] = {}
    for node in walk(roots):
        known[id(node)] = node._own_content_key(input_keys, known)
    return known


def walk(roots: Iterator[Node] | tuple[Node, ...] | list[Node]) -> list[Node]:
    """Every node reachable from ``roots``, children before parents, each once."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(list(roots))]
    while stack:
        node, expanded = stack.pop()
        if id(node) in seen:
            continue
        if expanded:
            seen.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        for child in reversed(node.children):
            if id(child) not in seen:
                stack.append((child, False))
    return order
