"""Evaluating the merge graph for one key, chunk by chunk, fused.

A :class:`KeyTask` is one output key (with one shape) and every output, cache store or
in-memory result that needs it. :meth:`Evaluator.run` walks the key's elements in chunks of
:attr:`~mergelang.planned.Plan.chunk` elements; for each chunk it evaluates each node the
targets need once (a memo per chunk), so a sub-expression shared by several outputs, or
several uses of one input, costs one read and one computation. Values are float32 in
buffers reused from chunk to chunk (an :class:`Arena` per worker thread); an input chunk is
converted into such a buffer, never a whole tensor. Unsaved intermediates exist only as
these chunk buffers: that is the fusion.

A key that some node cannot split (a method that is not elementwise, a channel merge of an
inpainting input convolution, generated ``position_ids``) is evaluated whole: values are
then tensors of the key's shape.

Results equal the formula evaluated on whole float32 tensors: the kernels are elementwise
and see the same float32 operands in the same order, whatever the chunk boundaries.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mergelang.errors import CheckpointError
from mergelang.graph import KeySlot, LinearNode, LoadNode, MethodNode, Node
from mergelang.io.dtypes import torch_dtype
from mergelang.io.save_options import OutputKey, reset_position_ids
from mergelang.planned import CacheEntry

if TYPE_CHECKING:
    from mergelang.inputs import InputHandle
    from mergelang.sinks import Sink

__all__ = ["Arena", "Evaluator", "KeyTask", "Target"]


@dataclass(eq=False)
class Target:
    """One place a key goes: ``node``'s value at ``item.read_key`` (``None`` for generated
    ``position_ids``), cast to ``item.dtype``, written as ``item.key`` into ``sink``."""

    sink: Sink
    item: OutputKey
    node: Node | None


@dataclass(eq=False)
class KeyTask:
    key: str
    shape: tuple[int, ...]
    whole: bool
    targets: list[Target] = field(default_factory=list)

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return sum(t.item.entry().nbytes for t in self.targets)


class Arena:
    """Chunk buffers of one worker, reused from chunk to chunk (per dtype)."""

    def __init__(self, chunk: int, device: torch.device) -> None:
        self.chunk = chunk
        self.device = device
        self._pools: dict[torch.dtype, list[torch.Tensor]] = {}
        self._used: dict[torch.dtype, int] = {}

    def take(self, count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        pool = self._pools.setdefault(dtype, [])
        used = self._used.get(dtype, 0)
        if used == len(pool):
            pool.append(torch.empty(self.chunk, dtype=dtype, device=self.device))
        self._used[dtype] = used + 1
        return pool[used][:count]

    def reset(self) -> None:
        self._used.clear()


class Evaluator:
    """Runs :class:`KeyTask` objects; safe to call from several worker threads.

    ``hits`` maps ``id(node)`` to the cache entry a node is read from instead of computed;
    ``stats`` holds the statistics objects of nodes that needed a statistics pass.
    """

    def __init__(
        self,
        *,
        device: torch.device,
        chunk: int,
        hits: Mapping[int, CacheEntry],
        stats: Mapping[int, object] | None = None,
    ) -> None:
        self.device = device
        self.chunk = chunk
        self.hits = hits
        self.stats = dict(stats or {})
        self._local = threading.local()
        self._whole: dict[tuple[int, str], bool] = {}
        self._whole_lock = threading.Lock()

    # -- planning a key

    def needs_whole(self, node: Node, key: str) -> bool:
        """Whether ``node``'s value at ``key`` cannot be computed chunk by chunk."""
        memo_key = (id(node), key)
        with self._whole_lock:
            found = self._whole.get(memo_key)
        if found is not None:
            return found
        slot = node.keys[key]
        if id(node) in self.hits or slot.action == "read":
            result = False
        elif slot.action == "channels":
            result = True
        elif slot.action == "pass":
            result = self.needs_whole(node.children[slot.source], key)
        else:
            result = not node.elementwise or any(
                self.needs_whole(child, key) for child in node.children
            )
        with self._whole_lock:
            self._whole[memo_key] = result
        return result

    # -- running a key

    def _arena(self) -> Arena:
        arena: Arena | None = getattr(self._local, "arena", None)
        if arena is None:
            arena = Arena(self.chunk, self.device)
            self._local.arena = arena
        return arena

    def run(self, task: KeyTask, cancel: threading.Event | None = None) -> int:
        """Compute and write every target of ``task``; returns the bytes written."""
        arena = self._arena()
        self.forget_reads()
        numel = task.numel
        step = numel if task.whole or numel == 0 else self.chunk
        try:
            for lo in range(0, max(numel, 1), max(step, 1)):
                if cancel is not None and cancel.is_set():
                    return 0
                hi = min(numel, lo + step)
                arena.reset()
                memo: dict[tuple[int, str], torch.Tensor] = {}
                for target in task.targets:
                    self._write(target, lo, hi, task.whole, memo, arena)
        finally:
            self.forget_reads()
            arena.reset()
        return task.nbytes

    def _write(
        self,
        target: Target,
        lo: int,
        hi: int,
        whole: bool,
        memo: dict[tuple[int, str], torch.Tensor],
        arena: Arena,
    ) -> None:
        item = target.item
        if target.node is None:
            value = reset_position_ids(item.shape)
        else:
            value = self.value(target.node, item.read_key, lo, hi, whole, memo)
        dtype = torch_dtype(item.dtype)
        if value.dtype != dtype:
            value = value.to(dtype) if whole else arena.take(hi - lo, dtype).copy_(value)
        target.sink.write_part(item.key, lo, value.reshape(-1))

    def forget_reads(self) -> None:
        """Drop this thread's mapped input tensors (done after each key)."""
        self._local.tensors = {}

    def _read(self, handle: InputHandle, key: str) -> torch.Tensor:
        tensors: dict[tuple[int, str], torch.Tensor] | None = getattr(self._local, "tensors", None)
        if tensors is None:
            tensors = self._local.tensors = {}
        found = tensors.get((id(handle), key))
        if found is None:
            found = handle.reader().get(key)
            tensors[id(handle), key] = found
        return found

    def value(
        self,
        node: Node,
        key: str,
        lo: int,
        hi: int,
        whole: bool,
        memo: dict[tuple[int, str], torch.Tensor],
    ) -> torch.Tensor:
        """``node``'s value at ``key``: elements ``lo:hi`` flattened, or (``whole``) the
        tensor of the key's shape. Inputs come back in their own dtype (a view of the file
        when possible), computed values in float32."""
        memo_key = (id(node), key)
        found = memo.get(memo_key)
        if found is not None:
            return found
        slot = node.keys[key]
        hit = self.hits.get(id(node))
        if hit is not None and hit.handle is not None:
            result = self._slice(self._read(hit.handle, key), lo, hi, whole)
        elif isinstance(node, LoadNode):
            result = self._slice(self._read(node.handle, key), lo, hi, whole)
        elif slot.action == "pass":
            result = self.value(node.children[slot.source], key, lo, hi, whole, memo)
        elif slot.action == "channels":
            result = self._channels(node, key, slot, memo)
        else:
            operands = [
                self.as_float(self.value(c, key, lo, hi, whole, memo), whole) for c in node.children
            ]
            out = self._arena().take(hi - lo) if not whole else None
            result = self.formula(node, key, slot, operands, out)
        memo[memo_key] = result
        return result

    @staticmethod
    def _slice(tensor: torch.Tensor, lo: int, hi: int, whole: bool) -> torch.Tensor:
        return tensor if whole else tensor.reshape(-1)[lo:hi]

    def as_float(self, tensor: torch.Tensor, whole: bool) -> torch.Tensor:
        """``tensor`` as float32 on the compute device (a chunk buffer unless ``whole``)."""
        if tensor.dtype == torch.float32 and tensor.device == self.device:
            return tensor
        if whole:
            return tensor.to(device=self.device, dtype=torch.float32)
        return self._arena().take(tensor.numel()).copy_(tensor)

    def formula(
        self,
        node: Node,
        key: str,
        slot: KeySlot,
        operands: list[torch.Tensor],
        out: torch.Tensor | None,
    ) -> torch.Tensor:
        """The node's formula on float32 ``operands`` (into ``out`` when given)."""
        block = slot.block if slot.block is not None else "BASE"
        if isinstance(node, LinearNode):
            return _linear(node.coefficients(block), operands, out, self._arena())
        assert isinstance(node, MethodNode)
        extra: dict[str, Any] = {}
        if node.needs_stats:
            extra["stats"] = self.stats[id(node)]
        if node.elementwise and out is not None:
            extra["out"] = out
        result = node.spec.call_kernel(operands, node.scalars(block), **extra)
        return _checked_result(node, key, result, operands[0])

    def _channels(
        self, node: Node, key: str, slot: KeySlot, memo: dict[tuple[int, str], torch.Tensor]
    ) -> torch.Tensor:
        """A normal input convolution merged with a wider one: channels ``0:n`` computed,
        the rest from the wider input."""
        assert slot.merged_channels is not None
        count = slot.merged_channels
        source = node.children[slot.source]
        result = self.as_float(self.value(source, key, 0, slot.numel, True, memo), True).clone()
        operands = [
            self.as_float(self.value(c, key, 0, c.keys[key].numel, True, memo), True)[
                :, :count
            ].contiguous()
            for c in node.children
        ]
        result[:, :count] = self.formula(node, key, slot, operands, None)
        return result


def _linear(
    coefficients: tuple[float, ...],
    operands: list[torch.Tensor],
    out: torch.Tensor | None,
    arena: Arena,
) -> torch.Tensor:
    """``sum(w_i * x_i)`` left to right in float32: each product rounded, then added."""
    whole = out is None
    result = torch.empty_like(operands[0]) if out is None else out
    torch.mul(operands[0], coefficients[0], out=result)
    for weight, operand in zip(coefficients[1:], operands[1:], strict=True):
        scratch = torch.empty_like(operand) if whole else arena.take(operand.numel())
        torch.mul(operand, weight, out=scratch)
        result.add_(scratch)
    return result


def _checked_result(node: MethodNode, key: str, result: object, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(result, torch.Tensor) or tuple(result.shape) != tuple(like.shape):
        shape = getattr(result, "shape", None)
        raise CheckpointError(
            f"<method {node.spec.name}>",
            f"the kernel returned {type(result).__name__} of shape {shape} for a key of shape "
            f"{tuple(like.shape)}",
            code="method-failed",
            key=key,
        )
    return result if result.dtype == torch.float32 else result.to(torch.float32)
