"""Synthetic checkpoints with the real key layout, for tests, benchmarks and demos.

:func:`make_checkpoint` writes a ``.safetensors`` file holding every key of an architecture
(see :func:`mergelang.arch.layout.checkpoint_layout`) with shrunken widths by default. Each
tensor depends only on ``(seed, key)``: its generator is seeded from a SHA-256 of the two, so
files are byte-identical across runs and a tensor's values do not depend on which other keys
are written or in what order. Floats are drawn from N(0, 0.02); ``position_ids`` is int64
``0..76``; the DDPM schedule buffers hold the real SD linear schedule; the EMA counters hold
fixed values. The file is streamed key by key, so a full-size (``scale=1.0``) SD1 file of
2.13 GB in fp16 is generated without holding it in memory.

Command line::

    python -m mergelang.testing demo FOLDER
    python -m mergelang.testing make ARCH PATH [--scale S] [--seed N] [--dtype F16] ...
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from mergelang.arch.layout import (
    EMA_DECAY_KEY,
    EMA_NUM_UPDATES_KEY,
    SCHEDULE_STEPS,
    checkpoint_layout,
    key_dtype,
    parameter_count,
)
from mergelang.arch.parts.ldm import SCHEDULE_KEYS
from mergelang.errors import MergelangError
from mergelang.io.dtypes import SAVE_DTYPES, torch_dtype
from mergelang.io.metadata import MODELSPEC_VERSION, modelspec_architecture
from mergelang.io.writer import OutputEntry, SafetensorsWriter

DEFAULT_SCALE = 1 / 40
"""Default width scale: SD1's U-Net gets 8 model channels, files of a few megabytes."""
STD = 0.02
"""Standard deviation of the synthetic float weights."""
CKPT_PARAMETER_LIMIT = 50_000_000
"""``.ckpt`` fixtures are built in memory, so they are limited to small scales."""
FLOAT_CODES = ("F16", "BF16", "F32", "F64")

DEMO_MODELS: dict[str, tuple[str, int, str]] = {
    "sd15-base": ("sd1", 1, "normal"),
    "sd15-anime": ("sd1", 2, "normal"),
    "sd15-photo": ("sd1", 3, "normal"),
    "sd15-inpainting": ("sd1", 4, "inpainting"),
    "sdxl-base": ("sdxl", 5, "normal"),
    "sdxl-art": ("sdxl", 6, "normal"),
    "flux-base": ("flux-dev", 7, "normal"),
    "flux-art": ("flux-dev", 8, "normal"),
    "sd35-base": ("sd35-medium", 9, "normal"),
    "sd35-art": ("sd35-medium", 10, "normal"),
}
"""Demo checkpoints: name -> (architecture, seed, variant)."""

DEMO_SCALE_FACTORS: dict[str, float] = {"flux-dev": 0.25, "sd35-medium": 0.25}
"""The transformer architectures' demo files are written at a quarter of the demo scale:
their widths shrink further than the U-Nets' while every key stays, so that a Flux demo file
is under 2 MB."""


def _float_code(dtype: str) -> str:
    code = SAVE_DTYPES.get(dtype, dtype)
    if code not in FLOAT_CODES:
        names = tuple(name for name, c in SAVE_DTYPES.items() if c in FLOAT_CODES)
        valid = ", ".join(FLOAT_CODES + names)
        raise ValueError(f"unsupported float dtype {dtype!r} (valid: {valid})")
    return code


def key_seed(seed: int, key: str) -> int:
    """The generator seed of ``key``: 63 bits of SHA-256 over the seed and the key name."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def ddpm_schedule(
    steps: int = SCHEDULE_STEPS, linear_start: float = 0.00085, linear_end: float = 0.012
) -> dict[str, torch.Tensor]:
    """The 12 DDPM buffers of Stable Diffusion's "linear" (sqrt-spaced) schedule, float64."""
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, steps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    variance = betas * (1.0 - prev) / (1.0 - cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1.0).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cumprod),
    }
    return values


def synthetic_tensor(
    key: str, shape: Sequence[int], *, seed: int = 0, dtype: str = "F16"
) -> torch.Tensor:
    """The tensor :func:`make_checkpoint` writes for ``key``: a function of (seed, key,
    shape, dtype) only."""
    code = key_dtype(key, _float_code(dtype))
    target = torch_dtype(code)
    size = tuple(int(d) for d in shape)
    if key.endswith("position_ids"):
        return torch.arange(size[-1] if size else 1, dtype=torch.int64).reshape(size).to(target)
    if key == EMA_NUM_UPDATES_KEY:
        return torch.full(size, 1000 + key_seed(seed, key) % 1000, dtype=target)
    if key == EMA_DECAY_KEY:
        return torch.full(size, 0.9999, dtype=target)
    if key in SCHEDULE_KEYS and size == (SCHEDULE_STEPS,):
        return ddpm_schedule()[key].to(target)
    generator = torch.Generator().manual_seed(key_seed(seed, key))
    values = torch.randn(size, generator=generator, dtype=torch.float32)
    return values.mul_(STD).to(target)


def checkpoint_tensors(
    arch_name: str,
    *,
    scale: float = DEFAULT_SCALE,
    seed: int = 0,
    dtype: str = "F16",
    variant: str = "normal",
    ema: bool = False,
    schedule: bool = False,
    omit_optional: bool = False,
    bare: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every ``(key, tensor)`` of a synthetic checkpoint, one at a time, in layout order."""
    layout = checkpoint_layout(
        arch_name,
        scale=scale,
        variant=variant,
        ema=ema,
        schedule=schedule,
        omit_optional=omit_optional,
        bare=bare,
    )
    for key, shape in layout.items():
        yield key, synthetic_tensor(key, shape, seed=seed, dtype=dtype)


def make_checkpoint(
    path: str | os.PathLike[str],
    arch_name: str,
    *,
    scale: float = DEFAULT_SCALE,
    seed: int = 0,
    dtype: str = "F16",
    variant: str = "normal",
    ema: bool = False,
    schedule: bool = False,
    omit_optional: bool = False,
    bare: bool = False,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a synthetic ``.safetensors`` checkpoint with the real layout; returns its path.

    ``dtype`` is the float type (``F16``, ``BF16``, ``F32``, ``F64`` or ``fp16``/``bf16``/
    ``fp32``). ``bare`` writes a diffusion-only file: the denoiser alone with its keys
    unprefixed (Black Forest Labs' Flux.1 release form). The header is written first and the
    tensors streamed one by one.
    """
    target = Path(path)
    code = _float_code(dtype)
    layout = checkpoint_layout(
        arch_name,
        scale=scale,
        variant=variant,
        ema=ema,
        schedule=schedule,
        omit_optional=omit_optional,
        bare=bare,
    )
    entries = [OutputEntry(key, key_dtype(key, code), shape) for key, shape in layout.items()]
    with SafetensorsWriter(target, entries, metadata=metadata, overwrite=overwrite) as writer:
        for key, shape in layout.items():
            writer.write(key, synthetic_tensor(key, shape, seed=seed, dtype=code))
    return target


def make_ckpt(
    path: str | os.PathLike[str],
    arch_name: str,
    *,
    scale: float = DEFAULT_SCALE,
    seed: int = 0,
    dtype: str = "F16",
    variant: str = "normal",
    ema: bool = False,
    schedule: bool = False,
    omit_optional: bool = False,
    wrap: bool = True,
    extra: Mapping[str, int | float | str] | None = None,
) -> Path:
    """Write a synthetic pickle ``.ckpt`` (``{"state_dict": ...}``, or the bare dict when
    ``wrap`` is false, plus ``extra`` top-level entries such as ``global_step``).

    The same tensors as :func:`make_checkpoint`. Built in memory, so limited to small scales.
    """
    target = Path(path)
    layout = checkpoint_layout(
        arch_name,
        scale=scale,
        variant=variant,
        ema=ema,
        schedule=schedule,
        omit_optional=omit_optional,
    )
    if parameter_count(layout) > CKPT_PARAMETER_LIMIT:
        raise ValueError(
            f".ckpt fixtures are built in memory: scale {scale} gives "
            f"{parameter_count(layout):,} parameters (limit {CKPT_PARAMETER_LIMIT:,})"
        )
    state = {
        key: synthetic_tensor(key, shape, seed=seed, dtype=dtype) for key, shape in layout.items()
    }
    payload: dict[str, object] = {"state_dict": state} if wrap else dict(state)
    if extra:
        payload.update(extra)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        torch.save(payload, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def demo_models(folder: str | os.PathLike[str], *, scale: float = DEFAULT_SCALE) -> dict[str, Path]:
    """Write the demo checkpoints of :data:`DEMO_MODELS` into ``folder``; name -> path."""
    root = Path(folder)
    made: dict[str, Path] = {}
    for name, (arch_name, seed, variant) in DEMO_MODELS.items():
        metadata = {
            "modelspec.sai_model_spec": MODELSPEC_VERSION,
            "modelspec.architecture": modelspec_architecture(arch_name, variant),
            "modelspec.title": name,
        }
        made[name] = make_checkpoint(
            root / f"{name}.safetensors",
            arch_name,
            scale=scale * DEMO_SCALE_FACTORS.get(arch_name, 1.0),
            seed=seed,
            variant=variant,
            metadata=metadata,
        )
    return made


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mergelang.testing",
        description="Write synthetic Stable Diffusion checkpoints with the real key layout.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the small demo checkpoints into FOLDER")
    demo.add_argument("folder", metavar="FOLDER")
    demo.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="width scale")
    make = sub.add_parser("make", help="write one synthetic checkpoint")
    make.add_argument(
        "arch",
        metavar="ARCH",
        help="sd1, sd2, sdxl, flux-dev, flux-schnell, sd3-medium, sd35-medium or sd35-large",
    )
    make.add_argument("path", metavar="PATH")
    make.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="width scale (1 = full)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--dtype", default="F16", help="F16, BF16, F32 (or fp16, bf16, fp32)")
    make.add_argument(
        "--variant", default="normal", help="normal, inpainting, pix2pix (SD); fill, depth (Flux)"
    )
    make.add_argument("--ema", action="store_true", help="add the model_ema.* copy")
    make.add_argument("--schedule", action="store_true", help="add the DDPM schedule buffers")
    make.add_argument(
        "--omit-optional", action="store_true", help="leave out optional text-encoder keys"
    )
    make.add_argument(
        "--bare", action="store_true", help="the denoiser alone, its keys without a prefix"
    )
    make.add_argument("--ckpt", action="store_true", help="write a pickle .ckpt instead")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            for name, path in demo_models(args.folder, scale=args.scale).items():
                arch_name = DEMO_MODELS[name][0]
                print(f"{name:<16} {arch_name:<11} {_human(path.stat().st_size):>9}  {path}")
            return 0
        if args.ckpt and args.bare:
            raise ValueError("--bare writes .safetensors files only")
        write = make_ckpt if args.ckpt else functools.partial(make_checkpoint, bare=args.bare)
        path = write(
            args.path,
            args.arch,
            scale=args.scale,
            seed=args.seed,
            dtype=args.dtype,
            variant=args.variant,
            ema=args.ema,
            schedule=args.schedule,
            omit_optional=args.omit_optional,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MergelangError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    print(f"{path}  {args.arch}  {_human(path.stat().st_size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
