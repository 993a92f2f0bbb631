"""Running a :class:`~mergelang.plan.plan.Plan`: one streaming pass over the keys.

Every output of the plan (files, cache stores, in-memory results) is opened first: a
safetensors file gets its whole header and its final size at once. Then each key is a
:class:`~mergelang.run.compute.KeyTask` run by a small pool of worker threads: it reads the
key from each input once, computes every node that needs it, and writes it to every output
that holds it. Torch's kernels and the file reads and writes release the GIL, so the
threads overlap reading, computing and writing. Methods that need statistics over the whole
model get a pass of their own before, which reads only what they need.

On CPU the workers run torch with one intra-op thread each (restored afterwards): a chunk is
too small to share out, and torch's own threads waiting on each other at every chunk (worse
when another program holds a core) cost far more than they give.

Outputs appear whole or not at all: if anything fails, or the run is interrupted (the
``cancel`` event, ``KeyboardInterrupt``), every temporary file is removed and nothing is
renamed into place. Temporary files of the same targets left by processes that no longer run
(killed with ``SIGKILL``) are removed when the run opens its outputs, and listed in
:attr:`RunResult.removed_partials`.

Without ``--force`` (:attr:`Plan.force`) an output is moved into place only if its name is
still free: when two runs race for one file, the first to finish wins. The other fails with
``exists``, unless the file that won records the same output address, in which case its
output is ``up-to-date``.

Each file output is opened through its format's line of
:data:`~mergelang.io.file_formats.FILE_FORMATS`, so the executor never asks which format an
output is: every sink takes ``write_part`` and then ``commit`` or ``abort``. The plan is never
changed: what happened to each output is in the :class:`RunResult`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergelang.errors import Diagnostic, OutputError, UsageError
from mergelang.io.file_formats import FILE_FORMATS
from mergelang.io.save_options import OutputKey
from mergelang.io.sinks import MemorySink, Sink, SinkTarget
from mergelang.io.writer import remove_stale_partials
from mergelang.plan.cache import CACHE_FORMAT, CACHE_KEY, existing_output_key, stored_dtype
from mergelang.plan.graph import MethodNode, Node
from mergelang.plan.plan import CacheEntry, FileOutput, MemoryOutput, OutputPlan, Plan
from mergelang.run.compute import Chunk, Evaluator, KeyTask, Target
from mergelang.run.progress import NullReporter, Reporter

__all__ = ["OutputResult", "RunResult", "execute", "resolve_device"]


@dataclass(frozen=True)
class OutputResult:
    """What happened to one output: ``written``, ``up-to-date`` or ``memory`` (returned in
    :attr:`tensors`)."""

    name: str
    path: Path | None
    status: str
    nbytes: int
    keys: int
    tensors: Mapping[str, torch.Tensor] | None = None
    changes: tuple[str, ...] = ()
    """Why an earlier output of the same save was remade (``step 'x' changed``)."""


@dataclass(frozen=True)
class RunResult:
    outputs: tuple[OutputResult, ...]
    cache_hits: tuple[str, ...]
    cache_stores: tuple[str, ...]
    bytes_read: int
    bytes_written: int
    seconds: float
    warnings: tuple[Diagnostic, ...] = ()
    """The plan's warnings (found with the inputs known), for the caller to show."""
    removed_partials: tuple[tuple[Path, int], ...] = ()
    """Temporary files of this run's targets that processes no longer running had left
    (path, process id), removed before writing."""

    @property
    def written(self) -> list[Path]:
        return [o.path for o in self.outputs if o.status == "written" and o.path is not None]


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; a clear error when CUDA is asked for but absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"unknown device {name!r}", hint="use cpu or cuda (cuda:N for another GPU)"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"device {name!r} is not supported", hint="use cpu or cuda")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU found"
        raise UsageError(f"--device {name}: CUDA is not available ({why})", hint="use --device cpu")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices"
        )
    return torch.device("cuda", index)


class _Run:
    def __init__(self, plan: Plan, reporter: Reporter, cancel: threading.Event) -> None:
        self.plan = plan
        self.reporter = reporter
        self.cancel = cancel
        self.device = resolve_device(plan.device)
        self.hits = plan.hits
        self.sinks: list[tuple[Sink, OutputPlan | CacheEntry]] = []
        self.removed: list[tuple[Path, int]] = []
        self.made_meanwhile: set[int] = set()
        """``id()`` of the outputs another run made, the same, while this one ran."""

    # -- sinks

    def open_sinks(self) -> None:
        protected = [h.path for h in self.plan.inputs if h.path is not None]
        protected += [e.path for e in self.plan.cache if e.status == "hit" and e.path]
        for entry in self.plan.stores:
            assert entry.path is not None and entry.key is not None
            self.removed += remove_stale_partials(entry.path)
            entries = tuple(
                OutputKey(k, stored_dtype(entry.node, k), s.shape, "model").entry()
                for k, s in entry.node.keys.items()
            )
            meta = {CACHE_KEY: entry.key, "mergelang.step": entry.node.describe()[:2000]}
            target = SinkTarget(entry.path, entries, meta, overwrite=True)
            self.sinks.append((FILE_FORMATS[CACHE_FORMAT].open_sink(target), entry))
        for output in self.plan.pending:
            entries = tuple(item.entry() for item in output.layout)
            if isinstance(output, MemoryOutput):
                self.sinks.append((MemorySink(entries), output))
                continue
            self.removed += remove_stale_partials(output.path)
            target = SinkTarget(
                output.path,
                entries,
                output.metadata,
                overwrite=self.plan.force or output.replaces,
                protected=tuple(protected),
            )
            try:
                sink = output.file_format.open_sink(target)
            except OutputError as exc:
                if not _made_meanwhile(output, exc):
                    raise
                self.made_meanwhile.add(id(output))
                continue
            self.sinks.append((sink, output))

    def abort(self) -> None:
        for sink, _ in self.sinks:
            sink.abort()

    # -- tasks

    def tasks(self, evaluator: Evaluator) -> list[KeyTask]:
        found: dict[tuple[str, tuple[int, ...]], KeyTask] = {}
        for sink, owner in self.sinks:
            items: list[tuple[OutputKey, Node | None]]
            if isinstance(owner, CacheEntry):
                node = owner.node
                items = [
                    (OutputKey(k, stored_dtype(node, k), s.shape, "model"), node)
                    for k, s in node.keys.items()
                ]
            else:
                items = [(item, _source_node(owner, item)) for item in owner.layout]
            for item, source in items:
                whole = source is None or evaluator.needs_whole(source, item.read_key)
                task = found.get((item.key, item.shape))
                if task is None:
                    task = KeyTask(item.key, item.shape, whole)
                    found[item.key, item.shape] = task
                task.whole = task.whole or whole
                task.targets.append(Target(sink, item, source))
        return list(found.values())

    # -- passes

    def statistics(self, evaluator: Evaluator) -> dict[int, object]:
        nodes = [n for n in self.plan.needed() if n.needs_stats and id(n) not in self.hits]
        if not nodes:
            return {}
        total = sum(sum(s.numel * 4 for s in n.keys.values()) for n in nodes)
        self.reporter.phase("statistics", total)
        found: dict[int, object] = {}
        for node in nodes:
            assert isinstance(node, MethodNode) and node.spec.stats is not None
            collector: Any = node.spec.stats()
            for key, slot in node.keys.items():
                if self.cancel.is_set():
                    raise KeyboardInterrupt
                if slot.action != "compute":
                    continue
                chunk = Chunk(0, slot.numel, True)
                operands = evaluator.operands(node, key, chunk)
                collector.add(key, slot.block or "BASE", *operands)
                evaluator.forget_reads()
                self.reporter.advance(slot.numel * 4, key)
            finish = getattr(collector, "finish", None)
            if callable(finish):
                finish()
            found[id(node)] = collector
        return found

    def merge(self, evaluator: Evaluator) -> None:
        tasks = self.tasks(evaluator)
        self.reporter.phase("merging", sum(t.nbytes for t in tasks), f"{len(self.sinks)} outputs")
        workers = max(1, self.plan.workers)
        if workers == 1:
            for task in tasks:
                if self.cancel.is_set():
                    raise KeyboardInterrupt
                self.reporter.advance(evaluator.run(task, self.cancel), task.key)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="mergelang") as pool:
            inflight: deque[tuple[KeyTask, Future[int]]] = deque()
            try:
                for task in tasks:
                    if self.cancel.is_set():
                        raise KeyboardInterrupt
                    inflight.append((task, pool.submit(evaluator.run, task, self.cancel)))
                    while len(inflight) >= 2 * workers:
                        done, future = inflight.popleft()
                        self.reporter.advance(future.result(), done.key)
                while inflight:
                    done, future = inflight.popleft()
                    self.reporter.advance(future.result(), done.key)
            except BaseException:
                self.cancel.set()
                for _, future in inflight:
                    future.cancel()
                raise

    def commit(self) -> list[OutputResult]:
        by_output: dict[int, OutputResult] = {}
        for sink, owner in self.sinks:
            if isinstance(owner, CacheEntry):
                sink.commit()
                continue
            try:
                sink.commit()
                status = "written"
            except OutputError as exc:
                if not isinstance(owner, FileOutput) or not _made_meanwhile(owner, exc):
                    raise
                status = "up-to-date"
            tensors = None
            if isinstance(owner, MemoryOutput):
                assert isinstance(sink, MemorySink)
                tensors, status = sink.result, "memory"
            self.reporter.note(f"{status} {owner.label}")
            changed = owner.changes if isinstance(owner, FileOutput) and status == "written" else ()
            by_output[id(owner)] = OutputResult(
                owner.name, owner.path, status, owner.nbytes, len(owner.layout), tensors, changed
            )
        results: list[OutputResult] = []
        for output in self.plan.outputs:
            found = by_output.get(id(output))
            if found is None:
                status = "up-to-date" if id(output) in self.made_meanwhile else output.status
                found = OutputResult(
                    output.name, output.path, status, output.nbytes, len(output.layout)
                )
            results.append(found)
        return results


def _made_meanwhile(output: FileOutput, exc: OutputError) -> bool:
    """Whether ``exc`` says the output's file appeared while it was being written, and that
    file records this output's address: another run made the same output first."""
    if output.key is None:
        return False
    if not any(d.code == "exists" for d in exc.diagnostics):
        return False
    return existing_output_key(output.path) == output.key


def _source_node(output: OutputPlan, item: OutputKey) -> Node | None:
    if item.source == "position_ids":
        return None
    if item.source == "vae":
        assert output.vae is not None
        return output.vae
    return output.node


def execute(
    plan: Plan,
    *,
    reporter: Reporter | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run ``plan``; returns what was written (see the module docstring)."""
    report = reporter or NullReporter()
    run = _Run(plan, report, cancel or threading.Event())
    start = time.perf_counter()
    for entry in plan.cache:
        if entry.status == "hit":
            report.note(f"cache hit: {entry.node.label}")
    ok = False
    threads = torch.get_num_threads()
    if run.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        run.open_sinks()
        evaluator = Evaluator(
            device=run.device,
            chunk=plan.chunk,
            hits=run.hits,
            check_finite=plan.nan == "error",
        )
        evaluator.stats = run.statistics(evaluator)
        run.merge(evaluator)
        outputs = run.commit()
        ok = True
    except BaseException:
        run.abort()
        raise
    finally:
        torch.set_num_threads(threads)
        plan.close()
        report.finish(ok)
    return RunResult(
        tuple(outputs),
        tuple(e.node.label for e in plan.cache if e.status == "hit"),
        tuple(e.node.label for e in plan.stores),
        plan.bytes_read,
        plan.bytes_written,
        time.perf_counter() - start,
        plan.warnings,
        tuple(run.removed),
    )
