"""Sparse task arithmetic: TIES-merging and DARE.

Both methods work on task vectors: the difference ``X_i - B`` between each fine-tuned model
``X_i`` and the base model ``B`` they were all trained from. They thin each task vector out
before adding the combination back onto the base, so that several fine-tunes interfere less
with one another than in a plain sum of differences.

- :func:`ties` (TIES-merging: trim, elect sign, disjoint mean) keeps the largest entries of
  each task vector, per key, so it needs each key's whole tensors (not elementwise).
- :func:`dare` (Drop And REscale) drops random entries and rescales the rest. Its random
  mask depends only on the seed, the key name, the model's position and the element index:
  it is generated on the CPU from a generator seeded by SHA-256 of ``(seed, key, index)``
  (see :func:`dare_mask_seed`), then moved to the compute device, so the result is the same
  whatever order keys are merged in, whichever other keys the model has, however many
  worker threads run and on which device.

Kernels take float32 tensors in their shapes and return a new float32 tensor of that shape;
they compute exactly the formula in their docstring, in the order written there.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, TypeAlias

from mergelang.methods.common import as_float32
from mergelang.methods.params import Choices, Doc, Range, Weights
from mergelang.methods.registry import method

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DARE_RESCALE_RULES", "TIES_SIGN_RULES", "dare", "dare_mask_seed", "kept_count", "ties"]


def _check_models(name: str, models: tuple[Tensor, ...]) -> None:
    if not models:
        raise TypeError(f"{name} needs at least one model besides the base")


# ---------------------------------------------------------------------------------------------
# TIES


def kept_count(density: float, numel: int) -> int:
    """How many entries of a task vector of ``numel`` elements TIES keeps at ``density``:
    ``int(density * numel)`` (rounded down, as mergekit counts), at least 1 and at most
    ``numel`` (0 for an empty tensor)."""
    if not 0 < density <= 1:
        raise ValueError(f"density is in (0, 1], not {density!r}")
    if numel == 0:
        return 0
    return max(1, min(numel, int(density * numel)))


TIES_SIGN_RULES: tuple[str, ...] = ("sum", "count")
"""How ``ties`` elects each element's sign: ``sum`` (the sign of the sum of the trimmed
deltas: the TIES paper and mergekit) or ``count`` (the sign held by more of the trimmed
deltas: sd-meh and sd-mecha's default)."""


def _trim(delta: Tensor, density: float) -> Tensor:
    """``delta`` with every entry below its ``kept_count``-th largest magnitude set to 0.

    Ties at the threshold are all kept, so at least ``kept_count`` entries survive, and which
    ones does not depend on their order in memory or on the device.
    """
    import torch

    numel = delta.numel()
    count = kept_count(density, numel)
    if count >= numel:
        return delta
    magnitude = delta.abs()
    # the count-th largest magnitude is the (numel - count + 1)-th smallest
    threshold = torch.kthvalue(magnitude.reshape(-1), numel - count + 1).values
    return torch.where(magnitude >= threshold, delta, 0.0)


_DENSITY_DOC = (
    "the fraction of each task vector's entries kept, per key: the largest by magnitude "
    "(in (0, 1]; 1 keeps everything). Per block like alpha; a vector or map must set BASE"
)
TaskAlpha: TypeAlias = Annotated[
    Weights,
    Doc(
        "how much of the merged task vector to add to base, per block (1 adds it once; no "
        "BASE default: give a scalar, 26 values, or a BASE: or default: entry)"
    ),
]
"""The ``alpha`` of both sparse methods."""

FineTuned: TypeAlias = Annotated[
    "Tensor", Doc("one or more fine-tuned models whose differences from base are merged")
]
"""The ``*models`` of both sparse methods."""


@method("ties", elementwise=False, temporaries=11)
def ties(
    base: Annotated[
        Tensor,
        Doc(
            "the model every other one was fine-tuned from: task vectors are measured "
            "from it and the merged one is added back onto it"
        ),
    ],
    *models: FineTuned,
    density: Annotated[Weights, Doc(_DENSITY_DOC), Range(0.0, 1.0, open_minimum=True)],
    alpha: TaskAlpha,
    sign: Annotated[
        str,
        Doc(
            'how each element\'s sign is elected: "sum" (the sign of the sum of the '
            'trimmed deltas, as in the TIES paper and mergekit) or "count" (the sign more '
            "trimmed deltas have, as in sd-meh and sd-mecha)"
        ),
        Choices(*TIES_SIGN_RULES),
    ] = "sum",
) -> Tensor:
    """B + alpha * disjoint_mean_i(top_density(X_i - B))

    For each model, the task vector ``d_i = X_i - B`` is trimmed: per key, entries whose
    magnitude is below the ``k``-th largest magnitude are set to 0, where
    ``k = max(1, int(density * numel))`` (rounded down, as mergekit); every entry tied with
    the ``k``-th largest is kept. Per element, the elected sign is ``sign(sum_i t_i)`` of the
    trimmed deltas ``t_i`` (summed in model order), or with ``sign="count"``
    ``sign(sum_i sign(t_i))``, the sign more of them have; the merged delta is the mean of the
    ``t_i`` whose sign equals the elected sign (the sum of those, divided by their count), 0
    where none does (every ``t_i`` is 0, or the sum is exactly 0). The result is
    ``B + alpha * merged``. With one model and density 1 this is ``B + alpha * (X - B)``,
    bit for bit.
    """
    import torch

    _check_models("ties", models)
    if sign not in TIES_SIGN_RULES:
        raise ValueError(f'sign is "sum" or "count", not {sign!r}')
    base = as_float32(base)
    trimmed = [_trim(as_float32(x) - base, density) for x in models]
    votes = trimmed if sign == "sum" else [torch.sign(t) for t in trimmed]
    total = votes[0].clone()
    for delta in votes[1:]:
        total.add_(delta)
    elected = torch.sign(total)
    agreeing = torch.zeros_like(base)
    count = torch.zeros_like(base)
    for delta in trimmed:
        agrees = (torch.sign(delta) == elected) & (elected != 0)
        agreeing.add_(torch.where(agrees, delta, 0.0))
        count.add_(agrees)
    merged = agreeing / count.clamp(min=1.0)
    return base + alpha * merged


# ---------------------------------------------------------------------------------------------
# DARE

DARE_RESCALE_RULES: tuple[str, ...] = ("inverse", "l1")
"""How ``dare`` scales the kept entries: ``inverse`` (``1 / (1 - drop)``, the DARE paper and
the Chattiori merger) or ``l1`` (the task vector's L1 norm over its kept part's, mergekit's
``rescale_norm: l1``)."""


def dare_mask_seed(seed: int, key: str, index: int) -> int:
    """The generator seed of DARE's mask for model ``index`` (0 = the first model after the
    base) at ``key``: the first 8 bytes of SHA-256 over ``f"{seed}\\0{key}\\0{index}"``
    (UTF-8), read little-endian, top bit cleared (63 bits)."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _keep_mask(seed: int, key: str, index: int, like: Tensor, keep: float) -> Tensor:
    """Which entries of ``like`` DARE keeps: ``torch.rand(numel) < keep`` from a CPU
    generator seeded by :func:`dare_mask_seed`, in ``like``'s shape, on its device."""
    import torch

    generator = torch.Generator(device="cpu")
    generator.manual_seed(dare_mask_seed(seed, key, index))
    mask = torch.rand(like.numel(), generator=generator, dtype=torch.float32) < keep
    return mask.reshape(like.shape).to(like.device)


@method("dare", elementwise=False, wants_key=True, temporaries=3)
def dare(
    base: Annotated[
        Tensor,
        Doc(
            "the model every other one was fine-tuned from: task vectors are measured "
            "from it and their mean is added back onto it"
        ),
    ],
    *models: FineTuned,
    drop: Annotated[
        Weights,
        Doc(
            "the probability of dropping each entry of a task vector (in [0, 1); the "
            "kept ones are scaled by 1 / (1 - drop)). Per block like alpha; a vector or "
            "map must set BASE"
        ),
        Range(0.0, 1.0, open_maximum=True),
    ],
    alpha: TaskAlpha,
    seed: Annotated[
        int,
        Doc(
            "the seed of the random masks: the same seed gives the same result, "
            "whatever the order of keys, the workers or the device"
        ),
    ],
    key: str,
    rescale: Annotated[
        str,
        Doc(
            'how the kept entries are scaled: "inverse" (by 1 / (1 - drop), the DARE '
            'paper) or "l1" (by |d|_1 / |M d|_1, the L1 norm of the task vector over that '
            "of its kept part, as mergekit's rescale_norm l1)"
        ),
        Choices(*DARE_RESCALE_RULES),
    ] = "inverse",
) -> Tensor:
    """B + alpha * mean_i(M_i * (X_i - B) / (1 - drop))

    ``M_i`` keeps each element with probability ``1 - drop``: ``M_i = rand_i < 1 - drop``
    where ``rand_i`` is ``torch.rand(numel)`` (float32, element order of the flattened key)
    from a CPU generator seeded with :func:`dare_mask_seed` ``(seed, key, i)``, ``i`` the
    model's position after the base, from 0. In float32, in this order: each masked delta
    is ``where(M_i, X_i - B, 0) * s`` with ``s = 1 / (1 - drop)``; the masked deltas are
    summed in model order and multiplied by ``1 / n`` (n models: several are averaged, as
    mergekit's dare_linear does with equal weights); the result is ``B + alpha * mean``.
    The two factors are float32 numbers multiplied in, not divisions, because a division
    by a number rounds differently on CUDA (it multiplies by the reciprocal) and the
    result must not depend on the device. With drop 0 no mask is drawn and one model gives
    ``B + alpha * (X - B)``, bit for bit. With ``rescale="l1"`` the factor of each masked
    delta is ``|X_i - B|_1 / |M_i * (X_i - B)|_1`` (float32 sums, the ratio a float32
    number; 1 where the kept part is all zeros) instead of ``1 / (1 - drop)``.
    """
    import torch

    _check_models("dare", models)
    if not 0 <= drop < 1:
        raise ValueError(f"drop is in [0, 1), not {drop!r}")
    if rescale not in DARE_RESCALE_RULES:
        raise ValueError(f'rescale is "inverse" or "l1", not {rescale!r}')
    base = as_float32(base)
    keep = 1.0 - drop
    scale = 1.0 / keep
    total: Tensor | None = None
    for index, model in enumerate(models):
        delta = as_float32(model) - base
        if drop != 0:
            mask = _keep_mask(seed, key, index, delta, keep)
            kept = torch.where(mask, delta, 0.0)
            if rescale == "l1":
                kept_norm = float(kept.abs().sum())
                factor = float(delta.abs().sum()) / kept_norm if kept_norm != 0 else 1.0
                delta = kept.mul_(factor)
            else:
                delta = kept.mul_(scale)
        total = delta if total is None else total.add_(delta)
    assert total is not None
    merged = total.mul_(1.0 / len(models))
    return base + alpha * merged
