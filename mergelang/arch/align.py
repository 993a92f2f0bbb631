"""How the keys of several input checkpoints line up, decided before any tensor is read.

For every key of the union of the inputs (the first input's order, then keys new in later
inputs) a :class:`KeyPlan` says what the output gets:

``merge``
    every input has the key with the same shape: the merge method combines them.
``copy``
    only some inputs have it: the output takes it from the first input that has it. Keys
    that exist in one model only are kept rather than dropped (as SuperMerger keeps B-only
    keys), so merging a file that lacks optional text-encoder keys loses nothing.
``merge_channels``
    the key the architecture's variants differ by (``input_blocks.0.0.weight`` of an
    inpainting U-Net, 9 input channels, or an instruct-pix2pix one, 8) next to the normal
    variant's (4): the normal variant's channels (``0:4`` of dim 1) are merged, the
    remaining channels come from the first input that has them, and the output has its
    shape.
``skip_merge``
    the key is never merged (:meth:`Architecture.block_of` gives None: EMA copies, schedule
    buffers, markers, ``position_ids``, parts the block convention leaves alone): the output
    takes it from the first input that has it, whatever the other inputs hold.

Any other difference in shape, and inputs of different architectures, are errors naming the
key, the files and their shapes (or architectures).

Keys are planned under the architecture's all-in-one names: a diffusion-only file's bare
denoiser keys (``double_blocks.0.img_attn.qkv.weight``) are read as their prefixed names
(:func:`~mergelang.arch.layout.canonical_names`), so a bare file lines up with an all-in-one
checkpoint; the components it lacks (text encoders, VAE) are ``copy`` keys of the inputs that
have them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mergelang.arch.architecture import Architecture, get_architecture
from mergelang.arch.conventions import DEFAULT_CONVENTION, Convention, get_convention
from mergelang.arch.detect import Detected, detect
from mergelang.arch.layout import canonical_names
from mergelang.errors import CheckpointError

Action = Literal["merge", "copy", "merge_channels", "skip_merge"]
ACTIONS: tuple[Action, ...] = ("merge", "copy", "merge_channels", "skip_merge")


@dataclass(frozen=True)
class KeyPlan:
    """What the output does with one key.

    ``present_in`` lists the indices of the inputs that have the key; ``shape`` is the output
    shape. ``source`` is the input the output copies from (``copy``, ``skip_merge``) or that
    supplies the channels beyond ``merged_channels`` (``merge_channels``); for ``merge`` it is
    the first input. ``block`` is the key's merge block (None when never merged).
    """

    key: str
    present_in: tuple[int, ...]
    shape: tuple[int, ...]
    action: Action
    block: str | None = None
    source: int = 0
    merged_channels: int | None = None


@dataclass(frozen=True)
class Alignment:
    """The plan for every key of the inputs, with each input's detected architecture."""

    arch: Architecture
    convention: Convention
    paths: tuple[str, ...]
    detected: tuple[Detected, ...]
    plans: tuple[KeyPlan, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {p.key: i for i, p in enumerate(self.plans)})

    def __iter__(self) -> Iterator[KeyPlan]:
        return iter(self.plans)

    def __len__(self) -> int:
        return len(self.plans)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def plan(self, key: str) -> KeyPlan:
        """The plan for ``key``; ``KeyError`` when no input has it."""
        return self.plans[self._index[key]]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.plans)

    def counts(self) -> dict[Action, int]:
        """Number of keys per action (every action listed, zeros included)."""
        counts: dict[Action, int] = dict.fromkeys(ACTIONS, 0)
        for plan in self.plans:
            counts[plan.action] += 1
        return counts

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p.key: p.shape for p in self.plans}


def align(
    inputs: Sequence[tuple[str, Mapping[str, Sequence[int]]]],
    arch: Architecture | str | None = None,
    *,
    convention: Convention | str = DEFAULT_CONVENTION,
) -> Alignment:
    """Line up the keys of ``inputs`` (``(path, key -> shape)`` pairs) for a merge.

    ``arch`` is the architecture every input must be (detected from the first input when
    None). Raises :class:`CheckpointError` with code ``architecture-mismatch`` when the inputs
    are of different architectures, ``shape-mismatch`` when a key's shapes differ in a way no
    rule covers, and the detection error of an input whose layout is unknown.
    """
    if not inputs:
        raise ValueError("align needs at least one input")
    conv = get_convention(convention)
    paths = tuple(path for path, _ in inputs)
    tables = [{k: tuple(int(d) for d in s) for k, s in shapes.items()} for _, shapes in inputs]
    detected = tuple(detect(table, path=path) for path, table in zip(paths, tables, strict=True))
    target = get_architecture(arch) if arch is not None else detected[0].arch
    _check_architectures(paths, detected, target, explicit=arch is not None)
    canonical = [_canonical(target, table) for table in tables]
    plans = align_tables(paths, canonical, target, convention=conv)
    return Alignment(target, conv, paths, detected, plans)


def align_tables(
    labels: Sequence[str],
    tables: Sequence[Mapping[str, tuple[int, ...]]],
    arch: Architecture,
    *,
    convention: Convention | str = DEFAULT_CONVENTION,
) -> tuple[KeyPlan, ...]:
    """The key plans of :func:`align` for inputs already known to be ``arch``.

    ``tables`` map each key to its shape (a tuple of ints); ``labels`` name the inputs in
    errors. The planner uses this for intermediate results, whose architecture is settled.
    """
    conv = get_convention(convention)
    union: dict[str, None] = {}
    for table in tables:
        union.update(dict.fromkeys(table))
    plans: list[KeyPlan] = []
    mismatches: list[tuple[str, int, int]] = []
    for key in union:
        present = tuple(i for i, table in enumerate(tables) if key in table)
        block = arch.block_of(key, conv)
        first = present[0]
        shape = tables[first][key]
        if block is None:
            plans.append(KeyPlan(key, present, shape, "skip_merge", None, first))
            continue
        if len(present) < len(tables):
            plans.append(KeyPlan(key, present, shape, "copy", block, first))
            continue
        other = next((i for i in present if tables[i][key] != shape), None)
        if other is None:
            plans.append(KeyPlan(key, present, shape, "merge", block, first))
            continue
        channel_plan = _channel_plan(arch, key, present, tables, block, labels)
        if channel_plan is None:
            mismatches.append((key, first, other))
        else:
            plans.append(channel_plan)
    if mismatches:
        raise _shape_error(mismatches, labels, tables)
    return tuple(plans)


def _canonical(arch: Architecture, table: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``table`` under the architecture's all-in-one key names (a bare file's denoiser keys
    prefixed), so files of both layouts line up."""
    names = canonical_names(arch, table)
    if not names:
        return table
    return {names.get(key, key): shape for key, shape in table.items()}


def _check_architectures(
    paths: Sequence[str], detected: Sequence[Detected], target: Architecture, *, explicit: bool
) -> None:
    if all(d.arch == target for d in detected):
        return
    listing = ", ".join(
        f"{p} is {d.arch.name} ({d.arch.title})" for p, d in zip(paths, detected, strict=True)
    )
    culprit = next(p for p, d in zip(paths, detected, strict=True) if d.arch != target)
    if explicit:
        message = f"every input must be {target.name} ({target.title}): {listing}"
    else:
        message = f"the inputs are of different architectures: {listing}"
    other = next(d.arch for d in detected if d.arch != target)
    raise CheckpointError(
        culprit,
        message,
        code="architecture-mismatch",
        hint=relatives_hint(target, other)
        or "merge checkpoints of one architecture (SD1 with SD1, SDXL with SDXL)",
    )


def relatives_hint(first: Architecture, second: Architecture) -> str | None:
    """For two architectures with the same block scheme (Flux.1 dev and schnell, SD3 and
    SD3.5 Medium), what tells them apart: the denoiser keys only one of them has. Their
    merges are refused rather than silently taking those keys from one input."""
    if first.scheme != second.scheme:
        return None
    mine = set(first.denoiser.spec.layout())
    theirs = set(second.denoiser.spec.layout())
    parts = []
    for arch, only in ((first, mine - theirs), (second, theirs - mine)):
        if only:
            heads = sorted({_head(key) for key in only})
            shown = ", ".join(heads[:3]) + (", ..." if len(heads) > 3 else "")
            parts.append(
                f"{arch.name} has {len(only)} {arch.denoiser.title} keys the other lacks ({shown})"
            )
    if not parts:
        return None
    return (
        f"{first.title} and {second.title} share their blocks but not their keys: "
        + "; ".join(parts)
        + "; a merge would copy those keys from one input unmerged, so mergelang refuses it"
    )


def _head(key: str) -> str:
    """``guidance_in.in_layer.weight`` -> ``guidance_in.*``; numbered blocks keep their
    number out (``joint_blocks.N.x_block.attn2.*``)."""
    parts = key.split(".")
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join((parts[0], "N", *parts[2:-1])) + ".*"
    return parts[0] + ".*"


def _channel_plan(
    arch: Architecture,
    key: str,
    present: tuple[int, ...],
    tables: Sequence[Mapping[str, tuple[int, ...]]],
    block: str,
    paths: Sequence[str],
) -> KeyPlan | None:
    """The ``merge_channels`` plan for a normal variant's key next to a wider variant's
    (inpainting or instruct-pix2pix input convolution), or None."""
    spec = arch.variants
    if spec is None or key not in (spec.key, spec.key.removeprefix(arch.denoiser.prefix)):
        return None
    dim = spec.dim
    shapes = [tables[i][key] for i in present]
    base = shapes[0]
    if any(len(s) != len(base) or len(s) <= dim for s in shapes):
        return None
    if any(s[:dim] != base[:dim] or s[dim + 1 :] != base[dim + 1 :] for s in shapes):
        return None
    channels = {s[dim] for s in shapes}
    normal = spec.normal_channels
    wider = channels - {normal}
    if normal not in channels or len(wider) != 1:
        by_variant = {
            variant: paths[i]
            for i, s in zip(present, shapes, strict=True)
            if (variant := spec.of_channels(s[dim])) is not None and variant != spec.normal
        }
        if len(by_variant) >= 2:
            (first, first_path), (second, second_path) = sorted(
                by_variant.items(), key=lambda item: list(spec.channels).index(item[0])
            )[:2]
            title = spec.component_title
            raise CheckpointError(
                second_path,
                f"cannot merge {_article(spec.titles[first])} {spec.titles[first]} {title} "
                f"({first_path}, {spec.channels[first]} input channels) with "
                f"{_article(spec.titles[second])} {spec.titles[second]} one "
                f"({second_path}, {spec.channels[second]} input channels)",
                code="shape-mismatch",
                key=key,
            )
        return None
    (extra,) = wider
    source = next(i for i, s in zip(present, shapes, strict=True) if s[dim] == extra)
    return KeyPlan(
        key,
        present,
        tables[source][key],
        "merge_channels",
        block,
        source,
        merged_channels=normal,
    )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _shape_error(
    mismatches: Sequence[tuple[str, int, int]],
    paths: Sequence[str],
    tables: Sequence[Mapping[str, tuple[int, ...]]],
) -> CheckpointError:
    key, first, other = mismatches[0]
    message = (
        f"tensor shapes differ: {paths[first]} has {list(tables[first][key])} but "
        f"{paths[other]} has {list(tables[other][key])}"
    )
    if len(mismatches) > 1:
        more = len(mismatches) - 1
        message += f" ({more} more key{'s' if more > 1 else ''} differ in shape)"
    return CheckpointError(paths[other], message, code="shape-mismatch", key=key)
