"""From a checked recipe to a :class:`~mergelang.plan.plan.Plan`, reading headers only.

1. **Inputs.** Every input is resolved once (:func:`~mergelang.plan.inputs.resolve_inputs`:
   found, opened, its format sniffed, its header read; a pickle file is loaded with the
   weights-only loader) and :func:`~mergelang.plan.input_checks.check_inputs` checks the
   recipe against the architectures found, so a 19-value vector given to SD1 models, or SD1
   merged with SDXL, is reported at its place in the recipe before any tensor is read. Each
   file becomes one :class:`~mergelang.plan.inputs.InputHandle`, shared by the names that
   refer to it; its open descriptor serves the rest of the run.
2. **Graph.** Every model expression becomes a :class:`~mergelang.plan.graph.Node`; structurally
   equal expressions are one node. Weights are resolved for the architecture here.
3. **Keys.** Each node's per-key table (:class:`~mergelang.plan.graph.KeySlot`) is derived from its
   children's, by the alignment rules of :mod:`mergelang.arch.align`.
4. **Outputs.** Each ``save`` gets its file path, save options and exact key layout. A
   relative path is taken from ``out_dir`` (else the recipe's folder); symlinked folders on
   the way are followed. Two saves naming one file are an error.
5. **Cache.** :func:`mergelang.plan.cache.decide` gives content addresses and decides hits,
   stores and up-to-date outputs (see :mod:`mergelang.plan.cache`), and returns the
   finished plan.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

from mergelang.arch import Architecture, get_architecture
from mergelang.arch.align import align_tables
from mergelang.arch.layout import FileLayout, canonical_names, file_layout
from mergelang.arch.prediction import (
    PREDICTION_HINT,
    PREDICTION_MARKERS,
    Prediction,
    marker_keys,
    prediction_of,
)
from mergelang.block_weights import BlockWeights, WeightsError
from mergelang.check.checked_recipe import (
    CheckedRecipe,
    InputRef,
    LinearCombination,
    MethodCall,
    ModelExpr,
    SaveTarget,
    StepRef,
)
from mergelang.errors import (
    CheckpointError,
    Diagnostic,
    MergelangError,
    RecipeError,
    Span,
    UsageError,
    source_lines,
)
from mergelang.io.dtypes import is_float_code
from mergelang.io.file_formats import FILE_FORMATS
from mergelang.io.hashing import default_cache_dir
from mergelang.io.locate import ModelLocator
from mergelang.io.save_options import OutputKey, SaveOptions, output_layout, with_markers
from mergelang.methods.registry import get_method
from mergelang.plan.file_layouts import bake_components, baked_component, lay_out
from mergelang.plan.graph import KeySlot, LinearNode, LoadNode, MethodNode, Node, walk
from mergelang.plan.input_checks import InputsReport, check_inputs
from mergelang.plan.inputs import (
    InputHandle,
    KeyMeta,
    ResolvedInputs,
    ResolvedSource,
    resolve_inputs,
)
from mergelang.plan.output_checks import output_warnings
from mergelang.plan.plan import (
    CUDA_CHUNK,
    DEFAULT_CHUNK,
    FileOutput,
    MemoryOutput,
    OutputPlan,
    Plan,
)
from mergelang.plan.step_order import steps_in_dependency_order

if TYPE_CHECKING:
    import torch

    from mergelang.plan.cache import HashingProgress

__all__ = ["PlanOptions", "build_plan"]

MemoryInput = Mapping[str, "torch.Tensor"]


@dataclass(frozen=True)
class PlanOptions:
    """How to plan a run.

    ``out_dir``: where relative output paths go (default: the recipe's folder).
    ``force``: replace existing files that this save did not make; ``rebuild``: remake
    outputs even when they are up to date.
    ``inputs``: tensors for some model names, in memory, instead of their files.
    ``targets``: instead of the recipe's saves, return these in memory: step or model names,
    or indices into the recipe's saves.
    ``dtype``: the dtype of in-memory results (``None``: each key's natural dtype).
    ``nan``: ``error`` refuses NaN/infinite input values in a merge, ``keep`` merges them.
    ``chunk``: elements per chunk (default: :data:`~mergelang.plan.plan.DEFAULT_CHUNK` on CPU,
    :data:`~mergelang.plan.plan.CUDA_CHUNK` on a GPU).
    """

    out_dir: Path | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    force: bool = False
    rebuild: bool = False
    device: str = "cpu"
    workers: int | None = None
    chunk: int | None = None
    inputs: Mapping[str, MemoryInput] | None = None
    targets: tuple[str | int, ...] | None = None
    dtype: str | None = None
    nan: str = "error"
    hash_during_run: bool = False
    """Hash inputs new to the hash cache while the merge streams rather than before it,
    where that is possible (see :func:`mergelang.plan.cache.decide`): a run's choice."""
    progress: HashingProgress | None = field(default=None, compare=False)
    """Told the bytes of the inputs hashed while planning (a ``hashing`` phase)."""


def build_plan(
    checked: CheckedRecipe,
    locator: ModelLocator,
    options: PlanOptions = PlanOptions(),
    *,
    hash_inputs: bool = True,
) -> Plan:
    """Plan ``checked``; see the module docstring. ``hash_inputs=False`` uses only content
    hashes already in the hash cache (``mergelang plan``): cache decisions that need an
    unhashed input are then ``unknown``. The plan holds its inputs open until
    :meth:`~mergelang.plan.plan.Plan.close`."""
    from mergelang.plan.cache import decide

    planner = _Planner(checked, locator, options)
    inputs = resolve_inputs(checked, locator, memory=options.inputs, load_pickles=True)
    try:
        plan = decide(
            planner.build(inputs),
            hash_inputs=hash_inputs,
            force=options.force,
            use_cache=options.use_cache,
            hash_during_run=options.hash_during_run,
            rebuild=options.rebuild,
            progress=options.progress,
        )
    except BaseException:
        inputs.close()
        raise
    if options.workers is None and _streams_plainly(plan):
        plan = dataclasses.replace(plan, workers=max(1, plan.workers - 1))
    held = {id(h.source) for h in plan.inputs}
    for file in inputs.files():
        if id(file) not in held:
            file.close()
    return plan


def _default_chunk(device: str) -> int:
    return DEFAULT_CHUNK if device == "cpu" else CUDA_CHUNK


def _default_workers(device: str) -> int:
    if device != "cpu":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _streams_plainly(plan: Plan) -> bool:
    """Whether every value is computed chunk by chunk (elementwise methods only) and every
    file output is plain safetensors (no per-tensor quantisation). Such a merge is bound by
    memory, the disk and the interpreter's lock rather than by arithmetic: on two cores a
    second worker thread added a sixth to its CPU time and no speed (measured), so by default
    it runs with one worker thread fewer than the cores allow, which leaves a core to the
    hashing of new inputs and to the kernel's writeback (a default, never a ``workers``
    asked for). Merges that compute whole keys (TIES, DARE, ...) or quantise their outputs
    keep every worker: a second one made a TIES merge a tenth faster on the same machine."""
    computed = [n for n in plan.needed() if not isinstance(n, LoadNode)]
    plain = FILE_FORMATS["safetensors"]
    return all(n.elementwise for n in computed) and all(
        o.file_format is plain for o in plan.outputs if isinstance(o, FileOutput)
    )


class _Planner:
    def __init__(self, checked: CheckedRecipe, locator: ModelLocator, options: PlanOptions):
        if options.nan not in ("error", "keep"):
            raise UsageError(f"unknown nan policy {options.nan!r}", hint="use error or keep")
        if options.out_dir is not None and _blocking_file(options.out_dir / "x") is not None:
            raise UsageError(
                f"--out-dir {options.out_dir}: not a folder (a file is in the way)",
                hint="give a folder, or a path where one can be created",
            )
        self.checked = checked
        self.locator = locator
        self.options = options
        self.lines = source_lines(checked.recipe.source or "")
        self.handles: dict[str, InputHandle] = {}
        self.by_identity: dict[str, InputHandle] = {}
        self.nodes: dict[str, Node] = {}
        # Equal key slots and equal output layouts are shared: a sweep of a thousand steps
        # and saves over one model has one table of each, not a thousand (issue 14, item 16).
        self._slots: dict[KeySlot, KeySlot] = {}
        self._layouts: dict[tuple[OutputKey, ...], tuple[OutputKey, ...]] = {}
        self.step_nodes: dict[str, Node] = {}
        self.steps = {s.name: s for s in checked.model_steps}

    # -- errors located in the recipe

    def _diagnostic(
        self,
        message: str,
        code: str,
        span: Span,
        hint: str | None = None,
        key: str | None = None,
    ) -> Diagnostic:
        line = self.lines[span.line - 1] if 0 < span.line <= len(self.lines) else None
        return Diagnostic(message, code, self.checked.path, span, hint, source_line=line, key=key)

    def _fail(self, message: str, code: str, span: Span, hint: str | None = None) -> RecipeError:
        return RecipeError([self._diagnostic(message, code, span, hint)])

    def _located(self, exc: MergelangError, prefix: str, span: Span) -> RecipeError:
        """``exc`` reported at ``span`` of the recipe, keeping the file each diagnostic names
        (in the message, since the diagnostic's place becomes the recipe) and its key."""
        found = []
        for d in exc.diagnostics:
            named = d.path is not None and d.path != self.checked.path and d.path not in d.message
            message = f"{prefix}{d.path}: {d.message}" if named else f"{prefix}{d.message}"
            found.append(self._diagnostic(message, d.code, span, d.hint, key=d.key))
        return RecipeError(found)

    # -- inputs

    def build(self, inputs: ResolvedInputs) -> Plan:
        """The plan before its cache decisions (see :func:`mergelang.plan.cache.decide`)."""
        report = check_inputs(self.checked, inputs, cache_dir=self.options.cache_dir)
        self._open_handles(inputs, report)
        outputs = self._outputs()
        finished = [o.node for o in outputs] + [o.vae for o in outputs if o.vae is not None]
        finished += [n for o in outputs for _, n in o.components]
        for node in walk(finished):
            node.seal()
        workers = self.options.workers or _default_workers(self.options.device)
        return Plan(
            self.checked,
            tuple(self.by_identity.values()),
            tuple(outputs),
            (),
            self.options.cache_dir if self.options.cache_dir is not None else default_cache_dir(),
            chunk=self.options.chunk or _default_chunk(self.options.device),
            workers=workers,
            device=self.options.device,
            nan=self.options.nan,
            warnings=(*report.warnings, *output_warnings(self.checked, outputs)),
            force=self.options.force,
        )

    def _open_handles(self, inputs: ResolvedInputs, report: InputsReport) -> None:
        """One handle per distinct input, named after the first name that refers to it; its
        architecture is the first one detected under any of its names."""
        found: list[tuple[str, ResolvedSource, str | None, str | None]] = []
        for name, info in report.inputs.items():
            found.append((name, inputs.models[name], info.architecture, info.variant))
        for ref in report.vaes:
            found.append((f"vae:{ref}", inputs.vaes[ref], None, None))
        detected: dict[str, tuple[str, str]] = {}
        for _, resolved, arch, variant in found:
            if arch is not None:
                detected.setdefault(_identity_of(resolved), (arch, variant or "normal"))
        for name, resolved, _, _ in found:
            identity = _identity_of(resolved)
            handle = self.by_identity.get(identity)
            if handle is None:
                arch, variant = detected.get(identity, (None, "normal"))
                handle = _handle(name, resolved, arch, variant)
                self.by_identity[identity] = handle
            self.handles[name] = handle

    # -- the graph

    def _intern(self, node: Node) -> Node:
        found = self.nodes.get(node.identity)
        if found is not None:
            return found
        node.convention = self.checked.convention
        self.nodes[node.identity] = node
        self._fill_keys(node)
        return node

    def node_of(self, expr: ModelExpr) -> Node:
        if isinstance(expr, InputRef):
            handle = self.handles[expr.model]
            assert handle.architecture is not None
            node = self._intern(LoadNode(handle, get_architecture(handle.architecture)))
            if expr.model not in node.names:
                node.add_name(expr.model)
            return node
        if isinstance(expr, StepRef):
            found = self.step_nodes.get(expr.step)
            if found is None:
                # The steps it uses first, deepest first: a long chain never recurses.
                for name in steps_in_dependency_order(expr.step, self.steps, self.step_nodes):
                    self._step_node(name)
                found = self.step_nodes[expr.step]
            return found
        if isinstance(expr, MethodCall):
            return self._method_node(expr)
        return self._linear_node(expr)

    def _step_node(self, name: str) -> None:
        """Build the node of step ``name``, whose own steps are built already."""
        step = self.steps[name]
        assert not isinstance(step.value, BlockWeights)
        found = self.node_of(step.value)
        found.add_name(name.split("@", 1)[0] if "@" in name else name)
        found.cache_marked = found.cache_marked or step.cached
        if found.span.line == 0:
            found.span = step.span
        self.step_nodes[name] = found

    def _method_node(self, call: MethodCall) -> Node:
        spec = get_method(call.method)
        if spec is None:
            raise self._fail(f"unknown merge method {call.method!r}", "unknown-method", call.span)
        children: list[Node] = []
        for bound in call.args:
            param = spec.param(bound.param)
            if param is None or param.kind != "model":
                continue
            values = bound.value if isinstance(bound.value, tuple) else (bound.value,)
            children += [self.node_of(v) for v in values]  # type: ignore[arg-type]
        arch = children[0].arch
        weights = {}
        numbers: dict[str, object] = {}
        for bound in call.args:
            param = spec.param(bound.param)
            if param is None or param.kind == "model" or param.base_of is not None:
                continue
            if param.kind == "weights":
                value = bound.value
                if isinstance(value, int | float) and not isinstance(value, bool):
                    value = BlockWeights.scalar(float(value))
                assert isinstance(value, BlockWeights)
                base_param = spec.base_param_for(param.name)
                base = None if base_param is None else call.arg(base_param.name)
                try:
                    weights[param.name] = spec.resolve_weights(
                        param.name,
                        value,
                        arch.scheme,
                        base=None if base is None else float(base),  # type: ignore[arg-type]
                    )
                except WeightsError as exc:
                    span = bound.span if bound.span.line else call.span
                    raise self._fail(
                        f"{exc.message} (with {arch.name} models)",
                        "weights-architecture",
                        span,
                        exc.hint,
                    ) from None
            elif bound.value is not None:
                numbers[param.name] = bound.value
        node = MethodNode(spec, tuple(children), arch, weights, numbers, span=call.span)
        return self._intern(node)

    def _linear_node(self, expr: LinearCombination) -> Node:
        children = tuple(self.node_of(term.model) for term in expr.terms)
        arch = children[0].arch
        resolved = []
        for term in expr.terms:
            try:
                resolved.append(term.weight.resolve(arch.scheme, base=None))
            except WeightsError as exc:
                span = term.span if term.span.line else expr.span
                raise self._fail(
                    f"model arithmetic with {arch.name} models: {exc.message}",
                    "weights-architecture",
                    span,
                    exc.hint,
                ) from None
        if len(children) == 1 and _all_one(resolved[0], arch):
            return children[0]
        return self._intern(LinearNode(children, tuple(resolved), arch, span=expr.span))

    def _fill_keys(self, node: Node) -> None:
        if isinstance(node, LoadNode):
            node.keys = {
                k: KeySlot(m.shape, m.dtype, "read") for k, m in node.handle.header.items()
            }
            return
        children = node.children
        tables = [{k: s.shape for k, s in c.keys.items()} for c in children]
        labels = [c.label for c in children]
        try:
            plans = align_tables(labels, tables, node.arch, convention=self.checked.convention)
        except CheckpointError as exc:
            raise self._located(exc, f"{node.describe()}: ", node.span) from None
        keys: dict[str, KeySlot] = {}
        for p in plans:
            slots = [children[i].keys[p.key] for i in p.present_in]
            if p.action == "merge" and _identity(node, p.block, p.key):
                # 1.0 * x is x, bit for bit: the key is passed through, never converted.
                keys[p.key] = KeySlot(p.shape, slots[0].dtype, "pass", p.block, 0)
            elif p.action == "merge" and all(is_float_code(s.dtype) for s in slots):
                keys[p.key] = KeySlot(p.shape, slots[0].dtype, "compute", p.block)
            elif p.action == "merge_channels" and all(is_float_code(s.dtype) for s in slots):
                keys[p.key] = KeySlot(
                    p.shape, slots[0].dtype, "channels", p.block, p.source, p.merged_channels
                )
            else:
                dtype = children[p.source].keys[p.key].dtype
                keys[p.key] = KeySlot(p.shape, dtype, "pass", p.block, p.source)
        node.keys = {key: self._slots.setdefault(slot, slot) for key, slot in keys.items()}

    def _shared_layout(self, layout: list[OutputKey]) -> tuple[OutputKey, ...]:
        """``layout`` as a tuple, the one an earlier output with an equal layout has."""
        found = tuple(layout)
        return self._layouts.setdefault(found, found)

    # -- outputs

    def _outputs(self) -> list[OutputPlan]:
        targets = self.options.targets
        if targets is not None:
            return [self._memory_output(name) for name in targets]
        files = [self._save_output(save) for save in self.checked.saves]
        self._check_same_files(files)
        outputs: list[OutputPlan] = list(files)
        return outputs

    def _check_same_files(self, outputs: list[FileOutput]) -> None:
        """Two saves whose paths differ in text but name one file (an absolute and a
        relative path, a symlinked folder, ``--out-dir``) are an error at the later one."""
        seen: dict[str, FileOutput] = {}
        problems: list[Diagnostic] = []
        for output in outputs:
            folder = os.path.realpath(output.path.parent)
            identity = os.path.normcase(os.path.join(folder, output.path.name))
            first = seen.setdefault(identity, output)
            if first is output:
                continue
            problems.append(
                self._diagnostic(
                    f"'{output.save.path}' is the same file as '{first.save.path}', "
                    f"saved on line {first.save.span.line} ({output.path})",
                    "duplicate-save",
                    output.save.span,
                    "each output needs its own file",
                )
            )
        if problems:
            raise RecipeError(problems)

    def _memory_output(self, target: str | int) -> MemoryOutput:
        """An in-memory result: a save of the recipe (with that save's options; ``dtype``
        overrides its dtype), or a named step or input with every key kept."""
        if isinstance(target, int):
            save = self.checked.saves[target]
            if self.options.dtype is not None:
                save = dataclasses.replace(save, dtype=self.options.dtype)
            output = self._save_output(save)
            return MemoryOutput(
                output.node,
                output.options,
                output.layout,
                output.name,
                save,
                output.vae,
                output.components,
            )
        ref: ModelExpr = InputRef(target) if target in self.checked.models else StepRef(target)
        node = self.node_of(ref)
        options = SaveOptions(dtype=self.options.dtype, ema="keep")
        layout = output_layout(node.keys, node.arch, options, None)
        try:
            layout, _ = lay_out(node, options, layout, target)
        except MergelangError as exc:
            raise self._located(exc, "", node.span) from None
        return MemoryOutput(node, options, self._shared_layout(layout), target)

    def _save_output(self, save: SaveTarget) -> FileOutput:
        node = self.node_of(save.model)
        vae_node: LoadNode | None = None
        vae_path: Path | None = None
        if save.vae is not None:
            handle = self.handles.get(save.vae.name) or self.handles.get(f"vae:{save.vae.ref}")
            if handle is None or handle.path is None:
                raise self._fail("the VAE file was not found", "model-not-found", save.span)
            vae_path = handle.path
            vae_node = LoadNode(handle, node.arch)
            self._fill_keys(vae_node)
        options = dataclasses.replace(save.options, vae=vae_path)
        vae_header = None if vae_node is None else vae_node.handle.header
        vaes = node.arch.components_with("vae")
        components: list[tuple[str, LoadNode]] = []
        try:
            layout: list[OutputKey] = output_layout(
                node.keys,
                node.arch,
                options,
                vae_header,
                vae_prefix=vaes[0].prefix if vaes else None,
            )
            files = []
            for option, source in save.components:
                comp = baked_component(node.arch, option, save.path)
                found = self.handles.get(source.name) or self.handles.get(f"vae:{source.ref}")
                if found is None:
                    raise self._fail(
                        f"the {option} file was not found", "model-not-found", save.span
                    )
                baked = LoadNode(found, node.arch)
                self._fill_keys(baked)
                components.append((comp.name, baked))
                files.append((comp, found.header, found.label))
            layout = bake_components(node.arch, layout, files, options)
            layout, notes = lay_out(node, options, layout, save.path, baked=bool(files))
        except RecipeError:
            raise
        except MergelangError as exc:
            raise self._located(exc, "", save.span) from None
        prediction = self._prediction(node, save)
        if prediction is not None:
            layout = with_markers(layout, PREDICTION_MARKERS, marker_keys(prediction))
        path = Path(save.path).expanduser()
        if not path.is_absolute():
            base = self.options.out_dir or self.checked.base_dir or Path.cwd()
            path = base / path
        blocking = _blocking_file(path)
        if blocking is not None:
            raise self._fail(
                f"cannot save to '{save.path}': {blocking} is a file, not a folder",
                "output-folder-not-a-folder",
                save.span,
            )
        return FileOutput(
            save,
            Path(os.path.abspath(path)),
            node,
            options,
            self._shared_layout(layout),
            vae=vae_node,
            name=save.path,
            notes=notes,
            components=tuple(components),
            prediction=prediction,
        )

    def _prediction(self, node: Node, save: SaveTarget) -> Prediction | None:
        """The output's prediction: the save's, or its inputs' common one (the input checks
        refused inputs that differ); ``None`` when the architecture marks none."""
        if not node.arch.prediction_markers:
            return None
        if save.prediction != "auto":
            return cast(Prediction, save.prediction)
        loads = [n for n in walk([node]) if isinstance(n, LoadNode)]
        found = {prediction_of(n.handle.header, n.handle.metadata) for n in loads}
        if len(found) != 1:
            raise self._fail(
                "the inputs of this save differ in prediction: " + ", ".join(sorted(found)),
                "prediction-mismatch",
                save.span,
                PREDICTION_HINT,
            )
        return found.pop()


def _identity_of(resolved: ResolvedSource) -> str:
    """What makes two names one input: the file's real path, or the model's name."""
    if resolved.path is not None:
        return str(resolved.path.resolve())
    return f"<memory:{resolved.source.name}>"


def _handle(
    name: str, resolved: ResolvedSource, architecture: str | None, variant: str
) -> InputHandle:
    """The plan's handle of a resolved input; a model's keys are renamed to the
    architecture's all-in-one names (:func:`~mergelang.arch.layout.canonical_names`), so
    every later stage sees one naming whatever the file's layout."""
    if resolved.memory is not None:
        reader = resolved.memory
        stored: Mapping[str, KeyMeta] = {k: reader.info(k) for k in reader.keys()}  # noqa: SIM118
    else:
        assert resolved.file is not None
        stored = resolved.file.metas()
    layout: FileLayout | None = None
    file_keys: dict[str, str] = {}
    header = stored
    if architecture is not None:
        arch = get_architecture(architecture)
        layout = file_layout(arch, stored)
        renamed = canonical_names(arch, stored)
        if renamed:
            header = {renamed.get(k, k): meta for k, meta in stored.items()}
            file_keys = {new: old for old, new in renamed.items()}
    if resolved.memory is not None:
        reader = resolved.memory
        return InputHandle(
            name=name,
            path=None,
            format="memory",
            header=header,
            metadata=reader.metadata,
            source=reader,
            span=resolved.source.span,
            architecture=architecture,
            variant=variant,
            layout=layout,
            file_keys=MappingProxyType(file_keys),
        )
    file = resolved.file
    assert file is not None and resolved.path is not None
    return InputHandle(
        name=name,
        path=resolved.path,
        format=file.format,
        header=header,
        metadata=file.metadata,
        source=file,
        span=resolved.source.span,
        architecture=architecture,
        variant=variant,
        layout=layout,
        file_keys=MappingProxyType(file_keys),
    )


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (so the output's
    folder cannot be created), else ``None``."""
    for folder in Path(os.path.abspath(path)).parents:
        if os.path.lexists(folder):
            return None if folder.is_dir() else folder
    return None


def _identity(node: Node, block: str | None, key: str) -> bool:
    """Whether ``node`` is ``1.0 * child`` at ``key`` of ``block`` (one term, weight exactly
    1 there, elemental entries considered)."""
    if not isinstance(node, LinearNode) or len(node.weights) != 1 or block is None:
        return False
    return node.weights[0].value(block, key) == 1.0


def _all_one(weights: object, arch: Architecture) -> bool:
    from mergelang.block_weights import ResolvedWeights

    assert isinstance(weights, ResolvedWeights)
    if weights.elemental:
        return False
    return weights.base == 1.0 and all(weights[b] == 1.0 for b in arch.blocks)
