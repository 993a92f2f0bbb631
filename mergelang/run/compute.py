"""Evaluating the merge graph for one key, chunk by chunk, fused.

A :class:`KeyTask` is one output key (with one shape) and every output, cache store or
in-memory result that needs it. :meth:`Evaluator.run` walks the key's elements in chunks of
:attr:`~mergelang.plan.plan.Plan.chunk` elements; for each chunk it evaluates each node the
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

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mergelang.errors import CheckpointError
from mergelang.io.dtypes import torch_dtype
from mergelang.io.fp8 import is_fp8_code, saturating_cast
from mergelang.io.readers import SafetensorsReader
from mergelang.io.save_options import OutputKey, generated_tensor
from mergelang.plan.graph import KeySlot, LinearNode, LoadNode, MethodNode, Node
from mergelang.plan.plan import CacheEntry

if TYPE_CHECKING:
    from mergelang.io.sinks import Sink
    from mergelang.io.writer import OutputEntry
    from mergelang.plan.inputs import InputHandle

__all__ = ["Arena", "Chunk", "Evaluator", "KeyTask", "Target"]


@dataclass(eq=False)
class Target:
    """One place a key goes: ``node``'s value at ``item.read_key`` (``None`` for generated
    ``position_ids``), cast to ``item.dtype``, written as ``item.key`` into ``sink``."""

    sink: Sink
    item: OutputKey
    node: Node | None
    label: str = "<output>"
    """How messages name the output (its path, or the cached step)."""
    entry: OutputEntry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.entry = self.item.entry()


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
        return sum(t.entry.nbytes for t in self.targets)


class Arena:
    """Chunk buffers of one worker, reused from chunk to chunk (per dtype, and on the
    compute device or, for ``host=True``, on the CPU: the buffers file reads fill)."""

    def __init__(self, chunk: int, device: torch.device) -> None:
        self.chunk = chunk
        self.device = device
        self._pools: dict[tuple[torch.dtype, bool], list[torch.Tensor]] = {}
        self._used: dict[tuple[torch.dtype, bool], int] = {}

    def take(
        self, count: int, dtype: torch.dtype = torch.float32, *, host: bool = False
    ) -> torch.Tensor:
        host = host and self.device.type != "cpu"
        pool = self._pools.setdefault((dtype, host), [])
        used = self._used.get((dtype, host), 0)
        if used == len(pool):
            device = torch.device("cpu") if host else self.device
            pool.append(torch.empty(self.chunk, dtype=dtype, device=device))
        self._used[dtype, host] = used + 1
        return pool[used][:count]

    def reset(self) -> None:
        self._used.clear()


class Evaluator:
    """Runs :class:`KeyTask` objects; safe to call from several worker threads.

    ``hits`` maps ``id(node)`` to the cache entry a node is read from instead of computed;
    ``stats`` holds the statistics objects of nodes that needed a statistics pass.
    ``check_finite``: refuse NaN and infinite values in the inputs of a merge and in every
    computed value written (the ``nan="error"`` policy; ``nan="keep"`` merges and writes them
    as they are).
    """

    def __init__(
        self,
        *,
        device: torch.device,
        chunk: int,
        hits: Mapping[int, CacheEntry],
        stats: Mapping[int, object] | None = None,
        check_finite: bool = True,
    ) -> None:
        self.device = device
        self.check_finite = check_finite
        self.chunk = chunk
        self.hits = hits
        self.stats = dict(stats or {})
        self._local = threading.local()
        self._whole: dict[tuple[int, str], bool] = {}
        self._whole_lock = threading.Lock()
        # One large key evaluated whole at a time: its float32 copies are the biggest
        # allocations of a run, and letting every worker hold one would multiply the peak.
        self._large_whole = threading.Lock()
        self.clamped: dict[int, dict[str, int]] = {}
        """``id(sink)`` -> key -> values clamped to an fp8 output's range."""
        self._clamped_lock = threading.Lock()

    # -- planning a key

    def needs_whole(self, node: Node, key: str) -> bool:
        """Whether ``node``'s value at ``key`` cannot be computed chunk by chunk.

        Worked out children first with an explicit stack, never by recursion: a chain of
        steps is as deep as the recipe makes it."""
        with self._whole_lock:
            found = self._whole.get((id(node), key))
        if found is not None:
            return found
        known: dict[int, bool] = {}
        stack = [node]
        while stack:
            current = stack[-1]
            if id(current) in known:
                stack.pop()
                continue
            with self._whole_lock:
                cached = self._whole.get((id(current), key))
            if cached is not None:
                known[id(current)] = cached
                stack.pop()
                continue
            slot = current.keys[key]
            if id(current) in self.hits or slot.action == "read":
                depends: list[Node] = []
            elif slot.action == "channels":
                depends = []
            elif slot.action == "pass":
                depends = [current.children[slot.source]]
            else:
                depends = [] if not current.elementwise else list(current.children)
            missing = [child for child in depends if id(child) not in known]
            if missing:
                stack.extend(missing)
                continue
            if id(current) in self.hits or slot.action == "read":
                result = False
            elif slot.action == "channels" or (slot.action != "pass" and not current.elementwise):
                result = True
            else:
                result = any(known[id(child)] for child in depends)
            known[id(current)] = result
            with self._whole_lock:
                self._whole[(id(current), key)] = result
            stack.pop()
        return known[id(node)]

    # -- running a key

    def _arena(self) -> Arena:
        arena: Arena | None = getattr(self._local, "arena", None)
        if arena is None:
            arena = Arena(self.chunk, self.device)
            self._local.arena = arena
        return arena

    def run(self, task: KeyTask, cancel: threading.Event | None = None) -> int:
        """Compute and write every target of ``task``; returns the bytes written."""
        if task.whole and task.numel > self.chunk:
            with self._large_whole:
                return self._run(task, cancel)
        return self._run(task, cancel)

    def _run(self, task: KeyTask, cancel: threading.Event | None) -> int:
        arena = self._arena()
        self.forget_reads()
        numel = task.numel
        step = numel if task.whole or numel == 0 else self.chunk
        try:
            targets = [t for t in task.targets if not self._copied(t, task.whole)]
            for lo in range(0, max(numel, 1) if targets else 0, max(step, 1)):
                if cancel is not None and cancel.is_set():
                    return 0
                arena.reset()
                chunk = Chunk(lo, min(numel, lo + step), task.whole)
                for target in targets:
                    self._write(target, chunk, arena)
        finally:
            self.forget_reads()
            arena.reset()
        return task.nbytes

    def _copied(self, target: Target, whole: bool) -> bool:
        """Write ``target`` at once if its value is a file's tensor, unchanged and already in
        the output's dtype (a key passed through: most keys of a layer study), unless the
        file is read in chunks (a chunked key of a safetensors input: the chunk loop then
        copies it, each chunk read once for every output); returns whether it did."""
        node = target.node
        key = target.item.read_key
        while node is not None:
            source = self._source(node)
            if source is not None:
                if not whole and isinstance(source.reader(), SafetensorsReader):
                    return False
                tensor = self._read(source, key)
                if tensor.dtype != torch_dtype(target.item.dtype):
                    return False
                target.sink.write_part(target.item.key, 0, tensor.reshape(-1))
                return True
            slot = node.keys[key]
            if slot.action != "pass":
                return False
            node = node.children[slot.source]
        return False

    def _write(self, target: Target, chunk: Chunk, arena: Arena) -> None:
        item = target.item
        if target.node is None:
            value = generated_tensor(item)
        else:
            value = self.value(target.node, item.read_key, chunk)
        key = item.read_key
        dtype = torch_dtype(item.dtype)
        if value.dtype != dtype and is_fp8_code(item.dtype):
            out = None if chunk.whole else arena.take(chunk.hi - chunk.lo, dtype)
            value, clamped = saturating_cast(value, item.dtype, out)
            if clamped:
                self._count_clamped(target, clamped)
        elif value.dtype != dtype:
            if chunk.whole:
                value = value.to(dtype)
            else:
                value = arena.take(chunk.hi - chunk.lo, dtype).copy_(value)
        if self.check_finite and target.node is not None and self._computed(target.node, key):
            _check_finite_output(value, target.label, item.key)
        target.sink.write_part(item.key, chunk.lo, value.reshape(-1))

    def _count_clamped(self, target: Target, count: int) -> None:
        with self._clamped_lock:
            found = self.clamped.setdefault(id(target.sink), {})
            found[target.item.key] = found.get(target.item.key, 0) + count

    def _computed(self, node: Node, key: str) -> bool:
        """Whether ``node``'s value at ``key`` is computed (not a file's tensor passed on)."""
        while self._source(node) is None:
            slot = node.keys[key]
            if slot.action != "pass":
                return True
            node = node.children[slot.source]
        return False

    def forget_reads(self) -> None:
        """Drop this thread's whole input tensors (done after each key)."""
        self._local.tensors = {}

    def _read(self, handle: InputHandle, key: str) -> torch.Tensor:
        tensors: dict[tuple[int, str], torch.Tensor] | None = getattr(self._local, "tensors", None)
        if tensors is None:
            tensors = self._local.tensors = {}
        found = tensors.get((id(handle), key))
        if found is None:
            found = handle.reader().get(handle.file_key(key))
            tensors[id(handle), key] = found
        return found

    def _read_chunk(self, handle: InputHandle, key: str, chunk: Chunk) -> torch.Tensor:
        """The input's elements of ``chunk`` in its own dtype. A safetensors input is read
        straight into a chunk buffer (so a run holds no key whole); other readers (GGUF,
        pickles, dequantised views) give the whole tensor, kept for the key's chunks."""
        reader = handle.reader()
        if chunk.whole or not isinstance(reader, SafetensorsReader):
            tensor = self._read(handle, key)
            return tensor if chunk.whole else tensor.reshape(-1)[chunk.lo : chunk.hi]
        name = handle.file_key(key)
        try:
            dtype = torch_dtype(reader.info(name).dtype)
        except TypeError as exc:
            raise CheckpointError(
                str(reader.path), str(exc), code="unsupported-dtype", key=name
            ) from None
        buffer = self._arena().take(chunk.hi - chunk.lo, dtype, host=True)
        return reader.read_into(name, chunk.lo, buffer)

    def _source(self, node: Node) -> InputHandle | None:
        """The file ``node`` is read from (an input or a cache hit), or ``None``."""
        hit = self.hits.get(id(node))
        if hit is not None and hit.handle is not None:
            return hit.handle
        return node.handle if isinstance(node, LoadNode) else None

    def value(self, node: Node, key: str, chunk: Chunk) -> torch.Tensor:
        """``node``'s value at ``key`` in ``chunk``: elements ``lo:hi`` flattened, or (whole
        chunks) the tensor of the key's shape. Inputs come back in their own dtype (a view of
        the file when possible), computed values in float32.

        Evaluated with an explicit stack, never by recursion: a chain of steps is as deep as
        the recipe makes it. Children are evaluated before their node, left to right, each
        completely before the next (the order a recursive walk would take), so the
        computations, the finiteness checks and the errors they raise come in the same
        order."""
        memo = chunk.memo
        found = memo.get((id(node), key))
        if found is not None:
            return found
        stack = [node]
        while stack:
            current = stack[-1]
            if (id(current), key) in memo:
                stack.pop()
                continue
            missing = next(
                (c for c in self._depends(current, key) if (id(c), key) not in memo), None
            )
            if missing is not None:
                stack.append(missing)
                continue
            memo[id(current), key] = self._evaluate(current, key, chunk)
            stack.pop()
        return memo[id(node), key]

    def _depends(self, node: Node, key: str) -> Sequence[Node]:
        """The children whose values at ``key`` :meth:`_evaluate` uses, in order."""
        if self._source(node) is not None:
            return ()
        slot = node.keys[key]
        if slot.action == "pass":
            return (node.children[slot.source],)
        return node.children

    def _evaluate(self, node: Node, key: str, chunk: Chunk) -> torch.Tensor:
        """``node``'s value once the values of :meth:`_depends` are in ``chunk.memo``."""
        slot = node.keys[key]
        source = self._source(node)
        if source is not None:
            return self._read_chunk(source, key, chunk)
        if slot.action == "pass":
            return chunk.memo[id(node.children[slot.source]), key]
        if slot.action == "channels":
            return self._channels(node, key, slot, chunk)
        through_result = self.check_finite and _propagates_nonfinite(node)
        operands = self.operands(node, key, chunk, check=not through_result)
        out = None if chunk.whole else self._arena().take(chunk.hi - chunk.lo)
        result = self.formula(node, key, slot, operands, out)
        if through_result:
            self._check_through(node, key, chunk, operands, result)
        return result

    def operands(
        self, node: Node, key: str, chunk: Chunk, *, check: bool = True
    ) -> list[torch.Tensor]:
        """The float32 values of ``node``'s children at ``key``; values read from a file are
        checked to be finite first (unless the run keeps non-finite values, or ``check`` is
        false: a node whose result shows any non-finite operand is checked through its
        result, :meth:`_check_through`)."""
        found = []
        for child in node.children:
            operand = self.as_float(self.value(child, key, chunk), chunk.whole)
            source = self._source(child)
            unchecked = source is not None and id(source) not in chunk.checked
            if check and self.check_finite and unchecked:
                assert source is not None
                _check_finite(operand, source, key)
                chunk.checked.add(id(source))
            found.append(operand)
        return found

    def _check_through(
        self,
        node: Node,
        key: str,
        chunk: Chunk,
        operands: list[torch.Tensor],
        result: torch.Tensor,
    ) -> None:
        """The check of :meth:`operands` for a node that propagates non-finite values: a
        finite sum of the result means every operand was finite; otherwise the operands
        read from files are checked in order, as :meth:`operands` would have (an input's
        error first; a result that is not finite from finite inputs is left to the output's
        check, as for any method)."""
        pending = []
        for child, operand in zip(node.children, operands, strict=True):
            source = self._source(child)
            if source is not None and id(source) not in chunk.checked:
                pending.append((operand, source))
        if not pending:
            return
        if not math.isfinite(float(result.sum())):
            for operand, source in pending:
                _check_finite(operand, source, key)
        chunk.checked.update(id(source) for _, source in pending)

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
            return _linear(node.coefficients(block, key), operands, out, self._arena())
        assert isinstance(node, MethodNode)
        extra: dict[str, Any] = {}
        if node.needs_stats:
            extra["stats"] = self.stats[id(node)]
        if node.spec.wants_key:
            extra["key"] = key
        if node.elementwise and out is not None:
            extra["out"] = out
        result = node.spec.call_kernel(operands, node.scalars(block, key), **extra)
        return _checked_result(node, key, result, operands[0])

    def _channels(self, node: Node, key: str, slot: KeySlot, chunk: Chunk) -> torch.Tensor:
        """A normal input convolution merged with a wider one: channels ``0:n`` computed,
        the rest from the wider input (evaluated whole: ``chunk`` covers the key)."""
        assert slot.merged_channels is not None
        count = slot.merged_channels
        source = node.children[slot.source]
        result = self.as_float(self.value(source, key, chunk), True).clone()
        operands = [t[:, :count].contiguous() for t in self.operands(node, key, chunk)]
        result[:, :count] = self.formula(node, key, slot, operands, None)
        return result


@dataclass(eq=False)
class Chunk:
    """Elements ``lo:hi`` of one key (``whole``: the key's whole tensor, in its shape), the
    values computed for it so far, and the inputs already checked to be finite in it."""

    lo: int
    hi: int
    whole: bool
    memo: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    checked: set[int] = field(default_factory=set)


def _propagates_nonfinite(node: Node) -> bool:
    """Whether a NaN or an infinity in any operand of ``node`` reaches its result (a linear
    combination, or a method registered so: :attr:`MethodSpec.propagates_nonfinite`)."""
    if isinstance(node, LinearNode):
        return True
    return isinstance(node, MethodNode) and node.spec.propagates_nonfinite


def _check_finite(operand: torch.Tensor, source: InputHandle, key: str) -> None:
    """Refuse NaN and infinite input values. A sum is one cheap pass; only when it is not
    finite (a NaN, an infinity, or an overflow of the sum) are the elements looked at."""
    if math.isfinite(float(operand.sum())):
        return
    bad = int((~torch.isfinite(operand)).sum())
    if bad == 0:
        return
    raise CheckpointError(
        source.label,
        f"the tensor holds NaN or infinite values ({bad} in the part being merged); merging "
        "would spread them",
        code="non-finite",
        key=key,
        hint="repair or replace this model, or pass --nan keep to merge the values as they are",
    )


def _check_finite_output(value: torch.Tensor, label: str, key: str) -> None:
    """Refuse a computed value that is NaN or infinite once cast to the output's dtype (an
    overflow of fp16, a method dividing by zero): outputs are held to what inputs are. One
    float32 sum per chunk; the elements are looked at only when it is not finite."""
    if not value.is_floating_point() or math.isfinite(float(value.sum(dtype=torch.float32))):
        return
    bad = int((~torch.isfinite(value)).sum())
    if bad == 0:
        return
    raise CheckpointError(
        label,
        f"the merged tensor holds NaN or infinite values ({bad} in the part being written, "
        f"in the output's dtype {value.dtype}); the output would be broken",
        code="non-finite-output",
        key=key,
        hint="check the step's numbers (an fp16 output holds at most 65504), or pass "
        "--nan keep to write the values as they are",
    )


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
