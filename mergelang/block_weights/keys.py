"""The keys of a weight map: block names, groups, ranges, BASE and default."""

from __future__ import annotations

from typing import TypeAlias

from mergelang.block_weights.names import BASE, DEFAULT_KEY, vocabulary
from mergelang.block_weights.values import WeightsError

__all__ = ["MapKey", "key_blocks", "key_text", "unknown_key_error"]

MapKey: TypeAlias = str | tuple[str, str]
"""A weight map key: a block name, a group (``IN``, ``M``, ``OUT``), ``BASE``, ``default``, or
an inclusive ``(start, end)`` block range in a scheme's block order."""


def unknown_key_error(name: str, index: int | None, *, what: str = "block") -> WeightsError:
    vocab = vocabulary()
    suggestion = vocab.suggest(name)
    hint = vocab.valid_keys_text()
    if suggestion is not None and suggestion != name:
        hint = f"did you mean {suggestion}? {hint}"
    return WeightsError(f"unknown {what} {name!r}", hint=hint, index=index)


def key_text(key: MapKey) -> str:
    if isinstance(key, tuple):
        return f"{key[0]}..{key[1]}"
    return key


def key_blocks(key: MapKey, index: int | None) -> tuple[str, ...]:
    """The blocks a map key (other than BASE and default) covers."""
    vocab = vocabulary()
    if isinstance(key, tuple):
        start, end = key
        for endpoint in (start, end):
            if endpoint not in vocab.order:
                raise unknown_key_error(endpoint, index, what="block in range")
        found = vocab.range(start, end)
        if found is not None:
            return found
        holder = next((s for s in vocab.schemes if start in s.index and end in s.index), None)
        if holder is None:
            orders = "; ".join(vocab.describe(s.blocks, by_group=True) for s in vocab.schemes)
            raise WeightsError(
                f"no architecture has {start} and {end} in one block order",
                hint=f"ranges run {orders}",
                index=index,
            )
        raise WeightsError(
            f"block range {start}..{end} runs backwards",
            hint=f"ranges run {vocab.describe(holder.blocks, by_group=True)}: write {end}..{start}",
            index=index,
        )
    if key in vocab.groups:
        return vocab.groups[key]
    if key in vocab.order:
        return (key,)
    if key in (BASE, DEFAULT_KEY):
        raise ValueError(f"{key} is not a block key")
    raise unknown_key_error(key, index)
