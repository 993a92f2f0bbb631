"""Shared pieces of the end-to-end tests of ``mergelang.run`` and ``mergelang.evaluate``.

The expected outputs are computed here independently of the planner and the executor: each
input file is read whole with ``safetensors``, each key's block comes from
:meth:`Architecture.block_of`, and the merge formula is applied to whole float32 tensors
(each product rounded to float32, then added, left to right), then cast to the output dtype.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mergelang.arch import SD_BLOCKS, SDXL_BLOCKS, get_architecture
from mergelang.arch.parts.ldm import SCHEDULE_KEYS
from mergelang.io.dtypes import code_for_torch, torch_dtype
from mergelang.io.writer import PARTIAL_MARKER, OutputEntry, SafetensorsWriter, is_partial_name
from mergelang.testing import make_checkpoint

SCALE = 1 / 80
"""Width scale of the synthetic fixtures: SD1 files of about 2 MB."""

UNET = "model.diffusion_model."
INPUT_CONV = UNET + "input_blocks.0.0.weight"
TIME_EMBED = UNET + "time_embed.0.weight"
POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
VAE_PREFIX = "first_stage_model."

Weights = Mapping[str, float]
"""Block name (and ``BASE``) -> weight."""
Formula = Callable[[Sequence[torch.Tensor], str], torch.Tensor]
"""Float32 operands and the key's block -> the float32 result."""

SAVE_CODES = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}

GRAD_A = (
    "0,0.0833333333,0.1666666667,0.25,0.3333333333,0.4166666667,0.5,0.5833333333,0.6666666667,"
    "0.75,0.8333333333,0.9166666667,1.0,0.9166666667,0.8333333333,0.75,0.6666666667,"
    "0.5833333333,0.5,0.4166666667,0.3333333333,0.25,0.1666666667,0.0833333333,0"
)
"""The MBW preset GRAD_A as published (25 values, IN00..OUT11)."""


FIXTURES: dict[str, tuple[str, int, dict[str, bool | str]]] = {
    "a": ("sd1", 1, {}),
    "b": ("sd1", 2, {}),
    "c": ("sd1", 3, {}),
    "a32": ("sd1", 4, {"dtype": "F32"}),
    "b32": ("sd1", 5, {"dtype": "F32"}),
    "e1": ("sd1", 6, {"ema": True, "schedule": True}),
    "e2": ("sd1", 7, {"ema": True, "schedule": True}),
    "inpaint": ("sd1", 8, {"variant": "inpainting"}),
    "sd2a": ("sd2", 9, {}),
    "sd2b": ("sd2", 10, {}),
    "xla": ("sdxl", 11, {"omit_optional": True}),
    "xlb": ("sdxl", 12, {}),
}
"""Synthetic checkpoints shared by the test modules: name -> (architecture, seed, options)."""


# ---- files ---------------------------------------------------------------------------------


def shared_models(factory: pytest.TempPathFactory, names: Iterable[str]) -> Path:
    """The folder of the shared fixtures (see :data:`FIXTURES`), with ``names`` made in it.

    The folder lives in the session's temporary root, so a file made for one test module is
    reused by the next one. Tests must not change these files (copy them first).
    """
    root = factory.getbasetemp() / "shared-models"
    root.mkdir(exist_ok=True)
    for name in names:
        path = root / f"{name}.safetensors"
        if not path.exists():
            arch, seed, extra = FIXTURES[name]
            make_checkpoint(path, arch, scale=SCALE, seed=seed, **extra)  # type: ignore[arg-type]
    return root


def declare(models: Path, *names: str) -> str:
    """``model NAME = "PATH"`` lines for files ``NAME.safetensors`` in ``models``."""
    return "".join(f'model {n} = "{models / (n + ".safetensors")}"\n' for n in names)


def write_recipe(folder: Path, text: str, name: str = "recipe.merge") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read with the ``safetensors`` package.

    Reads of an unchanged file (same size, mtime and inode) are served from memory; the
    returned dict is a fresh one, its tensors must not be changed in place.
    """
    info = path.stat()
    return dict(_load(str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino))


@functools.lru_cache(maxsize=24)
def _load(path: str, size: int, mtime_ns: int, inode: int) -> dict[str, torch.Tensor]:
    return load_file(path)


def load_ckpt(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a pickle checkpoint, read with torch's weights-only loader."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("state_dict", payload)
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder``, as sorted relative POSIX paths."""
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def partial_files(folder: Path) -> list[str]:
    return [name for name in files_under(folder) if is_partial_name(Path(name).name)]


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> Path:
    """Write ``tensors`` as a safetensors file (``safetensors.torch.save_file`` needs numpy,
    which the test environment does not have)."""
    entries = []
    for key, tensor in tensors.items():
        code = code_for_torch(tensor.dtype)
        assert code is not None, tensor.dtype
        entries.append(OutputEntry(key, code, tuple(tensor.shape)))
    with SafetensorsWriter(path, entries, overwrite=True) as writer:
        for key, tensor in tensors.items():
            writer.write(key, tensor.contiguous())
    return path


def write_vae(path: Path, model: Path, *, scale: float = 1.0) -> Path:
    """A VAE-only file (keys without ``first_stage_model.``) from ``model``'s VAE keys,
    every value multiplied by ``scale``, in float32."""
    tensors = {
        key[len(VAE_PREFIX) :]: tensor.to(torch.float32) * scale
        for key, tensor in load(model).items()
        if key.startswith(VAE_PREFIX)
    }
    return save_tensors(path, tensors)


# ---- weights -------------------------------------------------------------------------------


def blocks_of(arch_name: str) -> tuple[str, ...]:
    return SDXL_BLOCKS if arch_name == "sdxl" else SD_BLOCKS


def vector(arch_name: str, values: Sequence[float], base: float) -> dict[str, float]:
    """A block vector (IN00.., M00, OUT..) and a BASE weight as a block -> weight map."""
    blocks = blocks_of(arch_name)
    assert len(values) == len(blocks)
    return {"BASE": base, **dict(zip(blocks, values, strict=True))}


def uniform(arch_name: str, value: float) -> dict[str, float]:
    return {"BASE": value, **dict.fromkeys(blocks_of(arch_name), value)}


def recipe_list(values: Sequence[float]) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


# ---- formulas ------------------------------------------------------------------------------


def weighted_sum(alpha: Weights) -> Formula:
    """``(1 - alpha) * A + alpha * B``."""

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        w = alpha[block]
        return (1 - w) * xs[0] + w * xs[1]

    return formula


def add_difference(alpha: Weights) -> Formula:
    """``A + alpha * (B - C)``."""

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        return xs[0] + alpha[block] * (xs[1] - xs[2])

    return formula


def linear(weights: Sequence[Weights]) -> Formula:
    """``w_0 * X_0 + w_1 * X_1 + ...``: each product in float32, added left to right."""

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        result = xs[0] * weights[0][block]
        for x, w in zip(xs[1:], weights[1:], strict=True):
            result = result + x * w[block]
        return result

    return formula


# ---- expected outputs ----------------------------------------------------------------------


def merged_float32(
    arch_name: str,
    models: Sequence[Mapping[str, torch.Tensor]],
    formula: Formula,
    *,
    convention: str = "mbw",
) -> dict[str, torch.Tensor]:
    """The merge of ``models`` before the output cast: computed keys in float32, the keys
    that are never merged (or not floating point) as model A's tensor, unchanged, and keys
    only some models have as the first such model's tensor.

    The input convolution of an inpainting model merged with a normal one takes its first
    4 input channels from the formula and the rest from the wider model.
    """
    arch = get_architecture(arch_name)
    union: dict[str, None] = {}
    for m in models:
        union.update(dict.fromkeys(m))
    result: dict[str, torch.Tensor] = {}
    for key in union:
        values = [m[key] for m in models if key in m]
        block = arch.block_of(key, convention)
        if len(values) < len(models) or block is None:
            result[key] = values[0]
            continue
        if not all(v.is_floating_point() for v in values):
            result[key] = values[0]
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) == 1:
            result[key] = formula([v.to(torch.float32) for v in values], block)
            continue
        assert key == INPUT_CONV, key
        wide = max(values, key=lambda v: v.shape[1])
        out = wide.to(torch.float32).clone()
        out[:, :4] = formula([v.to(torch.float32)[:, :4].contiguous() for v in values], block)
        result[key] = out
    return result


def natural_dtypes(models: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.dtype]:
    """Each key's dtype in the first model that has it (model A's for shared keys)."""
    found: dict[str, torch.dtype] = {}
    for m in models:
        for key, tensor in m.items():
            found.setdefault(key, tensor.dtype)
    return found


def saved(
    merged: Mapping[str, torch.Tensor],
    dtypes: Mapping[str, torch.dtype],
    save_as: str | None,
    *,
    ema: str = "drop",
    schedule: str = "keep",
) -> dict[str, torch.Tensor]:
    """``merged`` as a ``save ... [as save_as]`` writes it: floating-point keys cast to
    ``save_as`` (else to ``dtypes[key]``, model A's), other keys unchanged; EMA keys dropped
    unless ``ema="keep"``, schedule buffers dropped when ``schedule="drop"``."""
    target = None if save_as is None else torch_dtype(SAVE_CODES[save_as])
    out: dict[str, torch.Tensor] = {}
    for key, tensor in merged.items():
        if ema == "drop" and key.startswith("model_ema."):
            continue
        if schedule == "drop" and key in SCHEDULE_KEYS:
            continue
        if not tensor.is_floating_point():
            out[key] = tensor
            continue
        out[key] = tensor.to(target if target is not None else dtypes[key])
    return out


def expected_output(
    arch_name: str,
    models: Sequence[Mapping[str, torch.Tensor]],
    formula: Formula,
    save_as: str | None,
    **options: str,
) -> dict[str, torch.Tensor]:
    """One merge step saved: see :func:`merged_float32` and :func:`saved`."""
    merged = merged_float32(arch_name, models, formula)
    return saved(merged, natural_dtypes(models), save_as, **options)


def assert_same_tensors(
    actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """Same keys, and every key with the same dtype, shape and values (bit for bit)."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong_dtype = [k for k in expected if actual[k].dtype != expected[k].dtype]
    assert not wrong_dtype, [(k, actual[k].dtype, expected[k].dtype) for k in wrong_dtype[:5]]
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not different, f"{len(different)} keys differ, e.g. {different[:5]}"


# ---- the command line in a subprocess ------------------------------------------------------

PARTIAL_NAME = re.compile(r"\.(?P<target>.+)\.mergelang-partial-(?P<pid>[0-9]+)-[0-9a-f]{8}")
"""The documented name of a temporary output file, written out independently."""


def cli_environment(cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``mergelang`` subprocess: its own cache folder, no colours, no
    model folders from the caller, no bytecode written (a file-size limit would trip it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "MERGELANG_MODELS")}
    env.update(
        NO_COLOR="1",
        MERGELANG_CACHE=str(cache),
        COLUMNS="200",
        PYTHONDONTWRITEBYTECODE="1",
        **extra,
    )
    return env


def start_cli(
    folder: Path, *argv: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m mergelang ARGV`` in ``folder``, with the cache in ``folder/cache``;
    standard output and error are captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "mergelang", *argv],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(folder / "cache"),
        preexec_fn=preexec_fn,
    )


def finish_cli(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    """Wait for a process from :func:`start_cli`: (exit status, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def run_cli(folder: Path, *argv: str) -> tuple[int, str, str]:
    """Run ``python -m mergelang ARGV`` in ``folder`` to the end (see :func:`start_cli`)."""
    return finish_cli(start_cli(folder, *argv))


def laid_out_partial(folder: Path) -> Path | None:
    """A temporary output file in ``folder`` that has its size already (its writer has
    written the header, so the run is about to merge or merging), or ``None``."""
    if not folder.is_dir():
        return None
    for path in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if PARTIAL_MARKER in path.name and path.stat().st_size > 0:
                return path
    return None


def signal_when_laid_out(
    runs: Sequence[tuple[subprocess.Popen[str], Path, int]], timeout: float = 90
) -> None:
    """For each (process, folder, signal), send the signal as soon as the process has a
    laid-out temporary output file in the folder; the processes are watched together, so
    runs started at once are each caught in the middle of their merge."""
    waiting = list(runs)
    deadline = time.monotonic() + timeout
    while waiting:
        for run in list(waiting):
            proc, folder, signum = run
            if laid_out_partial(folder) is not None:
                proc.send_signal(signum)
                waiting.remove(run)
            elif proc.poll() is not None:
                raise AssertionError(
                    f"a run ended ({proc.returncode}) before its output file was opened"
                )
        if time.monotonic() > deadline:
            raise AssertionError("no partial output file appeared")
        time.sleep(0.005)
